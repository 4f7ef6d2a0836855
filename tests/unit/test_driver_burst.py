"""The driver's burst rings: the C kernels (driver_burst_c) held to the Python
reference (driver_burst) by feeding both the same operations and the same
device, hostile ones included, and requiring the same results: return
values, exceptions and their messages, counters, slot and queue state, and
every byte of the shared memory (descriptors, avail entries, idx and event
fields, frames in the pool) after every step, and the same trace records
(`DriverEvents`) when the rings are traced."""
import collections
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nicdev.virtio import kernels
from nicdev.virtio.driver_burst import TX_BAD_CSUM, TX_PLAIN, TX_SW_CSUM, RxRing, TxFrames, TxRing
from nicdev.virtio.driver_events import DriverEvents
from nicdev.virtio.driver_rings import rx_ring, tx_ring
from nicdev.virtio.driver_queue import DriverQueue, QueueFull
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.ring import QueueBroken, SplitRingLayout

pytestmark = pytest.mark.skipif(not kernels.use_c(), reason="MNET_DATAPATH=python: the C kernels are not loaded")

MEM_SIZE = 0x20000
RING_BASE = 0x1000
POOL = 0x8000
SMALL_SLOT, BIG_SLOT = 128, 512
MAX_FRAME = 100         # a small slot holds 12 + MAX_FRAME
# No trace, a trace that overflows now and then (records lost alike), a roomy one.
TRACES = st.sampled_from([None, 3, 4096])
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def new_memory():
    return GuestMemory([MemoryRegion(0, MEM_SIZE, bytearray(MEM_SIZE))])


def new_queue(mem, size, event_idx, start_idx):
    queue = DriverQueue.from_layout(SplitRingLayout(size, RING_BASE), event_idx=event_idx)
    queue.init(mem, start_idx=start_idx)
    return queue


def tx_slots(size, big):
    small = size - big
    offsets = [POOL + i * SMALL_SLOT for i in range(small)]
    offsets += [POOL + small * SMALL_SLOT + i * BIG_SLOT for i in range(big)]
    return offsets, [SMALL_SLOT] * small + [BIG_SLOT] * big, small


class Device:
    """The other side, acting on one memory; its moves are replayed on the twin."""

    def __init__(self, size, start_idx, event_idx):
        self.layout = SplitRingLayout(size, RING_BASE)
        self.size = size
        self.event_idx = event_idx
        self.last_avail = self.used_idx = start_idx

    def new_heads(self, mem):
        avail = mem.view(self.layout.avail, 4 + 2 * self.size).cast("H")
        heads = []
        while self.last_avail != avail[1]:
            heads.append(avail[2 + self.last_avail % self.size])
            self.last_avail = (self.last_avail + 1) & 0xFFFF
        avail.release()
        return heads

    def push_used(self, writes, head, length):
        """Record the stores of one used entry and the idx after it."""
        slot = self.layout.used + 4 + 8 * (self.used_idx % self.size)
        writes.append((slot, struct.pack("<II", head & 0xFFFFFFFF, length & 0xFFFFFFFF)))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        writes.append((self.layout.used + 2, struct.pack("<H", self.used_idx)))

    def descriptor(self, mem, head):
        return struct.unpack_from("<QIHH", mem.read(self.layout.desc + 16 * head, 16))


def apply(writes, *mems):
    for mem in mems:
        for gpa, data in writes:
            mem.write(gpa, data)


def outcome(fn):
    try:
        return ("ok", fn())
    except QueueBroken as e:
        return ("QueueBroken", str(e))
    except (QueueFull, ValueError) as e:
        return (type(e).__name__,)      # the caller's mistake: the kind, not the wording


def assert_same(py, c, what):
    assert py.mem.read(0, MEM_SIZE) == c.mem.read(0, MEM_SIZE), f"memory differs after {what}"
    assert py.counters == c.counters, what
    for attr in ("last_used", "len_clamped"):
        assert getattr(py.ring, attr) == getattr(c.ring, attr), (attr, what)
    if py.events is not None:
        assert py.events.lost == c.events.lost, what
        assert py.events.records() == c.events.records(), what


class Twin:
    def __init__(self, make, size, event_idx, start_idx, *args, trace=None):
        self.mem = new_memory()
        self.queue = new_queue(self.mem, size, event_idx, start_idx)
        self.events = None if trace is None else DriverEvents(trace)
        self.ring = make(self.queue, self.mem, *args, events=self.events)
        self.counters = collections.Counter()


# -- strategies ----------------------------------------------------------------------------
frames = st.lists(st.binary(min_size=0, max_size=MAX_FRAME + 20), max_size=12)
used_ids = st.one_of(st.integers(0, 17), st.integers(0, 0xFFFFFFFF))
used_lens = st.one_of(st.integers(0, 200), st.sampled_from([0xFFFF_FFFF, 2049, 4096]))
device_moves = st.one_of(
    st.tuples(st.just("complete"), st.integers(0, 8), used_lens),       # use the next buffers
    st.tuples(st.just("used_raw"), used_ids, used_lens),                 # any used entry at all
    st.tuples(st.just("used_jump"), st.integers(1, 0xFFFF)),             # used idx runs ahead
    st.tuples(st.just("event"), st.integers(0, 0xFFFF)),                 # avail_event
    st.tuples(st.just("flags"), st.integers(0, 0xFFFF)),                 # used flags (NO_NOTIFY)
)


@st.composite
def tx_bursts(draw):
    burst = draw(frames)
    hdrs = kinds = None
    if draw(st.booleans()):
        hdrs = draw(st.binary(min_size=12 * len(burst), max_size=12 * len(burst)))
    if draw(st.booleans()):
        kinds = bytes(draw(st.lists(st.sampled_from([TX_PLAIN, TX_BAD_CSUM, TX_SW_CSUM]),
                                    min_size=len(burst), max_size=len(burst))))
    start = draw(st.integers(0, len(burst)))
    # A list, or a TxFrames joined once (on either side: the results must not care).
    return ("put", burst, hdrs, kinds, start, draw(st.booleans()))


tx_moves = st.one_of(
    tx_bursts(),
    st.tuples(st.just("put_one"), st.booleans(), st.binary(max_size=BIG_SLOT), st.one_of(st.none(), st.binary(min_size=12, max_size=12))),
    st.tuples(st.just("reap")), st.tuples(st.just("lend")), st.tuples(st.just("publish")),
    st.tuples(st.just("kick")), st.tuples(st.just("flush")), st.tuples(st.just("disable")),
    st.tuples(st.just("complete"), st.integers(1, 8), st.integers(0, 200)), device_moves,
)


def device_writes(device, move, mem, rx_data=None):
    writes = []
    kind = move[0]
    if kind == "complete":
        for i, head in enumerate(device.new_heads(mem)[:move[1]]):
            length = move[2]
            if rx_data is not None:
                addr, cap, _, _ = device.descriptor(mem, head)
                data = rx_data(i)[:cap]
                writes.append((addr, data))
                length = len(data) if move[2] < 1000 else move[2]
            device.push_used(writes, head, length)
    elif kind == "used_raw":
        device.push_used(writes, move[1], move[2])
    elif kind == "used_jump":
        device.used_idx = (device.used_idx + move[1]) & 0xFFFF
        writes.append((device.layout.used + 2, struct.pack("<H", device.used_idx)))
    elif kind == "event" and device.event_idx:
        writes.append((device.layout.used + 4 + 8 * device.size, struct.pack("<H", move[1])))
    elif kind == "flags":
        writes.append((device.layout.used, struct.pack("<H", move[1])))
    return writes


def tx_step(t, move):
    ring = t.ring
    kind = move[0]
    if kind == "put":
        _, burst, hdrs, kinds, start, prepared = move
        frames = TxFrames(burst) if prepared else list(burst)
        return outcome(lambda: ring.put(frames, hdrs, kinds, start, t.counters))
    if kind == "put_one":
        return outcome(lambda: ring.put_one(move[1], move[2], move[3]))
    call = {"reap": ring.reap, "lend": ring.lend_big, "publish": ring.publish, "kick": ring.should_kick,
            "flush": ring.flush, "disable": ring.disable_interrupts}[kind]
    return outcome(call) + ((ring.small_free, ring.big_free),)


@SETTINGS
@given(size=st.sampled_from([1, 2, 4, 8, 16]), event_idx=st.booleans(),
       start_idx=st.one_of(st.just(0), st.integers(0xFFF0, 0xFFFF), st.integers(0, 0xFFFF)),
       big=st.integers(0, 2), split_big=st.booleans(), moves=st.lists(tx_moves, min_size=4, max_size=40),
       trace=TRACES)
def test_tx_ring_c_matches_python(size, event_idx, start_idx, big, split_big, moves, trace):
    big = min(big, size - 1)
    offsets, lengths, small = tx_slots(size, big)
    args = (size, event_idx, start_idx, POOL, offsets, lengths, small, split_big, MAX_FRAME)
    py = Twin(TxRing, *args, trace=trace)
    c = Twin(lambda *a, **k: tx_ring(*a, c=True, **k), *args, trace=trace)
    device = Device(size, start_idx, event_idx)
    for step, move in enumerate(moves):
        what = f"step {step}: {move[0]}"
        if move[0] in ("complete", "used_raw", "used_jump", "event", "flags"):
            apply(device_writes(device, move, py.mem), py.mem, c.mem)
        else:
            assert tx_step(py, move) == tx_step(c, move), what
        assert_same(py, c, what)


polls = st.tuples(st.just("poll"))
completions = st.tuples(st.just("complete"), st.integers(1, 8), st.integers(0, 200))
# Mostly a device that works (so frames flow, merge and wrap), now and then a hostile move.
rx_moves = st.one_of(
    polls, completions, polls, completions, polls, completions,
    st.tuples(st.just("enable")), st.tuples(st.just("disable")), st.tuples(st.just("kick")),
    st.tuples(st.just("complete"), st.integers(0, 8), used_lens), device_moves,
)


@st.composite
def rx_payloads(draw):
    """What the device writes into each buffer: a header (num_buffers mostly
    small) and a frame, or a short buffer."""
    nbuf = draw(st.one_of(*[st.integers(0, 3)] * 6, st.integers(0, 0xFFFF)))
    hdr = draw(st.binary(min_size=10, max_size=10)) + struct.pack("<H", nbuf)
    body = draw(st.binary(max_size=120))
    return draw(st.sampled_from([hdr + body, body[:11], hdr + body]))


def rx_step(t, move, out):
    ring = t.ring
    kind = move[0]
    if kind == "poll":
        got = []
        result = outcome(lambda: ring.poll(got, t.counters))
        out.append(got)
        return result + (got,)
    return outcome({"enable": ring.enable_interrupts, "disable": ring.disable_interrupts,
                    "kick": ring.should_kick}[kind])


@SETTINGS
@given(size=st.sampled_from([1, 2, 4, 8, 16]), event_idx=st.booleans(),
       start_idx=st.one_of(st.just(0), st.integers(0xFFF0, 0xFFFF), st.integers(0, 0xFFFF)),
       mrg=st.booleans(), buf_size=st.sampled_from([64, 160]), moves=st.lists(rx_moves, min_size=4, max_size=40),
       payloads=st.lists(rx_payloads(), min_size=1, max_size=8), trace=TRACES)
def test_rx_ring_c_matches_python(size, event_idx, start_idx, mrg, buf_size, moves, payloads, trace):
    args = (size, event_idx, start_idx, POOL, buf_size, mrg)
    py = Twin(RxRing, *args, trace=trace)
    c = Twin(lambda *a, **k: rx_ring(*a, c=True, **k), *args, trace=trace)
    assert outcome(py.ring.fill) == outcome(c.ring.fill)
    assert py.ring.should_kick() == c.ring.should_kick()
    assert_same(py, c, "fill")
    device = Device(size, start_idx, event_idx)
    got_py, got_c = [], []
    for step, move in enumerate(moves):
        what = f"step {step}: {move[0]}"
        if move[0] in ("complete", "used_raw", "used_jump", "event", "flags"):
            writes = device_writes(device, move, py.mem, rx_data=lambda k: payloads[k % len(payloads)])
            apply(writes, py.mem, c.mem)
        else:
            assert rx_step(py, move, got_py) == rx_step(c, move, got_c), what
        assert_same(py, c, what)


# -- examples the properties must keep covering ------------------------------------------------
def twins_tx(size=4, event_idx=True):
    offsets, lengths, small = tx_slots(size, 1)
    args = (size, event_idx, 0, POOL, offsets, lengths, small, True, MAX_FRAME)
    return Twin(TxRing, *args), Twin(lambda *a, **k: tx_ring(*a, c=True, **k), *args), Device(size, 0, event_idx)


@pytest.mark.parametrize("hostile, message", [
    (("used_raw", 7, 0), "used entry 0 names descriptor 7, which is not a buffer in flight"),
    (("used_raw", 0xFFFFFFFF, 0), "used entry 0 names descriptor 4294967295, which is not a buffer in flight"),
    (("used_jump", 5), "device used idx 5 is 5 ahead of 0, only 1 buffers published"),
])
def test_hostile_tx_used_entries_break_both_alike(hostile, message):
    py, c, device = twins_tx()
    for t in (py, c):
        assert t.ring.put([bytes(60)], None, None, 0, t.counters) == (1, 1)
        t.ring.publish()
    apply(device_writes(device, hostile, py.mem), py.mem, c.mem)
    for t in (py, c):
        with pytest.raises(QueueBroken, match=message):
            t.ring.reap()
        with pytest.raises(QueueBroken, match=message):     # and stays broken
            t.ring.put([bytes(60)], None, None, 0, t.counters)


def test_double_completion_breaks_both_alike():
    py, c, device = twins_tx()
    for t in (py, c):
        t.ring.put([bytes(60), bytes(61)], None, None, 0, t.counters)
        t.ring.publish()
    heads = device.new_heads(py.mem)
    writes = []
    device.push_used(writes, heads[0], 0)
    device.push_used(writes, heads[0], 0)       # the same buffer twice
    apply(writes, py.mem, c.mem)
    for t in (py, c):
        with pytest.raises(QueueBroken, match="used entry 1 names descriptor 0, which is not a buffer in flight"):
            t.ring.reap()
    assert_same(py, c, "the double completion")


def test_too_long_used_length_is_clamped_and_counted():
    py, c, device = twins_tx()
    for t in (py, c):
        t.ring.put([bytes(60)], None, None, 0, t.counters)
        t.ring.publish()
    apply(device_writes(device, ("complete", 1, 0xFFFF_FFFF), py.mem), py.mem, c.mem)
    assert py.ring.reap() == c.ring.reap() == 1
    assert py.ring.len_clamped == c.ring.len_clamped == 1


def test_burst_is_published_with_one_idx_store_and_kicked_once():
    py, c, device = twins_tx(size=8)
    for t in (py, c):
        assert t.ring.put([bytes(20 + i) for i in range(5)], None, None, 0, t.counters) == (5, 5)
        assert device.new_heads(t.mem) == [] and device.last_avail == 0, "nothing visible before publish"
        assert t.ring.publish() == 5
        assert t.ring.should_kick() is True and t.ring.should_kick() is False
    assert device.new_heads(py.mem) == [0, 1, 2, 3, 4]
    assert py.counters == c.counters == {"tx_frames": 5, "tx_bytes": sum(range(20, 25))}
    assert_same(py, c, "a burst")


def test_rx_num_buffers_beyond_the_ring_breaks_after_the_frames_before_it():
    args = (4, True, 0, POOL, 160, True)
    py, c = Twin(RxRing, *args), Twin(lambda *a, **k: rx_ring(*a, c=True, **k), *args)
    device = Device(4, 0, True)
    for t in (py, c):
        t.ring.fill()
    good = bytes(10) + struct.pack("<H", 1) + b"first frame"
    bad = bytes(10) + struct.pack("<H", 5) + b"claims five buffers"
    payloads = [good, bad]
    apply(device_writes(device, ("complete", 2, 0), py.mem, rx_data=lambda k: payloads[k]), py.mem, c.mem)
    for t in (py, c):
        got = []
        with pytest.raises(QueueBroken, match="device says a frame spans 5 buffers; the ring has 4"):
            t.ring.poll(got, t.counters)
        assert got == [(b"first frame", good[:12])]
    assert py.counters == c.counters == {"rx_buffers": 2}


@pytest.mark.parametrize("make", [TxRing, lambda *a, **k: tx_ring(*a, c=True, **k)], ids=["python", "c"])
def test_prepared_burst_puts_again_and_again(make):
    """One TxFrames sent three times: three copies of each frame, in the ring's slots."""
    offsets, lengths, small = tx_slots(8, 0)
    t = Twin(make, 8, True, 0, POOL, offsets, lengths, small, False, MAX_FRAME)
    burst = TxFrames([bytes([i]) * (20 + i) for i in range(2)])
    assert len(burst) == 2 and burst[1] == bytes([1]) * 21
    for _ in range(3):
        assert t.ring.put(burst, None, None, 0, t.counters) == (2, 2)
    t.ring.publish()
    device = Device(8, 0, True)
    heads = device.new_heads(t.mem)
    assert len(heads) == 6
    got = [t.mem.read(addr + 12, n - 12) for addr, n, _, _ in (device.descriptor(t.mem, h) for h in heads)]
    assert got == list(burst.frames) * 3
    assert t.counters["tx_frames"] == 6 and t.counters["tx_bytes"] == 3 * 41


@pytest.mark.parametrize("c", [False, True], ids=["python", "c"])
def test_trace_of_a_tx_burst_its_kick_and_its_completions(c):
    offsets, lengths, small = tx_slots(4, 0)
    t = Twin(lambda *a, **k: tx_ring(*a, c=c, **k), 4, True, 0, POOL, offsets, lengths, small, False, MAX_FRAME,
             trace=16)
    E = DriverEvents
    assert t.ring.put([bytes(20), bytes(30)], None, None, 0, t.counters) == (2, 2)
    assert t.ring.flush() is True                   # avail_event 0: the device wants this one
    device = Device(4, 0, True)
    writes = []
    for head in device.new_heads(t.mem):
        device.push_used(writes, head, 0)
    apply(writes, t.mem)
    assert t.ring.reap() == 2
    assert t.events.records() == [(E.TX_ADD, 0, 32, 1), (E.TX_ADD, 1, 42, 1), (E.KICK, 2, 0, 0),
                                  (E.USED, 0, 0, 0), (E.USED, 1, 0, 0)]
    assert t.ring.put([bytes(20)], None, None, 0, t.counters) == (1, 1)
    assert t.ring.flush() is False                  # the device's avail_event is still 0
    assert t.events.records() == [(E.TX_ADD, 1, 32, 1), (E.NO_KICK, 3, 0, 0)]
    assert t.events.records() == [] and t.events.lost == 0


@pytest.mark.parametrize("c", [False, True], ids=["python", "c"])
def test_trace_of_rx_buffers_posted_and_a_mergeable_frame_consumed(c):
    t = Twin(lambda *a, **k: rx_ring(*a, c=c, **k), 4, True, 0, POOL, 64, True, trace=4)
    E = DriverEvents
    t.ring.fill()
    assert t.events.records() == [(E.RX_POST, h, 64, 0) for h in range(4)]
    device = Device(4, 0, True)
    heads = device.new_heads(t.mem)
    frame = bytes(range(90))
    writes = [(device.descriptor(t.mem, heads[0])[0], struct.pack("<10xH", 2) + frame[:52]),
              (device.descriptor(t.mem, heads[1])[0], frame[52:])]
    device.push_used(writes, heads[0], 64)
    device.push_used(writes, heads[1], 38)
    apply(writes, t.mem)
    got = []
    t.ring.poll(got, t.counters)
    assert [f for f, _ in got] == [frame]
    # Four fit; the fifth (the kick decision) is lost and counted.
    assert t.events.lost == 1
    assert t.events.records() == [(E.RX_USED, heads[0], 64, 2), (E.RX_USED, heads[1], 38, 0),
                                  (E.RX_POST, heads[1], 64, 0), (E.RX_POST, heads[0], 64, 0)]   # a stack: last freed first
    assert t.events.lost == 0


def test_one_trace_serves_one_data_path():
    events = DriverEvents(8)
    offsets, lengths, small = tx_slots(4, 0)
    Twin(TxRing, 4, True, 0, POOL, offsets, lengths, small, False, MAX_FRAME).ring.queue.events = events
    events.add(DriverEvents.KICK, 1, 0)
    mem = new_memory()
    with pytest.raises(ValueError, match="traces Python rings"):
        tx_ring(new_queue(mem, 4, True, 0), mem, POOL, offsets, lengths, small, False, MAX_FRAME, c=True,
                events=events)
    with pytest.raises(ValueError, match="1 to 2"):
        DriverEvents(0)
