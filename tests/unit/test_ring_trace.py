"""Ring tracing on the device side, on both data paths: each record kind
from a device serving a guest driver through the sans-IO back-end, the
switch's per-port switch, and tracing off doing nothing."""
import os

import pytest

from nicdev.net.device import DEVICE_FEATURES, VirtioNetDevice
from nicdev.net.loop import EventLoop
from nicdev.net.ring_trace import DeviceRingTrace
from nicdev.net.switch import Switch
from nicdev.net.port import Port
from nicdev.net.errors import PortError
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES
from nicdev.virtio.features import VIRTIO_F_RING_EVENT_IDX
from nicdev.virtio.ring import pack_descriptor
from nicdev.virtio.trace import Tracer, validate_record

from support.datapaths import DATAPATHS
from support.vhost_user_guest import Frontend, GuestNic, GuestRam

BIT30 = 1 << F_PROTOCOL_FEATURES
ALL = DEVICE_FEATURES | BIT30
NO_EVENT_IDX = ALL & ~(1 << VIRTIO_F_RING_EVENT_IDX)


def frame(n: int, fill: int = 0xAB) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes([fill]) * (n - 14)


class TracedNet:
    """A device with its tracer on from the start, and a guest driving it."""

    def __init__(self, datapath, features=ALL, trace=True):
        self.records, self.frames_seen, self.frames = [], [], []
        self.dev = VirtioNetDevice(lambda f, m: self.frames.append(f), datapath=datapath,
                                   on_burst=lambda items: self.frames.extend(f for f, _ in items))
        if trace:
            self.dev.tracer.add_sink(self.records.append)
            self.dev.tracer.add_frame_sink(lambda *f: self.frames_seen.append(f))
        self.backend = self.dev.make_backend("test")
        self.ram = GuestRam()
        event_idx = bool(features >> VIRTIO_F_RING_EVENT_IDX & 1)
        self.nic = GuestNic(self.ram, queue_size=16, event_idx=event_idx)
        self.fe = Frontend(backend=self.backend)
        self.fe.connect(self.nic)
        self.fe.start(self.nic, features)

    def kinds(self, *kinds):
        return [r for r in self.records if r["kind"] in kinds]

    def close(self):
        self.backend.reset()
        self.nic.close()
        self.ram.close()


@pytest.fixture(params=DATAPATHS)
def net(request):
    n = TracedNet(request.param)
    yield n
    n.close()


def test_every_record_follows_the_schema_and_names_the_port(net):
    net.nic.send(frame(60))
    net.dev.process_tx()
    net.nic.post_rx(2)
    net.dev.receive(frame(80))
    assert net.records
    for record in net.records:
        validate_record(record)
        assert record["port"] == "virtio-net" and record["side"] == "device"
    times = [r["t"] for r in net.records]
    assert times == sorted(times)


def test_vhost_user_messages_features_and_ring_states(net):
    messages = [r["request"] for r in net.kinds("vhost_msg")]
    assert messages[:3] == ["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES"]
    assert "SET_MEM_TABLE" in messages and messages.count("SET_VRING_KICK") == 2
    kick = next(r for r in net.kinds("vhost_msg") if r["request"] == "SET_VRING_KICK")
    assert kick["fds"] == 1 and kick["queue"] == 0 and kick["dir"] == "rx" and kick["result"] == "ok"
    features = net.kinds("features")
    assert [(f["value"], f["protocol"]) for f in features] == [
        (net.fe.protocol_features, True), (ALL, False)]
    states = [(r["queue"], r["state"]) for r in net.kinds("ring")]
    assert states == [(0, "start"), (1, "start"), (0, "enable"), (1, "enable")]
    net.records.clear()
    net.fe.stop()
    assert [(r["queue"], r["state"]) for r in net.kinds("ring")] == [
        (0, "stop"), (1, "stop"), (0, "disable"), (1, "disable")]
    net.backend.reset()
    assert net.kinds("ring")[-1] == {**net.kinds("ring")[-1], "queue": None, "state": "reset"}


def test_a_refused_request_is_traced_as_refused(net):
    from nicdev.vhost_user.messages import VringState
    from nicdev.vhost_user.protocol import Request
    net.records.clear()
    net.fe.call(Request.SET_VRING_NUM, VringState(0, 3))       # not a power of two
    (msg,) = net.kinds("vhost_msg")
    assert msg["request"] == "SET_VRING_NUM" and msg["result"] == "refused" and msg["size"] == 8


def test_tx_chains_with_descriptors_used_entries_index_moves_and_frames(net):
    net.records.clear()
    sent = [frame(60, 1), frame(100, 2)]
    net.nic.send(sent[0])
    net.nic.send(sent[1], split_header=True)
    assert net.dev.process_tx() == 2
    assert net.frames == sent
    chains = net.kinds("chain")
    assert [len(c["descs"]) for c in chains] == [1, 2]
    assert all(c["dir"] == "tx" and c["queue"] == 1 and not c["indirect"] for c in chains)
    assert [c["bytes"] for c in chains] == [12 + 60, 12 + 100]
    first, second = chains[1]["descs"]
    assert first[1:] == [12, 1] and second[1:] == [100, 0]          # NEXT, then the last one
    assert second[0] == first[0] + 12                                # the guest's addresses
    used = net.kinds("used")
    assert [(u["id"], u["len"]) for u in used] == [(c["head"], 0) for c in chains]
    avail = net.kinds("avail_idx")
    assert [(a["old"], a["new"]) for a in avail] == [(None, 2)]      # both published before the burst
    moves = net.kinds("used_idx")
    assert moves[0]["old"] == 0 and moves[-1]["new"] == 2
    assert [(q, d, h, data) for _, _, q, d, h, data in net.frames_seen] == [
        (1, "tx", c["head"], f) for c, f in zip(chains, sent)]


def test_an_indirect_chain_lists_the_pointer_and_its_table(net):
    mem, lay = net.ram.mem, net.nic.layouts[1]
    data = bytes(12) + frame(60)
    buf = net.ram.alloc(len(data))
    table = net.ram.alloc(32)
    mem.write(buf, data)
    mem.write(table, pack_descriptor(buf, 12, 1, 1) + pack_descriptor(buf + 12, 60, 0, 0))
    mem.write(lay.desc, pack_descriptor(table, 32, 4, 0))
    mem.write_u16(lay.avail + 4, 0)
    mem.write_u16(lay.avail + 2, 1)
    net.records.clear()
    assert net.dev.process_tx() == 1
    (chain,) = net.kinds("chain")
    assert chain["indirect"] is True and chain["head"] == 0
    assert chain["descs"] == [[table, 32, 4], [buf, 12, 1], [buf + 12, 60, 0]]


def test_rx_chains_used_lengths_and_frames(net):
    net.nic.post_rx(3)
    net.records.clear()
    assert net.dev.receive(frame(80))
    (chain,) = net.kinds("chain")
    assert chain["dir"] == "rx" and chain["queue"] == 0 and chain["descs"][0][1:] == [2048, 2]
    (used,) = net.kinds("used")
    assert (used["id"], used["len"]) == (chain["head"], 12 + 80)
    assert net.kinds("used_idx")[0]["new"] == 1
    assert net.frames_seen[-1][2:] == (0, "rx", chain["head"], frame(80))
    assert net.nic.received() == [frame(80)]


def test_calls_sent_and_suppressed_under_event_idx(net):
    net.nic.post_rx(8)
    net.records.clear()
    net.dev.receive(frame(60))
    assert net.kinds("call") and net.kinds("call")[0]["queue"] == 0
    # The driver has not moved used_event past the first entry: no call for the next ones.
    net.dev.receive(frame(60))
    assert net.kinds("call_suppressed")[-1]["reason"] == "event_idx"


@pytest.mark.parametrize("datapath", DATAPATHS)
def test_calls_suppressed_by_no_interrupt(datapath):
    net = TracedNet(datapath, NO_EVENT_IDX)
    try:
        net.nic.post_rx(4)
        net.ram.mem.write_u16(net.nic.layouts[0].avail, 1)        # VRING_AVAIL_F_NO_INTERRUPT
        net.records.clear()
        assert net.dev.receive(frame(60))
        assert [r["reason"] for r in net.kinds("call_suppressed")] == ["no_interrupt"]
        assert not net.kinds("call")
    finally:
        net.close()


def test_kicks_received(net):
    loop = EventLoop()
    try:
        net.dev.attach_loop(loop)
        net.nic.send(frame(60))
        net.dev._watch(net.dev.tx, net.dev._on_tx_kick)
        loop.run_once(0.5)
        kicks = net.kinds("kick")
        assert kicks and kicks[0]["queue"] == 1 and kicks[0]["dir"] == "tx"
        assert net.frames == [frame(60)]
    finally:
        net.dev.reset()
        loop.close()


def test_drops_on_both_directions_carry_their_reason(net):
    net.records.clear()
    net.dev.receive(frame(60))                      # no receive buffers posted: waits, not dropped
    net.dev.datapath.rx_abandon("rx_ring_stopped")
    net.nic.send(b"\x02" * 8)                       # shorter than an Ethernet header
    net.dev.process_tx()
    drops = [(d["dir"], d["reason"], d["len"]) for d in net.kinds("drop")]
    assert drops == [("rx", "rx_ring_stopped", 60), ("tx", "tx_short_frame", 8)]


def test_a_hostile_ring_is_traced_up_to_its_break(net):
    lay = net.nic.layouts[1]
    net.nic.send(frame(60))
    net.ram.mem.write(lay.desc + 16 * 1, pack_descriptor(0x7FFF_FFFF_0000, 64, 0, 0))
    net.ram.mem.write_u16(lay.avail + 4 + 2, 1)
    net.ram.mem.write_u16(lay.avail + 2, 2)
    net.records.clear()
    net.dev.process_tx()
    chains = net.kinds("chain")
    assert len(chains) == 1                          # the good chain; the bad one never popped
    (broken,) = [r for r in net.kinds("ring") if r["state"] == "broken"]
    assert broken["queue"] == 1 and "not in guest memory" in broken["reason"]
    assert net.dev.broken


@pytest.mark.parametrize("datapath", DATAPATHS)
def test_tracing_off_builds_no_record(datapath, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a record was built with tracing off")
    for name in ("emit", "frame"):
        monkeypatch.setattr(Tracer, name, refuse)
    for name in ("tx_burst", "rx_write", "chain", "used", "drop", "call", "avail"):
        monkeypatch.setattr(DeviceRingTrace, name, refuse)
    net = TracedNet(datapath, trace=False)
    try:
        assert not net.dev.tracer.on and not net.dev.tracer.frames_on
        net.nic.send(frame(60), frame(70))
        assert net.dev.process_tx() == 2
        net.nic.post_rx(4)
        assert net.dev.receive(frame(90))
        net.dev.receive(frame(100_000))             # a drop
        net.fe.stop()
    finally:
        net.close()


def test_tracing_switched_on_at_run_time_starts_recording(net):
    net.dev.tracer.remove_sink(net.records.append)
    net.nic.send(frame(60))
    net.dev.process_tx()
    assert not net.dev.tracer.on
    later = []
    net.dev.tracer.add_sink(later.append)
    net.nic.send(frame(61))
    net.dev.process_tx()
    assert [c["head"] for c in later if c["kind"] == "chain"] == [1]


# -- the switch ---------------------------------------------------------------------------
class StubPort(Port):
    def __init__(self, name):
        super().__init__(name)
        self.sent = []

    def start(self, loop):
        pass

    def transmit(self, frame, meta=None):
        self.sent.append(frame)
        return True


def test_switch_traces_one_port_or_all_into_its_buffer():
    loop = EventLoop()
    switch = Switch(loop)
    try:
        a, b = switch.add_port(StubPort("a")), switch.add_port(StubPort("b"))
        assert switch.set_tracing("a", True) == ["a"]
        assert a.tracer.on and not b.tracer.on
        b.link_up = False
        a.deliver(frame(60))                         # flooded to b, whose link is down
        b.deliver(b"\x02" * 10)                      # a runt from b
        records, _, _ = switch.trace_buffer.since(0)
        assert [(r["port"], r["kind"]) for r in records] == [("a", "trace")]
        assert switch.set_tracing(None, True) == ["b"]
        a.deliver(frame(60))
        b.link_up = True                             # a port whose link is down takes nothing in either
        b.deliver(b"\x02" * 10)
        records, _, _ = switch.trace_buffer.since(1)
        drops = [(r["port"], r["reason"], r["len"], r["stage"]) for r in records if r["kind"] == "drop"]
        assert drops == [("b", "link_down", 60, "switch"), ("b", "runt frame", 10, "switch")]
        c = switch.add_port(StubPort("c"))
        assert c.tracer.on                           # every port: ports added later too
        assert switch.set_tracing(None, False) == ["a", "b", "c"]
        assert not (a.tracer.on or b.tracer.on or c.tracer.on)
        records, _, _ = switch.trace_buffer.since(0)
        assert [r["state"] for r in records if r["kind"] == "trace"] == ["start"] * 3 + ["stop"] * 3
        with pytest.raises(PortError, match="no port named 'zz'"):
            switch.set_tracing("zz", True)
    finally:
        switch.close()
        loop.close()


def test_switch_trace_sink_reaches_present_and_later_ports():
    loop = EventLoop()
    switch = Switch(loop)
    try:
        a = switch.add_port(StubPort("a"))
        seen = []
        switch.add_trace_sink(seen.append)
        b = switch.add_port(StubPort("b"))
        assert a.tracer.on and b.tracer.on
        a.link_up = False
        b.deliver(frame(60))
        assert [(r["port"], r["reason"]) for r in seen if r["kind"] == "drop"] == [("a", "link_down")]
        switch.remove_trace_sink(seen.append)
        assert not a.tracer.on and not b.tracer.on
    finally:
        switch.close()
        loop.close()


def test_switch_frame_sink_reaches_present_and_later_ports_and_leaves_removed_ones():
    loop = EventLoop()
    switch = Switch(loop)
    try:
        a = switch.add_port(StubPort("a"))
        frames = []
        sink = lambda *args: frames.append(args)     # noqa: E731
        switch.add_frame_sink(sink)
        b = switch.add_port(StubPort("b"))            # added later: a capture sees it too
        assert a.tracer.frames_on and b.tracer.frames_on and not a.tracer.on
        b.tracer.frame(1, "tx", 5, b"x" * 60)
        assert [(f[0], f[2], f[3], f[4]) for f in frames] == [("b", 1, "tx", 5)]
        switch.remove_port("b")
        assert not b.tracer.frames_on
        switch.remove_frame_sink(sink)
        assert not a.tracer.frames_on
    finally:
        switch.close()
        loop.close()


def test_a_front_end_gone_after_garbage_is_a_reset_with_the_reason(tmp_path):
    import socket
    import time
    from nicdev.net.vhost_user_port import VhostUserPort

    loop = EventLoop()
    port = VhostUserPort("vm0", str(tmp_path / "vm0.sock"))
    records = []
    port.tracer.add_sink(records.append)
    port.start(loop)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(port.socket_path)
        sock.sendall(b"\x01\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00")    # version 3: not ours
        deadline = time.monotonic() + 10
        while not any(r["kind"] == "ring" for r in records):
            assert time.monotonic() < deadline, "the back-end never dropped the connection"
            loop.run_once(0.1)
        (reset,) = [r for r in records if r["kind"] == "ring"]
        assert reset["state"] == "reset" and reset["reason"].startswith("protocol error: unsupported protocol version")
    finally:
        sock.close()
        port.close()
        loop.close()


@pytest.mark.parametrize("datapath", DATAPATHS)
def test_a_pooled_burst_gives_the_records_and_frames_of_a_plain_one(datapath):
    """The C path's bursts that stay in the pool (vhost-user to vhost-user)
    are traced as any other: same records, same frames with their heads."""
    seen = []
    for pooled in (False, True):
        net = TracedNet(datapath)
        try:
            if pooled:
                got = []
                net.dev.on_pooled = lambda frames: got.extend(f for f, _ in frames.items())
            net.nic.send(frame(60, 1), frame(70, 2), frame(80, 3))
            net.records.clear()
            assert net.dev.process_tx() == 3
            frames = (got if pooled else []) + net.frames     # the Python path has no pool
            assert frames == [frame(60, 1), frame(70, 2), frame(80, 3)]
            seen.append(([{k: v for k, v in r.items() if k != "t"} for r in net.records],
                         [f[2:] for f in net.frames_seen]))
        finally:
            net.close()
    assert seen[0] == seen[1]
    assert [h for _, _, h, _ in seen[0][1]] == [0, 1, 2]


@pytest.mark.parametrize("datapath", [p for p in DATAPATHS if p.id == "c"])
def test_kernel_events_that_do_not_fit_are_reported_and_the_buffer_grows(datapath):
    from nicdev.virtio.device_burst import KernelEvents

    net = TracedNet(datapath)
    try:
        net.dev.ring_trace._events = KernelEvents(capacity=2, desc_capacity=2)
        net.nic.send(frame(60, 1), frame(60, 2), frame(60, 3))
        net.records.clear()
        assert net.dev.process_tx() == 3
        (overflow,) = net.kinds("trace")
        assert overflow["state"] == "overflow" and overflow["lost"] > 0 and overflow["queue"] == 1
        assert net.dev.ring_trace._events.capacity > 2
        net.records.clear()
        net.nic.send(frame(60, 4), frame(60, 5), frame(60, 6))
        assert net.dev.process_tx() == 3
        assert len(net.kinds("chain")) == 3 and len(net.kinds("used")) == 3 and not net.kinds("trace")
    finally:
        net.close()


def test_a_burst_to_the_guest_is_traced_frame_by_frame(net):
    net.nic.post_rx(8)
    net.records.clear()
    sent = [frame(60, i) for i in range(5)]
    assert net.dev.receive_burst([(f, None) for f in sent]) == (5, 300)
    chains = net.kinds("chain")
    assert [(u["id"], u["len"]) for u in net.kinds("used")] == [(c["head"], 12 + 60) for c in chains]
    assert [f[2:] for f in net.frames_seen] == [(0, "rx", c["head"], f) for c, f in zip(chains, sent)]
    assert net.nic.received() == sent
