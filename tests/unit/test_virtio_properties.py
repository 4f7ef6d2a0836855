"""Property tests: whatever a driver or device writes into a ring, the other
half either works or raises QueueBroken, and never touches memory it must not."""
import struct

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nicdev.virtio.device_queue import DeviceQueue, QueueBroken
from nicdev.virtio.driver_queue import DriverQueue, QueueFull
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.ring import DESC_SIZE, SplitRingLayout, avail_ring_bytes

from support.hostile_rings import REGIONS, RING_BASE, TABLE_GPA, RecordingMemory, build, hostile_rings

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reason_kind(reason):
    """'chain 3: buffer 0x10+4 is not in guest memory: ...' -> 'buffer is not in guest memory'."""
    if reason.startswith("chain "):
        reason = reason.split(": ", 1)[1]
    words = reason.split(": ")[0].split()
    return " ".join(w for w in words if not any(c.isdigit() for c in w))


def flat_bytes(mem, gpa, length):
    """Bytes of [gpa, gpa+length), region by region with the test's own arithmetic."""
    out = bytearray()
    while length:
        for r in mem.regions:
            if r.gpa <= gpa < r.end:
                n = min(length, r.end - gpa)
                out += bytes(r.view[gpa - r.gpa : gpa - r.gpa + n])
                gpa += n
                length -= n
                break
        else:
            raise AssertionError("segment outside memory")
    return bytes(out)


# -- the device half against hostile rings --------------------------------------
@PROPERTY_SETTINGS
@given(hostile_rings())
def test_pop_returns_a_safe_chain_or_raises_queue_broken(ring):
    mem, lay, queue = build(ring)
    size = ring["size"]
    for _ in range(size + 1):
        mem.log.clear()
        try:
            chain = queue.pop(mem)
        except QueueBroken as e:
            assert queue.broken == e.reason and e.reason
            event("broken: " + reason_kind(e.reason))
            break
        accesses_of_pop = list(mem.log)
        if chain is None:
            event("ring empty")
            break
        event("chain popped" + (" (indirect)" if chain.indirect else ""))
        assert 0 <= chain.head < size
        # every segment non-empty and wholly inside memory
        for gpa, length in chain.readable + chain.writable:
            assert length > 0
            assert mem.inside(gpa, length)
        assert chain.readable_len == sum(n for _, n in chain.readable)
        assert chain.writable_len == sum(n for _, n in chain.writable)
        assert chain.readable_len + chain.writable_len < 1 << 32
        # pop reads only the rings and indirect tables, and writes nothing
        for op, gpa, length, ok in accesses_of_pop:
            assert op in ("view", "read", "check"), op
            if op == "view":
                assert (gpa, length) in {(lay.desc, 16 * size), (lay.avail, avail_ring_bytes(size, ring["event_idx"]))}
            if op == "read":
                assert length % DESC_SIZE == 0 and 0 < length <= DESC_SIZE * size
        # reading gives exactly the segments' bytes
        assert chain.read(mem) == b"".join(flat_bytes(mem, g, n) for g, n in chain.readable)
        # writing touches only the writable segments
        snap = mem.snapshot()
        written = chain.write(mem, ring["payload"])
        assert written == min(len(ring["payload"]), chain.writable_len)
        for region, old in zip(mem.regions, snap):
            expected = bytearray(old)
            now = bytes(region.view)
            for gpa, length in chain.writable:
                lo, hi = max(gpa, region.gpa), min(gpa + length, region.end)
                if lo < hi:
                    expected[lo - region.gpa : hi - region.gpa] = now[lo - region.gpa : hi - region.gpa]
            assert bytes(expected) == now, "chain.write changed bytes outside its writable segments"


@PROPERTY_SETTINGS
@given(hostile_rings())
def test_queue_state_calls_only_raise_queue_broken(ring):
    mem, lay, queue = build(ring)
    before = mem.snapshot()
    calls = [
        lambda: queue.avail_count(mem),
        lambda: queue.pop(mem),
        lambda: queue.enable_notifications(mem),
        lambda: queue.needs_notification(mem),
        lambda: queue.disable_notifications(mem),
        lambda: queue.push(mem, ring["heads"][0] % ring["size"], 0),
    ]
    for call in calls:
        try:
            call()
        except QueueBroken:
            assert queue.broken
    # the device wrote nothing but the used ring (through views or otherwise)
    region0 = bytes(mem.regions[0].view)
    assert region0[: lay.used] == before[0][: lay.used]
    assert region0[lay.end :] == before[0][lay.end :]
    assert mem.snapshot()[1:] == before[1:]


@PROPERTY_SETTINGS
@given(
    size=st.sampled_from([1, 2, 4, 8]),
    raw_desc=st.binary(min_size=16 * 8, max_size=16 * 8),
    raw_avail=st.binary(min_size=4 + 2 * 8 + 2, max_size=4 + 2 * 8 + 2),
    raw_table=st.binary(min_size=16 * 9, max_size=16 * 9),
)
def test_pop_over_pure_random_bytes(size, raw_desc, raw_avail, raw_table):
    mem = RecordingMemory(REGIONS["gap"])
    lay = SplitRingLayout(size, RING_BASE)
    mem.write(lay.desc, raw_desc[: 16 * size])
    mem.write(lay.avail, raw_avail[: 6 + 2 * size])
    mem.write(TABLE_GPA, raw_table)
    queue = DeviceQueue.from_layout(lay, event_idx=True)
    for _ in range(size + 1):
        try:
            chain = queue.pop(mem)
        except QueueBroken:
            assert queue.broken
            break
        if chain is None:
            break
        assert all(mem.inside(g, n) for g, n in chain.readable + chain.writable)


# -- the driver half against a hostile device ----------------------------------
@PROPERTY_SETTINGS
@given(
    used_idx=st.integers(0, 0xFFFF),
    elems=st.lists(st.tuples(st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFFFF_FFFF)), min_size=8, max_size=8),
    offered=st.integers(0, 8),
    start=st.integers(0, 0xFFFF),
)
def test_reap_of_a_random_used_ring_only_raises_queue_broken(used_idx, elems, offered, start):
    mem = RecordingMemory(REGIONS["flat"])
    lay = SplitRingLayout(8, RING_BASE)
    drv = DriverQueue.from_layout(lay, event_idx=True)
    drv.init(mem, start_idx=start)
    for i in range(offered):
        drv.add(mem, [], [(0x8000 + 0x100 * i, 0x100)], token=i)
    drv.publish(mem)
    mem.write(lay.used + 4, b"".join(struct.pack("<II", *e) for e in elems))
    mem.write_u16(lay.used + 2, used_idx)
    try:
        done = drv.reap(mem)
    except QueueBroken:
        assert drv.broken
        return
    tokens = [t for t, _ in done]
    assert len(set(tokens)) == len(tokens) <= offered
    assert all(0 <= n <= 0x100 for _, n in done)
    assert drv.num_free == 8 - offered + len(done)


# -- both halves together ----------------------------------------------------------
@st.composite
def buffers(draw):
    # at most 4 segments, so every buffer fits the smallest queue
    n_out = draw(st.integers(0, 2))
    n_in = draw(st.integers(0 if n_out else 1, 2))
    return (
        [draw(st.integers(1, 64)) for _ in range(n_out)],
        [draw(st.integers(1, 64)) for _ in range(n_in)],
        draw(st.booleans()),  # indirect
    )


@PROPERTY_SETTINGS
@given(
    size=st.sampled_from([4, 8, 16]),
    start=st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)),
    event_idx=st.booleans(),
    plan=st.lists(buffers(), min_size=1, max_size=40),
    burst=st.integers(1, 8),
)
def test_random_traffic_round_trips(size, start, event_idx, plan, burst):
    mem = GuestMemory([MemoryRegion(0, 0x40000, bytearray(0x40000))])
    lay = SplitRingLayout(size, RING_BASE)
    drv = DriverQueue.from_layout(lay, event_idx=event_idx)
    drv.init(mem, start_idx=start)
    dev = DeviceQueue.from_layout(lay, event_idx=event_idx, next_avail=start)
    slot_gpa = lambda n: 0x10000 + 0x800 * n  # noqa: E731 - each buffer's own area
    expected = {}
    pending = list(enumerate(plan))
    done = 0
    while done < len(plan):
        for _ in range(burst):
            if not pending:
                break
            n, (outs, ins, indirect) = pending[0]
            base = slot_gpa(n)
            out_segs = [(base + 0x80 * i, length) for i, length in enumerate(outs)]
            in_segs = [(base + 0x400 + 0x80 * i, length) for i, length in enumerate(ins)]
            data = bytes((n + i) & 0xFF for i in range(sum(outs)))
            pos = 0
            for gpa, length in out_segs:
                mem.write(gpa, data[pos : pos + length])
                pos += length
            try:
                if indirect:
                    drv.add_indirect(mem, base + 0x700, out_segs, in_segs, token=n)
                else:
                    drv.add(mem, out_segs, in_segs, token=n)
            except QueueFull:
                break
            pending.pop(0)
            expected[n] = (data, in_segs, sum(ins))
        drv.publish(mem)
        while (chain := dev.pop(mem)) is not None:
            data = chain.read(mem)
            reply = data[::-1] + b"!" * 64
            dev.push(mem, chain.head, chain.write(mem, reply))
        for token, written in drv.reap(mem):
            data, in_segs, capacity = expected.pop(token)
            assert written == min(capacity, len(data) + 64)
            got = b"".join(mem.read(g, n) for g, n in in_segs)[:written]
            assert got == (data[::-1] + b"!" * 64)[:written]
            done += 1
    assert drv.num_free == size
    assert drv.avail_idx == dev.next_avail == drv.last_used == dev.used_idx == (start + len(plan)) & 0xFFFF
