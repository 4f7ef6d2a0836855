"""Misbehaving-device modes (nicdev.net.faults): the policy, each mode on
both data paths against the driver half of the rings, recovery when a mode
is cleared, hostile combinations, and a switch that keeps serving its other
ports while one port misbehaves."""
import struct

import pytest

from nicdev.net.device import DEVICE_FEATURES, VirtioNetDevice
from nicdev.net.faults import FAULT_MODES, Fault, HeldUsed, parse_fault
from nicdev.net.loop import EventLoop
from nicdev.net.polling import DEFAULT_POLL
from nicdev.net.portspec import PortSpecError, build_port, parse_poll, parse_port_spec
from nicdev.net.switch import Switch
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES
from nicdev.virtio.trace import validate_record

from support.datapaths import DATAPATHS
from support.switch_ports import FakePort
from support.vhost_user_guest import Frontend, GuestNic, GuestRam, read_eventfd
from support.waiting import wait_for

ALL = DEVICE_FEATURES | 1 << F_PROTOCOL_FEATURES
MAC_A, MAC_B, MAC_C = (bytes.fromhex(f"0200000000{n:02x}") for n in (0xA, 0xB, 0xC))


def frame(n: int, fill: int = 0xAB, dst: bytes = MAC_B, src: bytes = MAC_A) -> bytes:
    return dst + src + b"\x88\xb5" + bytes([fill]) * (n - 14)


# -- the policy ----------------------------------------------------------------------
def test_every_mode_parses_and_prints_back():
    for name in FAULT_MODES:
        text = "delay-used=50ms" if name == "delay-used" else name
        fault = parse_fault(text)
        assert str(fault) == text
        assert parse_fault(str(fault)) == fault
    combo = parse_fault("reorder-used+delay-used=1.5s+drop-calls")
    assert combo == Fault(drop_calls=True, delay_used=1.5, reorder_used=True)
    assert str(combo) == "drop-calls+delay-used=1.5s+reorder-used"
    assert parse_fault("none") is None and parse_fault("off") is None


@pytest.mark.parametrize("text, words", [
    ("", "needs a mode"), ("stall", "unknown fault mode 'stall'"), ("delay-used", "needs a time"),
    ("delay-used=50", "needs a time"), ("delay-used=500us", "from 1ms to 10s"), ("delay-used=11s", "from 1ms"),
    ("bad-rx-len=1", "takes no value"), ("stall-tx+stall-tx", "given twice"), ("stall-tx+", "unknown fault mode ''"),
])
def test_bad_modes_get_one_line_errors(text, words):
    with pytest.raises(ValueError, match=words) as e:
        parse_fault(text)
    assert "\n" not in str(e.value)


def test_port_spec_key(tmp_path):
    spec = parse_port_spec(f"g=vhost-user:{tmp_path}/g.sock,fault=delay-used=20ms+reorder-used")
    assert spec.params["fault"] == Fault(delay_used=0.02, reorder_used=True)
    port = build_port(spec)
    try:
        assert port.fault == "delay-used=20ms+reorder-used"
        assert port.device.fault == Fault(delay_used=0.02, reorder_used=True)
    finally:
        port.close()
    assert "fault" not in parse_port_spec(f"g=vhost-user:{tmp_path}/g.sock,fault=none").params
    with pytest.raises(PortSpecError, match="unknown fault mode 'nope'"):
        parse_port_spec(f"g=vhost-user:{tmp_path}/g.sock,fault=nope")
    with pytest.raises(PortSpecError, match="unknown key 'fault' for tap"):
        parse_port_spec("t=tap:mn0,fault=stall-tx")
    # A fault with an impairment: the wrapper passes set_fault on.
    impaired = build_port(parse_port_spec(f"i=vhost-user:{tmp_path}/i.sock,fault=starve-rx,loss=1%"))
    try:
        assert impaired.fault == "starve-rx"
        impaired.set_fault(None)
        assert impaired.fault is None
    finally:
        impaired.close()


def test_bad_rx_len_lies_one_byte_past_the_first_buffer():
    used = [(3, 2048), (7, 100)]
    assert Fault(bad_rx_len=True).rx_used(used, 2048) == [(3, 2049), (7, 100)]
    assert Fault(bad_rx_len=True).rx_used([(1, 10)], 0xFFFF_FFFF) == [(1, 0xFFFF_FFFF)]
    assert Fault().rx_used(used, 2048) == used


def test_held_used_by_time_and_queue():
    now = [0.0]
    held = HeldUsed(clock=lambda: now[0])
    q1, q2 = object(), object()
    held.hold("tx", q1, [(1, 0)], 0.05)
    held.hold("tx", q2, [(2, 0)], 0.05)     # a queue since replaced
    now[0] = 0.01
    held.hold("tx", q1, [(3, 0)], 0.05)
    assert held.due("tx", q1) == [] and held.next_release("tx") == pytest.approx(0.04)
    now[0] = 0.055
    assert held.due("tx", q1) == [[(1, 0)]]         # q2's group is forgotten on the way
    assert held.held("tx") == 1
    assert held.due("tx", q1, everything=True, newest_first=True) == [[(3, 0)]]
    assert held.next_release("tx") is None and held.due("rx", q1) == []


# -- one device against a guest driver --------------------------------------------------
class Net:
    """A device (with an event loop, for its timers) and a started guest driver."""

    def __init__(self, datapath, fault=None, queue_size=256):
        self.frames = []
        self.loop = EventLoop()
        self.dev = VirtioNetDevice(lambda f, m: self.frames.append(f), datapath=datapath)
        self.dev.attach_loop(self.loop)
        if fault is not None:
            self.dev.set_fault(parse_fault(fault))
        self.backend = self.dev.make_backend("modes")
        self.ram = GuestRam()
        self.nic = GuestNic(self.ram, queue_size=queue_size)
        self.fe = Frontend(backend=self.backend)
        self.fe.connect(self.nic)
        self.fe.start(self.nic, ALL)
        self.loop.run_once(0)

    def set(self, mode):
        self.dev.set_fault(None if mode is None else parse_fault(mode))

    def run(self, until, what, timeout=5.0):
        self.loop.run(until=until, timeout=timeout)
        assert until(), f"{what} within {timeout} s"

    def used_entries(self, ring: int) -> list[tuple[int, int]]:
        """The raw used ring (id, len) entries so far, as the device wrote them."""
        layout, mem = self.nic.layouts[ring], self.ram.mem
        idx = struct.unpack("<H", mem.read(layout.used + 2, 2))[0]
        return [struct.unpack("<II", mem.read(layout.used + 4 + 8 * i, 8)) for i in range(idx)]

    def close(self):
        self.backend.reset()
        self.nic.close()
        self.ram.close()
        self.loop.close()


@pytest.fixture(params=DATAPATHS)
def make_net(request):
    made = []

    def make(*args, **kw):
        made.append(Net(request.param, *args, **kw))
        return made[-1]
    yield make
    for n in made:
        n.close()


def test_stall_tx_completes_nothing_until_cleared(make_net):
    net = make_net("stall-tx")
    sent = [frame(60 + i, i) for i in range(5)]
    net.nic.send(*sent)
    net.loop.run_once(0)                        # the kick is read; nothing is taken
    assert net.dev.process_tx() == 0
    assert net.frames == [] and net.nic.tx_completed() == 0
    assert net.nic.tx.num_free == net.nic.queue_size - 5
    net.set(None)
    net.run(lambda: len(net.frames) == 5, "the stalled chains taken after clearing")
    assert net.frames == sent
    assert net.nic.tx_completed() == 5


def test_drop_calls_swallows_every_signal_and_pays_one_back(make_net):
    net = make_net("drop-calls")
    for fd in net.nic.call:
        read_eventfd(fd)
    net.nic.send(frame(60))
    net.nic.post_rx(4)
    assert net.dev.process_tx() == 1 and net.frames == [frame(60)]
    assert net.dev.receive(frame(70, dst=MAC_A))
    net.loop.run_once(0)                        # the end-of-turn RX notification
    assert read_eventfd(net.nic.call[0]) == 0 and read_eventfd(net.nic.call[1]) == 0
    assert net.dev.counters.faults["calls_dropped"] >= 2
    assert net.nic.tx_completed() == 1 and net.nic.received() == [frame(70, dst=MAC_A)]   # the work was done
    calls = net.dev.counters.calls
    net.set(None)                               # one call on each ring for what was swallowed
    assert read_eventfd(net.nic.call[0]) == 1 and read_eventfd(net.nic.call[1]) == 1
    assert net.dev.counters.calls == calls + 2
    dropped = net.dev.counters.faults["calls_dropped"]
    net.nic.send(frame(61))
    net.dev.process_tx()
    assert net.dev.counters.faults["calls_dropped"] == dropped


def test_delay_used_holds_used_entries_then_publishes_them(make_net):
    net = make_net("delay-used=5ms")
    net.nic.post_rx(4)
    net.nic.send(frame(60, 1), frame(61, 2))
    assert net.dev.process_tx() == 2
    assert net.frames == [frame(60, 1), frame(61, 2)]       # the frames went on at once...
    assert net.used_entries(1) == [] and net.used_entries(0) == []
    assert net.dev.receive(frame(80, dst=MAC_A))
    assert net.used_entries(0) == []                        # ...their used entries wait
    assert not net.dev.datapath.c_bursts
    net.run(lambda: len(net.used_entries(0)) == 1 and len(net.used_entries(1)) == 2, "the held entries")
    assert net.nic.tx_completed() == 2 and net.nic.received() == [frame(80, dst=MAC_A)]
    assert net.dev.counters.faults["used_held"] == 3


def test_clearing_delay_used_publishes_at_once(make_net):
    net = make_net("delay-used=10s")
    net.nic.send(frame(60))
    net.dev.process_tx()
    assert net.nic.tx_completed() == 0
    net.set(None)
    assert net.nic.tx_completed() == 1
    assert net.dev.datapath.c_bursts == (net.dev.datapath.datapath == "c")


def test_bad_rx_len_reports_one_byte_more_than_the_buffer(make_net):
    net = make_net("bad-rx-len")
    net.nic.post_rx(2, size=1024)
    assert net.dev.receive(frame(100, dst=MAC_A))
    net.loop.run_once(0)
    assert [length for _, length in net.used_entries(0)] == [1025]
    net.nic.rx.reap(net.ram.mem)
    assert net.nic.rx.len_clamped == 1              # the driver half clamps the lie
    assert net.dev.counters.faults["rx_len_lies"] == 1
    # A frame over two buffers (MRG_RXBUF): only the first one lies.
    net.nic.post_rx(2, size=1024)
    assert net.dev.receive(frame(1500, dst=MAC_A))
    assert [length for _, length in net.used_entries(0)[1:]] == [1025, 12 + 1500 - 1024]
    net.set(None)
    net.nic.post_rx(1)
    assert net.dev.receive(frame(90, dst=MAC_A))
    assert net.used_entries(0)[-1][1] == 12 + 90


def test_reorder_used_completes_each_burst_newest_first(make_net):
    net = make_net("reorder-used")
    sent = [frame(60 + i, i) for i in range(4)]
    net.nic.send(*sent)
    assert net.dev.process_tx() == 4
    assert net.frames == sent                       # frames keep their order; completions do not
    ids = [head for head, _ in net.used_entries(1)]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    assert net.nic.tx_completed() == 4
    # RX: the frames written in one turn of the loop, newest first, a
    # two-buffer frame kept whole.
    net.nic.post_rx(8, size=1024)
    rx = [frame(100, 1, dst=MAC_A), frame(1500, 2, dst=MAC_A), frame(200, 3, dst=MAC_A)]
    for f in rx:
        assert net.dev.receive(f)
    assert net.used_entries(0) == []
    net.loop.run_once(0)
    assert net.nic.received() == rx[::-1]
    assert net.dev.counters.faults["used_reordered"] == 7


def test_starve_rx_takes_no_buffers_and_counts_drops(make_net):
    net = make_net("starve-rx")
    net.nic.post_rx(4)
    assert not net.dev.receive(frame(100, dst=MAC_A))
    assert net.used_entries(0) == [] and net.dev.counters.drops == {"fault_starve_rx": 1}
    net.nic.send(frame(60))
    assert net.dev.process_tx() == 1                # TX is not affected
    net.set(None)
    assert net.dev.receive(frame(100, dst=MAC_A))
    net.loop.run_once(0)
    assert net.nic.received() == [frame(100, dst=MAC_A)]


def test_every_mode_at_once_then_the_ring_stops_and_restarts(make_net):
    """Hostile: all modes together, a ring stop while entries are held (they
    go back before the ring's base is read), a restart, a reset."""
    net = make_net("stall-tx+drop-calls+delay-used=10s+bad-rx-len+reorder-used+starve-rx")
    net.nic.post_rx(4)
    net.nic.send(frame(60))
    assert net.dev.process_tx() == 0 and not net.dev.receive(frame(90, dst=MAC_A))
    net.set("delay-used=10s+reorder-used+bad-rx-len")
    net.run(lambda: net.frames, "the stalled frame taken")
    assert net.dev.receive(frame(90, dst=MAC_A))
    assert net.used_entries(0) == [] and net.used_entries(1) == []
    bases = net.fe.stop()                           # GET_VRING_BASE on both rings
    assert bases == [1, 1]
    assert len(net.used_entries(0)) == 1 and len(net.used_entries(1)) == 1
    assert net.dev.datapath.held.held("rx") == net.dev.datapath.held.held("tx") == 0
    net.backend.reset()
    assert net.dev.fault == parse_fault("delay-used=10s+reorder-used+bad-rx-len")   # kept over a reset


def test_a_ring_broken_while_entries_are_held(make_net):
    net = make_net("delay-used=1ms")
    net.nic.send(frame(60))
    net.dev.process_tx()
    # Before the entry is due the guest claims 500 new chains in a ring of 256.
    net.ram.mem.write(net.nic.layouts[1].avail + 2, struct.pack("<H", 500))
    assert net.dev.process_tx() == 0
    assert net.dev.broken is not None and "ahead" in net.dev.broken
    assert net.dev.datapath.held.held("tx") == 0        # forgotten with the broken ring
    net.loop.run(timeout=0.01)                          # a pending release finds nothing to do


# -- the switch keeps serving other ports ---------------------------------------------
class Guest:
    def __init__(self, switch, name, tmp_path, datapath, poll=DEFAULT_POLL):
        self.port = switch.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock"), datapath=datapath, poll=poll))
        self.ram = GuestRam()
        self.nic = GuestNic(self.ram, queue_size=64)
        self.fe = Frontend(backend=self.port.backend)
        self.fe.connect(self.nic)
        self.fe.start(self.nic, ALL)

    def close(self):
        self.port.backend.reset()
        self.nic.close()
        self.ram.close()


@pytest.mark.parametrize("datapath", DATAPATHS)
@pytest.mark.parametrize("mode", ["stall-tx", "drop-calls", "delay-used=2ms", "bad-rx-len", "reorder-used",
                                  "starve-rx", "stall-tx+drop-calls+delay-used=2ms+bad-rx-len+reorder-used"])
def test_other_ports_keep_passing_traffic(tmp_path, datapath, mode):
    other_ports_keep_passing_traffic(tmp_path, datapath, mode, DEFAULT_POLL)


@pytest.mark.parametrize("datapath", DATAPATHS)
@pytest.mark.parametrize("mode", ["stall-tx", "delay-used=2ms+reorder-used", "starve-rx+drop-calls"])
def test_modes_on_busy_polling_ports(tmp_path, datapath, mode):
    other_ports_keep_passing_traffic(tmp_path, datapath, mode, parse_poll("busy"))


def other_ports_keep_passing_traffic(tmp_path, datapath, mode, poll):
    loop = EventLoop()
    switch = Switch(loop)
    guests = {n: Guest(switch, n, tmp_path, datapath, poll) for n in "abc"}
    a, b, c = guests["a"], guests["b"], guests["c"]
    try:
        for g in guests.values():
            g.nic.post_rx(32)
        records = []
        a.port.tracer.add_sink(records.append)
        a.port.set_fault(mode)
        # The faulty port's guest floods, and is flooded to; b and c talk.
        a.nic.send(*[frame(80, i, dst=b"\xff" * 6, src=MAC_A) for i in range(10)])
        for i in range(5):
            b.nic.send(frame(100, i, dst=MAC_C, src=MAC_B))
            c.nic.send(frame(100, i, dst=MAC_B, src=MAC_C))
        got_b, got_c = [], []

        def done():
            got_b.extend(b.nic.received())
            got_c.extend(c.nic.received())
            return len([f for f in got_c if f[6:12] == MAC_B]) == 5 and len([f for f in got_b if f[6:12] == MAC_C]) == 5
        loop.run(until=done, timeout=5)
        assert done(), (mode, len(got_b), len(got_c))
        assert all(g.port.device.broken is None for g in guests.values())
        a.port.set_fault(None)
        a.nic.send(frame(90, 0x77, dst=MAC_B, src=MAC_A))
        wait_for(lambda: (loop.run_once(0.01), [f for f in b.nic.received() if f[12:] == frame(90, 0x77)[12:]])[1],
                 f"a frame from the port after clearing {mode}")
        for r in records:
            validate_record(r)
        assert [r["mode"] for r in records if r["kind"] == "fault"] == [str(parse_fault(mode)), None]
        if "drop-calls" in mode:
            assert any(r["kind"] == "call_suppressed" and r["reason"] == "fault" for r in records)
    finally:
        for g in guests.values():
            g.close()
        switch.close()
        loop.close()


def test_held_used_entries_are_traced_when_they_reach_the_ring(make_net):
    net = make_net("delay-used=5ms")
    records = []
    net.dev.tracer.add_sink(records.append)
    net.nic.send(frame(60, 1), frame(61, 2))
    assert net.dev.process_tx() == 2
    assert [r for r in records if r["kind"] in ("used", "used_idx")] == []
    assert len([r for r in records if r["kind"] == "chain"]) == 2
    net.run(lambda: len(net.used_entries(1)) == 2, "the held entries")
    used = [r for r in records if r["kind"] == "used"]
    assert [(r["queue"], r["len"]) for r in used] == [(1, 0), (1, 0)]
    assert [(r["old"], r["new"]) for r in records if r["kind"] == "used_idx"] == [(0, 2)]
    for r in records:
        validate_record(r)


@pytest.mark.parametrize("datapath", DATAPATHS)
def test_frames_from_a_port_of_another_kind_meet_the_mode_too(tmp_path, datapath):
    """A burst from a non-vhost-user port (a TAP, a socket) into a faulty
    port's guest: lied about and reordered like frames from another guest,
    whichever way the switch hands it over."""
    loop = EventLoop()
    switch = Switch(loop)
    a = Guest(switch, "a", tmp_path, datapath)
    src = switch.add_port(FakePort("src"))
    try:
        a.nic.post_rx(8, size=1024)
        a.nic.send(frame(60, dst=b"\xff" * 6, src=MAC_A))       # the switch learns a's MAC
        a.port.device.process_tx()
        loop.run_once(0)
        a.port.set_fault("bad-rx-len+reorder-used")
        sent = [frame(100 + i, i, dst=MAC_A, src=MAC_C) for i in range(3)]
        src.deliver_burst([(f, None) for f in sent])
        loop.run_once(0)                                # the end of the turn publishes, newest first
        mem, used_ring = a.ram.mem, a.nic.layouts[0].used
        count = struct.unpack("<H", mem.read(used_ring + 2, 2))[0]
        entries = [struct.unpack("<II", mem.read(used_ring + 4 + 8 * i, 8)) for i in range(count)]
        assert [length for _, length in entries] == [1025] * 3
        assert [head for head, _ in entries] == sorted((head for head, _ in entries), reverse=True)
    finally:
        a.close()
        switch.close()
        loop.close()
