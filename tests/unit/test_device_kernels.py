"""The C data path held to the Python one: the same rings, hostile ones
included, fed to a NetDatapath on each path must give the same frames,
used entries (all guest memory, byte for byte), errors (messages included),
queue state, counters and drop reasons."""
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nicdev.net.device import BASE_FEATURES, DEVICE_FEATURES
from nicdev.net.device_datapath import NetDatapath
from nicdev.virtio import kernels
from nicdev.virtio.device_burst import (
    KernelEvents, PooledFrames, RxKernel, TxKernel, enable_notifications, needs_notification,
)
from nicdev.virtio.device_queue import DeviceQueue, QueueBroken
from nicdev.virtio.features import VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, mask
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.offload import DATA_VALID, FrameMeta
from nicdev.virtio.ring import SplitRingLayout, pack_descriptor
from nicdev.virtio.trace import DEVICE, Tracer

from support.hostile_rings import build, hostile_rings
from support.vhost_user_guest import GuestNic, GuestRam

pytestmark = pytest.mark.skipif(not kernels.use_c(), reason="MNET_DATAPATH=python: the C kernels are not loaded")

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEGACY = 0      # neither VERSION_1 nor MRG_RXBUF: the 10-byte header, no offloads
FEATURES = st.sampled_from([DEVICE_FEATURES, BASE_FEATURES, LEGACY, mask(VIRTIO_F_VERSION_1)])
PATHS = ("python", "c")


def datapath(path, features, mtu, tracer=None):
    drops = []
    dp = NetDatapath(on_drop=lambda d, r: drops.append((d, r)), datapath=path, tracer=tracer)
    dp.negotiate(features)
    dp.mtu = mtu
    return dp, drops


def snapshot(mem):
    return [bytes(r.view) for r in mem.regions]


def outcome(dp, drops, queue, mem, log):
    return dict(log=log, drops=drops, counters=dp.counters.as_dict(), state=list(queue.state),
                broken=queue.broken, memory=mem.snapshot(), waiting=dp.rx_waiting, held=len(dp._rx_held))


@st.composite
def rings(draw):
    """Hostile rings, and as often rings of tame chains (so that frames get
    through): buffers at 0x8000.., lengths up to 0x800, each descriptor maybe
    chained to the next one."""
    ring = draw(hostile_rings())
    if draw(st.booleans()):
        return ring
    size = ring["size"]
    flags = st.sampled_from([0, 0, 1, 2, 2, 3])        # none, NEXT, WRITE, NEXT|WRITE
    desc = b"".join(pack_descriptor(0x8000 + draw(st.integers(0, 0x1000)), draw(st.integers(0, 0x800)),
                                    draw(flags), (i + 1) % size) for i in range(size))
    ahead = draw(st.integers(1, size))
    return {**ring, "desc": desc, "heads": [h % size for h in ring["heads"]],
            "avail_idx": (ring["next_avail"] + ahead) & 0xFFFF}


# -- TX ------------------------------------------------------------------------------
@st.composite
def tx_contents(draw):
    """What the buffers at 0x8000 hold: headers asking for offloads or not."""
    kind = draw(st.sampled_from(["counting", "zero headers", "zero headers", "random"]))
    if kind == "counting":
        return None                                  # build()'s own bytes(range(256)) * 32
    if kind == "zero headers":
        return bytes(0x2000)
    return draw(st.binary(min_size=64, max_size=64)) * 128


def recording_tracer():
    """A tracer on, with a fixed clock: its records and frames in lists."""
    tracer = Tracer("p", DEVICE, clock=lambda: 0.0)
    tracer.records, tracer.frames = [], []
    tracer.add_sink(tracer.records.append)
    tracer.add_frame_sink(lambda *frame: tracer.frames.append(frame))
    return tracer


def run_tx(path, ring, contents, features, mtu, limit, enabled, tracer=None):
    mem, lay, queue = build(ring)
    if contents is not None:
        mem.write(0x8000, contents)
    dp, drops = datapath(path, features, mtu, tracer)
    log = []
    for _ in range(3):
        out = []
        try:
            n = dp.tx_burst(queue, mem, limit, enabled, out)
        except QueueBroken as e:
            log.append(("broken", e.reason, out))
            break
        log.append((n, out))
        if not n:
            break
    return outcome(dp, drops, queue, mem, log)


@SETTINGS
@given(ring=rings(), contents=tx_contents(), features=FEATURES,
       mtu=st.sampled_from([None, 68, 1500, 9000]), limit=st.integers(1, 20), enabled=st.sampled_from([True, True, True, False]))
def test_tx_burst_is_the_same_on_both_paths(ring, contents, features, mtu, limit, enabled):
    python, c = (run_tx(path, ring, contents, features, mtu, limit, enabled) for path in PATHS)
    assert c == python
    frames = sum(len(entry[-1]) for entry in python["log"])
    event(f"tx: {'broken' if python['broken'] else 'whole'}, {'frames' if frames else 'no frames'}"
          f"{', drops' if python['drops'] else ''}")


# -- RX ------------------------------------------------------------------------------
@st.composite
def rx_frames(draw):
    """Frames for the guest, with metadata it may take, and flushes between."""
    sizes = st.one_of(st.integers(14, 600), st.integers(600, 5000), st.sampled_from([14, 60, 1514, 65549]))
    metas = st.sampled_from([None, None, DATA_VALID, FrameMeta(True, 34, 6)])
    steps = st.one_of(st.tuples(sizes, metas, st.integers(0, 255)), st.just("flush"))
    return draw(st.lists(steps, min_size=1, max_size=12))


def run_rx(path, ring, steps, features, mtu, tracer=None):
    mem, lay, queue = build(ring)
    dp, drops = datapath(path, features, mtu, tracer)
    log = []
    for step in steps:
        try:
            if step == "flush":
                log.append(dp.rx_flush(queue, mem))
                continue
            size, meta, fill = step
            if meta is not None and not dp.can_take(meta):
                meta = None
            frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes([fill]) * (size - 14)
            log.append(dp.rx_put(queue, mem, frame, meta))
        except QueueBroken as e:
            log.append(("broken", e.reason))
            break
    return outcome(dp, drops, queue, mem, log)


@SETTINGS
@given(ring=rings(), steps=rx_frames(), features=FEATURES, mtu=st.sampled_from([None, 1500]))
def test_rx_put_is_the_same_on_both_paths(ring, steps, features, mtu):
    python, c = (run_rx(path, ring, steps, features, mtu) for path in PATHS)
    assert c == python
    event(f"rx: {'broken' if python['broken'] else 'whole'}, {python['counters']['rx_frames'] and 'frames' or 'no frames'}"
          f"{', held' if python['held'] else ''}{', backlog' if python['waiting'] else ''}")


# -- traced: the same records on both paths, and the same behaviour as untraced ------
def traced(run, *args):
    tracer = recording_tracer()
    return run(*args, tracer=tracer), tracer.records, tracer.frames


@SETTINGS
@given(ring=rings(), contents=tx_contents(), features=FEATURES,
       mtu=st.sampled_from([None, 1500]), limit=st.integers(1, 20), enabled=st.sampled_from([True, True, False]))
def test_traced_tx_bursts_give_the_same_records_on_both_paths(ring, contents, features, mtu, limit, enabled):
    args = (ring, contents, features, mtu, limit, enabled)
    python, c = (traced(run_tx, path, *args) for path in PATHS)
    assert c == python
    assert python[0] == run_tx("python", *args)         # tracing changes nothing
    event(f"tx traced: {len(python[1])} records{', broken' if python[0]['broken'] else ''}")


@SETTINGS
@given(ring=rings(), steps=rx_frames(), features=FEATURES, mtu=st.sampled_from([None, 1500]))
def test_traced_rx_puts_give_the_same_records_on_both_paths(ring, steps, features, mtu):
    python, c = (traced(run_rx, path, ring, steps, features, mtu) for path in PATHS)
    assert c == python
    assert c[0] == run_rx("c", ring, steps, features, mtu)
    event(f"rx traced: {len(python[1])} records{', broken' if python[0]['broken'] else ''}")


# -- notifications -------------------------------------------------------------------
@SETTINGS
@given(event_idx=st.booleans(), start=st.integers(0, 0xFFFF), avail_flags=st.integers(0, 3),
       plan=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 0xFFFF), st.booleans()), min_size=1, max_size=12))
def test_notification_decisions_are_the_same_on_both_paths(event_idx, start, avail_flags, plan):
    """Push n chains, move used_event, ask: needs_notification and
    enable_notifications answer and write alike on both paths."""
    runs = []
    for path in PATHS:
        mem = GuestMemory([MemoryRegion(0, 0x10000, bytearray(0x10000))])
        lay = SplitRingLayout(8, 0x1000)
        mem.write_u16(lay.avail, avail_flags)
        mem.write_u16(lay.avail + 2, (start + 3) & 0xFFFF)
        mem.write_u16(lay.used + 2, start)
        queue = DeviceQueue.from_layout(lay, event_idx=event_idx, next_avail=start)
        needs = queue.needs_notification if path == "python" else (lambda m, q=queue: needs_notification(q, m))
        enable = queue.enable_notifications if path == "python" else (lambda m, q=queue: enable_notifications(q, m))
        answers = []
        for pushes, used_event, ask_enable in plan:
            queue.push_many(mem, [(0, 0)] * pushes)
            mem.write_u16(lay.avail + 4 + 2 * 8, used_event)
            answers.append(needs(mem))
            if ask_enable:
                queue.disable_notifications(mem)
                answers.append(enable(mem))
        runs.append((answers, list(queue.state), snapshot(mem)))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("where, match", [
    (dict(avail_gpa=0xFFF0), "available ring at 0xfff0 is not in guest memory: "),
    (dict(used_gpa=0xFFF0), "used ring at 0xfff0 is not in guest memory: "),
])
def test_notification_calls_on_rings_outside_memory(where, match):
    reasons = []
    for path in PATHS:
        mem = GuestMemory([MemoryRegion(0, 0x10000, bytearray(0x10000))])
        queue = DeviceQueue(**{"size": 8, "desc_gpa": 0x1000, "avail_gpa": 0x2000, "used_gpa": 0x3000, **where})
        call = queue.needs_notification if path == "python" else (lambda m: needs_notification(queue, m))
        if "used" in match:
            call = queue.enable_notifications if path == "python" else (lambda m: enable_notifications(queue, m))
        with pytest.raises(QueueBroken, match=match) as exc:
            call(mem)
        assert queue.broken == exc.value.reason
        reasons.append(exc.value.reason)
    assert reasons[0] == reasons[1]


# -- one queue, both paths in turn ---------------------------------------------------
def test_switching_data_path_between_bursts_keeps_the_queue_state():
    ram = GuestRam()
    try:
        nic = GuestNic(ram, queue_size=16, event_idx=True)
        rxq, txq = (DeviceQueue.from_layout(layout, event_idx=True) for layout in nic.layouts)
        paths = [NetDatapath(datapath=p) for p in PATHS]
        for dp in paths:
            dp.negotiate(DEVICE_FEATURES)
        sent = [b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes([i]) * (60 + i) for i in range(40)]
        got = []
        for i in range(0, 40, 5):      # more frames than the queue holds: indices wrap the ring
            nic.send(*sent[i:i + 5])
            out = []
            assert paths[i // 5 % 2].tx_burst(txq, ram.mem, 3, True, out) == 3
            assert paths[(i // 5 + 1) % 2].tx_burst(txq, ram.mem, 64, True, out) == 2
            got += [f for f, _ in out]
            assert nic.tx_completed() == 5
        assert got == sent
        nic.post_rx(16)
        for i, frame in enumerate(sent[:12]):
            assert paths[i % 2].rx_put(rxq, ram.mem, frame, None)
        assert nic.received() == sent[:12]
        assert txq.next_avail == txq.used_idx == 40 and rxq.next_avail == rxq.used_idx == 12
    finally:
        nic.close()
        ram.close()


# -- the kernels' own edges ------------------------------------------------------------
def flat_ring(size=8):
    mem = GuestMemory([MemoryRegion(0, 0x10000, bytearray(0x10000))])
    lay = SplitRingLayout(size, 0x1000)
    return mem, lay, DeviceQueue.from_layout(lay)


def offer(mem, lay, heads, size=8):
    mem.write(lay.avail, struct.pack(f"<HH{len(heads)}H", 0, len(heads), *heads))


def test_events_are_recorded_only_when_asked():
    mem, lay, queue = flat_ring()
    frame = bytes(12) + b"\x02" * 60
    mem.write(0x8000, frame)
    for i in range(3):
        mem.write(lay.desc + 16 * i, pack_descriptor(0x8000, len(frame)))
    offer(mem, lay, [0, 1, 2])
    kernel = TxKernel()
    kernel.configure(12, 1514, 65553, False)
    events = KernelEvents(capacity=2)
    assert kernel.run(queue, mem, 1, True) == (1, None)
    assert kernel.run(queue, mem, 8, True, events) == (2, None)
    assert events.records() == [(KernelEvents.TX_CHAIN, 1, 72), (KernelEvents.TX_CHAIN, 2, 72)]
    assert events.records() == []


def test_event_details_give_each_chain_its_descriptors_and_each_used_element():
    mem, lay, queue = flat_ring()
    mem.write(lay.desc, pack_descriptor(0x8000, 40, 3, 1) + pack_descriptor(0x9000, 100, 2, 0))
    offer(mem, lay, [0])
    events = KernelEvents()
    assert RxKernel().put(queue, mem, bytes(12), b"y" * 60, False, events) == 1
    assert events.details() == [
        (KernelEvents.RX_POP, 0, 140, [[0x8000, 40, 3], [0x9000, 100, 2]], False, 140),
        (KernelEvents.RX_CHAIN, 0, 72),
        (KernelEvents.USED, 0, 72),
    ]
    assert events.details() == [] and events.lost == 0


def test_a_receive_chain_that_does_not_fit_leaves_no_event():
    mem, lay, queue = flat_ring()
    mem.write(lay.desc, pack_descriptor(0x8000, 30, 2))
    offer(mem, lay, [0])
    events = KernelEvents()
    assert RxKernel().put(queue, mem, bytes(12), b"y" * 60, True, events) == 0
    assert events.details() == []


def test_rx_kernel_leaves_a_ring_without_room_untouched():
    mem, lay, queue = flat_ring()
    mem.write(lay.desc, pack_descriptor(0x8000, 100, 2))
    offer(mem, lay, [0])
    before = snapshot(mem)
    kernel = RxKernel()
    assert kernel.put(queue, mem, bytes(12), b"x" * 200, True) == 0
    assert snapshot(mem) == before and queue.next_avail == 0
    assert kernel.put(queue, mem, bytes(12), b"x" * 50, True) == 1
    assert mem.read(0x8000, 14) == bytes(10) + b"\x01\x00" + b"xx"     # num_buffers = 1
    assert struct.unpack("<II", mem.read(lay.used + 4, 8)) == (0, 62)


def test_tx_kernel_frames_of_the_largest_size_fit_their_pool_slot():
    mem = GuestMemory([MemoryRegion(0, 0x40000, bytearray(0x40000))])
    lay = SplitRingLayout(8, 0x1000)
    queue = DeviceQueue.from_layout(lay)
    big = 12 + 65553
    mem.write(0x10000, bytes(12) + bytes([7]) * 65553)
    for i in range(4):
        mem.write(lay.desc + 16 * i, pack_descriptor(0x10000, big))
    offer(mem, lay, [0, 1, 2, 3])
    dp = NetDatapath(datapath="c")
    dp.negotiate(DEVICE_FEATURES)
    out = []
    assert dp.tx_burst(queue, mem, 4, True, out) == 4
    assert out == [] and dp.counters.drops == {"tx_frame_too_big": 4}   # not GSO: too big, and nothing overran


# -- frames of another queue's pool into a receive ring -------------------------------
def pooled(frames_to_send):
    """PooledFrames holding `frames_to_send`, from a TX ring of their own."""
    mem = GuestMemory([MemoryRegion(0, 0x80000, bytearray(0x80000))])
    lay = SplitRingLayout(64, 0x1000)
    queue = DeviceQueue.from_layout(lay)
    gpa = 0x10000
    for i, f in enumerate(frames_to_send):
        mem.write(gpa, bytes(12) + f)
        mem.write(lay.desc + 16 * i, pack_descriptor(gpa, 12 + len(f)))
        gpa += 12 + len(f)
    offer(mem, lay, list(range(len(frames_to_send))))
    kernel = TxKernel()
    kernel.configure(12, 5000, 5000, False)
    n, error = kernel.run(queue, mem, 64, True)
    assert (n, error) == (len(frames_to_send), None)
    return PooledFrames(kernel, n, 12, sum(map(len, frames_to_send)))


@SETTINGS
@given(ring=rings(), sizes=st.lists(st.one_of(st.integers(14, 600), st.integers(600, 5000)), min_size=1, max_size=8),
       features=FEATURES, mtu=st.sampled_from([None, 1500]), backlog=st.booleans())
def test_pooled_frames_into_a_ring_are_rx_put_frame_by_frame(ring, sizes, features, mtu, backlog):
    sent = [b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes([i]) * (n - 14)
            for i, n in enumerate(sizes)]
    frames = pooled(sent)
    runs = []
    for path in PATHS:
        mem, lay, queue = build(ring)
        dp, drops = datapath(path, features, mtu)
        log = []
        try:
            if backlog:     # a frame already waiting: the burst queues behind it
                log.append(dp.rx_put(queue, mem, sent[0], None))
            if path == "python":
                log += [dp.rx_put(queue, mem, f, None) for f in sent]
            else:
                taken, nbytes, flags, broken, at = dp.rx_pooled(queue, mem, frames, 0, len(sent))
                if broken is not None:
                    raise broken
        except QueueBroken as e:
            log.append(("broken", e.reason))
        runs.append(outcome(dp, drops, queue, mem, []) | {"broken_log": [x for x in log if isinstance(x, tuple)]})
    assert runs[1] == runs[0]


# -- a burst of frames (bytes) into a receive ring in one call --------------------------
@SETTINGS
@given(ring=rings(), steps=rx_frames(), features=FEATURES, mtu=st.sampled_from([None, 1500]), backlog=st.booleans())
def test_a_burst_of_frames_into_a_ring_is_rx_put_frame_by_frame(ring, steps, features, mtu, backlog):
    """`rx_frames` (one C call per run, offload headers carried through) on
    the C path against `rx_put` per frame on the Python path: guest memory,
    queue state, counters, drops, backlog and held chains the same."""
    runs = []
    for path in PATHS:
        mem, lay, queue = build(ring)
        dp, drops = datapath(path, features, mtu)
        items = []
        for step in steps:
            if step == "flush":
                continue
            size, meta, fill = step
            if meta is not None and not dp.can_take(meta):
                meta = None
            items.append((b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes([fill]) * (size - 14),
                          meta))
        log = []
        try:
            if backlog and items:       # a frame already waiting: the burst queues behind it
                log.append(dp.rx_put(queue, mem, items[0][0], None))
            if path == "python":
                taken = 0
                for frame, meta in items:
                    taken += bool(dp.rx_put(queue, mem, frame, meta) & 1)
                log.append(taken)
            else:
                taken, nbytes, flags, broken, at = dp.rx_frames(queue, mem, items)
                log.append(taken)
                if broken is not None:
                    raise broken
        except QueueBroken as e:
            log.append(("broken", e.reason))
        runs.append(outcome(dp, drops, queue, mem, [x for x in log if isinstance(x, tuple)]))
    assert runs[1] == runs[0]
    event(f"rx burst: {'broken' if runs[0]['broken'] else 'whole'}, {runs[0]['counters']['rx_frames']} frames")


def test_a_burst_of_frames_is_one_kernel_call(monkeypatch):
    """Frames with and without offload metadata for a guest with room: one
    C call for all of them, the same bytes as rx_put writes one by one."""
    metas = [None, DATA_VALID, FrameMeta(True, 34, 6), None]
    frames = [b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes([i]) * 100 for i in range(4)]
    results = []
    for path in PATHS:
        ram = GuestRam()
        nic = GuestNic(ram, queue_size=16)
        queue = DeviceQueue.from_layout(nic.layouts[0], event_idx=True)
        nic.post_rx(8)
        dp, drops = datapath(path, DEVICE_FEATURES, None)
        calls = []
        if path == "c":
            for name in ("put", "put_frames"):
                original = getattr(RxKernel, name)
                monkeypatch.setattr(RxKernel, name, lambda self, *a, _o=original, _n=name, **k:
                                    calls.append(_n) or _o(self, *a, **k))
            taken, nbytes, flags, broken, at = dp.rx_frames(queue, ram.mem, list(zip(frames, metas)))
            assert (taken, nbytes, broken, at) == (4, 4 * 114, None, 4)
            monkeypatch.undo()
        else:
            for f, m in zip(frames, metas):
                dp.rx_put(queue, ram.mem, f, m)
        results.append((nic.received(), dp.counters.as_dict(), calls))
        nic.close()
        ram.close()
    (python, c) = results
    assert c[:2] == python[:2] and c[2] == ["put_frames"]
    assert python[1]["rx_data_valid"] == 1 and python[1]["rx_csum_partial"] == 1
