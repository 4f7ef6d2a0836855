"""ImpairedPort: loss, duplication, corruption, reordering and delay on a fake
port and a fake clock, metadata pass-through (out) and finishing (in),
delegation, the port-spec keys."""
from __future__ import annotations

import heapq
import itertools
import random

import pytest

from nicdev.net.impair import ImpairedPort
from nicdev.net.port import Port, PortCounters
from nicdev.net.portspec import PORT_SPEC_HELP, PortSpecError, build_port, parse_port_spec
from nicdev.net.switch import Switch
from nicdev.virtio.impairment import DEFAULT_LIMIT, REORDER_HOLD, ImpairCounters, Impairment
from nicdev.virtio.offload import FrameMeta, complete_checksum


class FakeTimer:
    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self):
        self.cancelled = True


class FakeLoop:
    """call_later/now on a clock the test moves with advance()."""

    def __init__(self):
        self.time = 0.0
        self._timers = []
        self._seq = itertools.count()

    def now(self):
        return self.time

    def call_later(self, delay, callback):
        timer = FakeTimer(self.time + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, seconds):
        end = self.time + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            self.time = max(self.time, when)
            if not timer.cancelled:
                timer.callback()
        self.time = end

    @property
    def pending(self):
        return sum(not t.cancelled for _, _, t in self._timers)


class FakePort(Port):
    """Records what it is asked to send; `from_peer()` plays its peer."""

    kind = "fake"

    def __init__(self, name="p", *, csum=False, gso=frozenset()):
        super().__init__(name)
        self.sent = []          # (frame, args, kwargs, time)
        self.loop = None
        self.started = self.closed = False
        self.accepts_csum_partial = csum
        self.accepts_gso = gso
        self.ifname = "fake0"
        self.attach_calls = []
        self.refuse = False

    def attach(self, sink, **kwargs):
        self.attach_calls.append(kwargs)
        self._sink = sink

    def deliver(self, frame, meta=None):
        # Hands metadata on as it came, as every port does.
        self.counters.rx_frames += 1
        if self._sink is not None:
            self._sink(self, frame, meta)

    def start(self, loop):
        self.loop, self.started = loop, True

    def close(self):
        self.closed = True

    def transmit(self, frame, *args, **kwargs):
        if self.refuse:
            self.counters.tx_dropped += 1
            return False
        self.sent.append((frame, args, kwargs, self.loop.now() if self.loop else None))
        self.counters.tx_frames += 1
        return True

    def from_peer(self, frame, *meta):
        self.deliver(frame, *meta)

    @property
    def frames(self):
        return [s[0] for s in self.sent]


def frame(i: int, size: int = 60) -> bytes:
    """A distinct frame: unicast destination, source, ethertype, then i."""
    return bytes.fromhex("020000000002" "020000000001" "0800") + i.to_bytes(4, "big") + bytes(size - 18)


def rig(out=None, in_=None, **port_kw):
    """An impaired fake port, started on a fake loop, its deliveries collected."""
    loop = FakeLoop()
    inner = FakePort(**port_kw)
    port = ImpairedPort(inner, out=out, in_=in_)
    got = []
    port.attach(lambda p, f, meta: got.append((p, f, () if meta is None else (meta,), loop.now())))
    port.start(loop)
    return loop, inner, port, got


def replay(seed, salt, draws):
    rng = random.Random(f"{seed}:{salt}")
    return [rng.random() for _ in range(draws)]


# -- Impairment -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"loss": -0.1}, {"loss": 1.5}, {"duplicate": "5%"}, {"reorder": True}, {"corrupt": None},
    {"delay": -1}, {"jitter": 3600}, {"delay": "10ms"}, {"seed": 1.5}, {"seed": True},
    {"limit": 0}, {"limit": 2.0},
])
def test_bad_impairments_are_refused(kwargs):
    with pytest.raises(ValueError):
        Impairment(**kwargs)


def test_impairment_describes_itself():
    assert str(Impairment()) == "nothing"
    assert str(Impairment(loss=0.05, reorder=0.02, delay=0.01, jitter=0.002, seed=3)) == \
        "loss 5%, reorder 2%, delay 10ms+-2ms, seed 3"
    assert Impairment(jitter=0.001).delays and not Impairment(loss=1).delays


# -- pass-through and delegation ------------------------------------------------------------------

def test_no_impairment_passes_frames_and_metadata_both_ways():
    loop, inner, port, got = rig()
    meta = object()
    assert port.transmit(frame(1)) is True
    assert port.transmit(frame(2), meta) is True
    assert port.transmit(frame(3), meta=meta) is True
    assert inner.sent == [(frame(1), (), {}, 0.0), (frame(2), (meta,), {}, 0.0), (frame(3), (), {"meta": meta}, 0.0)]
    inner.from_peer(frame(4))
    inner.from_peer(frame(5), meta)
    assert [(p, f, m) for p, f, m, _ in got] == [(port, frame(4), ()), (port, frame(5), (meta,))]
    assert inner.counters.rx_frames == 2 and inner.counters.tx_frames == 3


def test_inner_refusal_is_returned_when_sent_at_once():
    loop, inner, port, got = rig(out=Impairment(loss=0.0, seed=1))
    inner.refuse = True
    assert port.transmit(frame(1)) is False
    assert inner.counters.tx_dropped == 1


def test_metadata_stays_with_its_frame_through_every_impairment():
    # Out, whatever comes with a frame stays with it. In, an impaired link is
    # a wire: frames with metadata are finished before the impairments (the
    # inner port hands them on as they came), and each stays itself.
    imp = Impairment(duplicate=0.3, reorder=0.3, delay=0.005, jitter=0.004, seed=11)
    loop, inner, port, got = rig(out=imp, in_=imp)
    partial = FrameMeta(True, 20, 6)
    for i in range(200):
        port.transmit(frame(i), ("meta", i), flag=i)
        inner.from_peer(frame(i), partial)
        loop.advance(0.001)
    loop.advance(1.0)
    assert len(inner.sent) >= 200 and len(got) >= 200
    for f, args, kwargs, _ in inner.sent:
        i = int.from_bytes(f[14:18], "big")
        assert args == (("meta", i),) and kwargs == {"flag": i}
    for _, f, meta, _ in got:
        assert meta == () and f == complete_checksum(frame(int.from_bytes(f[14:18], "big")), partial)


def test_delegates_to_the_inner_port():
    loop = FakeLoop()
    inner = FakePort("host", csum=True, gso=frozenset({1}))
    port = ImpairedPort(inner, in_=Impairment(loss=0.5))
    assert port.name == "host" and port.kind == "fake" and port.counters is inner.counters
    assert port.ifname == "fake0"                       # any other attribute
    assert port.accepts_csum_partial and port.accepts_gso == frozenset({1})
    port.set_impairments(out=Impairment(loss=0.5))
    port.start(loop)
    assert inner.started and inner.loop is loop
    port.link_up = False
    assert inner.link_up is False and port.link_up is False
    assert port.status == "down; impaired out [loss 50%]: lost 0"
    port.set_impairments(out=Impairment(loss=0.5, seed=1), in_=Impairment(loss=0.5, delay=0.001))
    assert port.status == "down; impaired out [loss 50%, seed 1]: lost 0; in [loss 50%, delay 1ms]: lost 0, delayed 0"
    port.set_impairments(out=Impairment(reorder=0.5, seed=1), in_=Impairment(reorder=0.5, seed=2))
    assert port.status == "down; impaired both ways [reorder 50%, seed 1]: out reord 0; in reord 0"
    port.set_impairments(out=Impairment(loss=0.5))
    port.close()
    assert inner.closed
    with pytest.raises(AttributeError):
        port.no_such_attribute


def test_status_without_impairments_is_the_inner_status():
    assert ImpairedPort(FakePort()).status == "up"


# -- loss ----------------------------------------------------------------------------------------

def test_loss_drops_exactly_what_the_seeded_generator_says():
    loop, inner, port, got = rig(out=Impairment(loss=0.1, seed=7), in_=Impairment(loss=0.1, seed=7))
    for i in range(1000):
        assert port.transmit(frame(i)) is True         # a lost frame is no error for the sender
        inner.from_peer(frame(i))
    expect_out = [i for i, r in enumerate(replay(7, "out", 1000)) if r >= 0.1]
    expect_in = [i for i, r in enumerate(replay(7, "in", 1000)) if r >= 0.1]
    assert [int.from_bytes(f[14:18], "big") for f in inner.frames] == expect_out
    assert [int.from_bytes(f[14:18], "big") for _, f, _, _ in got] == expect_in
    assert expect_in != expect_out                      # the two directions differ
    c = port.impair_counters
    assert c["out"].impaired_dropped == 1000 - len(expect_out) == 103   # pinned: the same every run
    assert c["in"].impaired_dropped == 1000 - len(expect_in)
    assert 70 < c["in"].impaired_dropped < 130
    assert inner.counters.rx_frames == 1000            # counted as received before the loss


def test_same_seed_same_pattern_and_extremes():
    runs = []
    for _ in range(2):
        loop, inner, port, got = rig(out=Impairment(loss=0.3, seed=99))
        for i in range(300):
            port.transmit(frame(i))
        runs.append(inner.frames)
    assert runs[0] == runs[1]
    loop, inner, port, got = rig(out=Impairment(loss=1.0), in_=Impairment(loss=0.0))
    for i in range(50):
        port.transmit(frame(i))
        inner.from_peer(frame(i))
    assert inner.sent == [] and len(got) == 50
    assert port.impair_counters["out"].impaired_dropped == 50


# -- duplication, corruption ------------------------------------------------------------------------

def test_duplicate_sends_twice_in_place():
    loop, inner, port, got = rig(out=Impairment(duplicate=1.0))
    for i in range(3):
        port.transmit(frame(i))
    assert inner.frames == [frame(0), frame(0), frame(1), frame(1), frame(2), frame(2)]
    assert port.impair_counters["out"].duplicated == 3


def test_duplicate_count_follows_the_seed():
    loop, inner, port, got = rig(out=Impairment(duplicate=0.05, seed=3))
    for i in range(1000):
        port.transmit(frame(i))
    # one draw per frame for duplication (no other impairment draws)
    expected = sum(r < 0.05 for r in replay(3, "out", 1000))
    assert port.impair_counters["out"].duplicated == expected
    assert len(inner.sent) == 1000 + expected


def test_corrupt_flips_exactly_one_bit_after_the_ethernet_header():
    loop, inner, port, got = rig(out=Impairment(corrupt=1.0, seed=5))
    originals = [frame(i, 100) for i in range(200)]
    for f in originals:
        port.transmit(f)
    positions = set()
    for original, sent in zip(originals, inner.frames):
        assert len(sent) == len(original) and sent[:14] == original[:14]
        diff = [(i, a ^ b) for i, (a, b) in enumerate(zip(original, sent)) if a != b]
        assert len(diff) == 1 and bin(diff[0][1]).count("1") == 1
        positions.add(diff[0][0])
    assert len(positions) > 50                          # spread over the frame
    assert port.impair_counters["out"].corrupted == 200


def test_impaired_directions_see_wire_frames_and_corruption_no_partial_checksums():
    # Out: the switch segments GSO frames for us (impairments act per wire
    # frame), and finishes checksums too before we would flip a bit.
    inner = FakePort(csum=True, gso=frozenset({1, 4}))
    port = ImpairedPort(inner, out=Impairment(corrupt=0.01))
    assert port.accepts_csum_partial is False and port.accepts_gso == frozenset()
    port.set_impairments(out=Impairment(loss=0.01))
    assert port.accepts_csum_partial is True and port.accepts_gso == frozenset()
    port.set_impairments(in_=Impairment(loss=0.01))
    assert port.accepts_csum_partial is True and port.accepts_gso == frozenset({1, 4})
    # In: frames from the inner port are finished here only while impaired.
    got = []
    port.attach(lambda p, f, meta: got.append((f, meta)))
    port.set_impairments(in_=Impairment())
    partial, tso = FrameMeta(True, 20, 6), FrameMeta(True, 34, 16, False, 1, 1000)
    inner.from_peer(frame(1), partial)
    assert got[-1] == (complete_checksum(frame(1), partial), None)
    inner.from_peer(frame(2), FrameMeta(True, 20, 600))           # cannot be honoured: a counted drop
    assert len(got) == 1 and inner.counters.rx_dropped == 1 and inner.counters.errors == {"bad_csum_offsets": 1}
    port.set_impairments(out=Impairment(corrupt=0.5))
    inner.from_peer(frame(3), tso)
    assert got[-1] == (frame(3), tso)
    port.attach(None)
    assert inner.attach_calls[-1] == {} and inner._sink is None


# -- reordering ------------------------------------------------------------------------------------

def test_reorder_sends_a_held_frame_after_the_next():
    loop, inner, port, got = rig(out=Impairment(reorder=1.0))
    for i in range(6):
        port.transmit(frame(i))
    assert inner.frames == [frame(1), frame(0), frame(3), frame(2), frame(5), frame(4)]
    assert port.impair_counters["out"].reordered == 3


def test_reordering_with_a_seed_swaps_neighbours_only():
    loop, inner, port, got = rig(in_=Impairment(reorder=0.2, seed=21))
    for i in range(500):
        inner.from_peer(frame(i))
    loop.advance(REORDER_HOLD)
    order = [int.from_bytes(f[14:18], "big") for _, f, _, _ in got]
    assert sorted(order) == list(range(500))
    swaps = [i for i in range(499) if order[i] > order[i + 1]]
    assert all(order[i] == order[i + 1] + 1 for i in swaps)
    assert len(swaps) == port.impair_counters["in"].reordered
    assert 60 < len(swaps) < 140


def test_a_held_frame_with_no_successor_leaves_after_the_hold_time():
    loop, inner, port, got = rig(out=Impairment(reorder=1.0))
    port.transmit(frame(0))
    loop.advance(REORDER_HOLD * 0.9)
    assert inner.sent == []
    loop.advance(REORDER_HOLD * 0.2)
    assert inner.frames == [frame(0)]
    port.transmit(frame(1))                             # held again, then released by the next
    port.transmit(frame(2))
    assert inner.frames == [frame(0), frame(2), frame(1)]
    loop.advance(1.0)
    assert len(inner.sent) == 3 and loop.pending == 0


# -- delay --------------------------------------------------------------------------------------------

def test_delay_holds_each_frame_for_its_time():
    loop, inner, port, got = rig(out=Impairment(delay=0.010))
    port.transmit(frame(0))
    loop.advance(0.004)
    port.transmit(frame(1))
    loop.advance(0.0059)
    assert inner.sent == []
    loop.advance(0.0002)
    assert inner.frames == [frame(0)] and inner.sent[0][3] == pytest.approx(0.010)
    loop.advance(0.004)
    assert inner.frames == [frame(0), frame(1)] and inner.sent[1][3] == pytest.approx(0.014)
    assert port.impair_counters["out"].delayed == 2 and loop.pending == 0


def test_jitter_keeps_the_order_and_stays_within_bounds():
    loop, inner, port, got = rig(in_=Impairment(delay=0.010, jitter=0.005, seed=2))
    sent_at = {}
    for i in range(300):
        sent_at[i] = loop.now()
        inner.from_peer(frame(i))
        loop.advance(0.0007)
    loop.advance(0.1)
    order = [int.from_bytes(f[14:18], "big") for _, f, _, _ in got]
    assert order == list(range(300))
    waits = [t - sent_at[int.from_bytes(f[14:18], "big")] for _, f, _, t in got]
    assert all(0.005 - 1e-9 <= w <= 0.015 + 1e-9 for w in waits)
    assert max(waits) - min(waits) > 0.005             # the jitter does vary


def test_the_delay_queue_is_bounded():
    loop, inner, port, got = rig(out=Impairment(delay=0.1, limit=10))
    for i in range(15):
        port.transmit(frame(i))
    loop.advance(0.2)
    assert inner.frames == [frame(i) for i in range(10)]
    c = port.impair_counters["out"]
    assert c.delayed == 10 and c.delay_overflow == 5
    assert Impairment().limit == DEFAULT_LIMIT


def test_switching_delay_off_keeps_waiting_frames_in_order():
    loop, inner, port, got = rig(out=Impairment(delay=0.05))
    port.transmit(frame(0))
    port.set_impairments(out=Impairment(loss=0.0))
    port.transmit(frame(1))                             # queued behind frame 0, not before it
    assert inner.sent == []
    loop.advance(0.06)
    assert inner.frames == [frame(0), frame(1)]
    port.transmit(frame(2))
    assert inner.frames[-1] == frame(2)                 # queue empty again: straight through


def test_delayed_frames_for_a_link_gone_down_are_dropped_and_counted():
    loop, inner, port, got = rig(out=Impairment(delay=0.01))
    port.transmit(frame(0))
    inner.link_up = False
    loop.advance(0.02)
    assert inner.sent == [] and inner.counters.tx_dropped == 1


def test_close_forgets_waiting_frames_and_timers():
    loop, inner, port, got = rig(out=Impairment(delay=0.01), in_=Impairment(reorder=1.0))
    port.transmit(frame(0))
    inner.from_peer(frame(1))
    port.close()
    loop.advance(1.0)
    assert inner.sent == [] and got == [] and inner.closed


def test_a_port_not_started_cannot_delay_and_sends_at_once():
    inner = FakePort()
    port = ImpairedPort(inner, out=Impairment(delay=0.5))
    port.transmit(frame(0))
    assert inner.frames == [frame(0)]


def test_all_impairments_together_lose_and_duplicate_nothing_else():
    imp = Impairment(loss=0.05, duplicate=0.02, reorder=0.03, delay=0.002, jitter=0.001, seed=1)
    loop, inner, port, got = rig(out=imp)
    for i in range(2000):
        port.transmit(frame(i))
        loop.advance(0.0001)
    loop.advance(1.0)
    c = port.impair_counters["out"]
    ids = [int.from_bytes(f[14:18], "big") for f in inner.frames]
    assert len(ids) == 2000 - c.impaired_dropped + c.duplicated
    assert len(set(ids)) == 2000 - c.impaired_dropped
    assert c.delayed == len(ids) and c.reordered > 0 and c.delay_overflow == 0
    assert port.impairment_stats()["out"]["impairment"] == str(imp)
    assert port.impairment_stats()["in"] == {"impairment": None, **ImpairCounters().as_dict()}


# -- on a real switch ---------------------------------------------------------------------------------

def test_on_a_switch_frames_and_metadata_cross_the_impaired_port():
    loop = FakeLoop()
    switch = Switch(loop)
    a = FakePort("a", csum=True)
    b_inner = FakePort("b", csum=True)
    b = switch.add_port(ImpairedPort(b_inner, out=Impairment(delay=0.01), in_=Impairment(duplicate=1.0)))
    switch.add_port(a)
    assert b_inner.started and switch.ports["b"] is b
    to_a = bytes.fromhex("02000000000a" "02000000000b" "0800") + bytes(46)
    to_b = bytes.fromhex("02000000000b" "02000000000a" "0800") + bytes(46)
    b_inner.from_peer(to_a)                             # duplicated on the way in; flooded (a unknown)
    assert a.frames == [to_a, to_a]
    a.from_peer(to_b)                                   # learned: forwarded to b, delayed
    assert b_inner.sent == []
    loop.advance(0.011)
    assert b_inner.frames == [to_b]
    stats = switch.stats()["ports"]["b"]
    assert stats["rx_frames"] == 1 and stats["tx_frames"] == 1 and "impaired" in stats["status"]
    switch.close()
    assert b_inner.closed


def test_on_a_switch_gso_frames_are_segmented_before_the_impairment():
    from nicdev.virtio import offload
    from support.offload_frames import tcp4_frame

    loop = FakeLoop()
    switch = Switch(loop)
    a = switch.add_port(FakePort("a", csum=True, gso=frozenset({offload.GSO_TCPV4})))
    b_inner = FakePort("b", csum=True, gso=frozenset({offload.GSO_TCPV4}))
    b = switch.add_port(ImpairedPort(b_inner, out=Impairment(loss=1.0)))
    big = tcp4_frame(bytes(range(256)) * 16)            # 4096 bytes of payload
    a.from_peer(big, offload.tcp_gso_meta(big, 1000))  # flooded: b's MAC is unknown
    assert b.impair_counters["out"].impaired_dropped == 5     # five wire frames, each lost on its own
    b.set_impairments(out=Impairment(duplicate=1.0))
    a.from_peer(big, offload.tcp_gso_meta(big, 1000))
    assert len(b_inner.sent) == 10 and all(len(f) <= 14 + 20 + 20 + 1000 for f in b_inner.frames)
    b.set_impairments()                                 # unimpaired: GSO frames pass as they are
    a.from_peer(big, offload.tcp_gso_meta(big, 1000))
    assert b_inner.sent[-1][0] == big and b_inner.sent[-1][1][0].gso_size == 1000


def test_gso_frames_coming_in_are_segmented_before_the_impairment():
    from nicdev.virtio import offload
    from support.offload_frames import tcp4_frame

    loop, inner, port, got = rig(in_=Impairment(loss=1.0), csum=True, gso=frozenset({offload.GSO_TCPV4}))
    big = tcp4_frame(bytes(range(256)) * 16)            # 4096 bytes of payload
    inner.from_peer(big, offload.tcp_gso_meta(big, 1000))
    assert port.impair_counters["in"].impaired_dropped == 5 and got == []     # five wire frames, each lost
    port.set_impairments(in_=Impairment(duplicate=1.0))
    inner.from_peer(big, offload.tcp_gso_meta(big, 1000))
    assert len(got) == 10 and all(m == () and len(f) <= 14 + 20 + 20 + 1000 for _, f, m, _ in got)


# -- port specs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, out, in_", [
    ("h=tap:mnet0,netns=lab,loss=5%,reorder=2%,duplicate=1%,delay=10ms,seed=1",
     Impairment(loss=0.05, reorder=0.02, duplicate=0.01, delay=0.01, seed=1), "same"),
    ("v=vhost-user:/tmp/v.sock,loss=0.5,impair=out", Impairment(loss=0.5), None),
    ("s=stream:/tmp/s.sock,corrupt=.5%,jitter=500us,delay=0.2s,limit=50,impair=in",
     None, Impairment(corrupt=0.005, jitter=0.0005, delay=0.2, limit=50)),
    ("d=dgram:127.0.0.1:5000,remote=127.0.0.1:5001,delay=0,loss=0%,impair=BOTH", Impairment(), "same"),
])
def test_port_spec_impairment_keys(text, out, in_):
    spec = parse_port_spec(text)
    assert spec.impair_out == out
    assert spec.impair_in == (out if in_ == "same" else in_)
    assert not set(spec.params) & {"loss", "delay", "seed", "impair"}


@pytest.mark.parametrize("text, reason", [
    ("h=tap:t0,loss=5", "loss=5 is more than 1: write 5% for a percentage"),
    ("h=tap:t0,loss=150%", "loss=150% is more than 100%"),
    ("h=tap:t0,loss=lots", "loss must be a percentage (5%) or a fraction (0.05), not 'lots'"),
    ("h=tap:t0,delay=10", "delay must be a time with a unit (10ms, 500us, 0.2s), not '10'"),
    ("h=tap:t0,delay=2h", "delay must be a time with a unit"),
    ("h=tap:t0,delay=4000s", "delay=4000s is an hour or more"),
    ("h=tap:t0,seed=1", "seed, limit and impair need an impairment"),
    ("h=tap:t0,impair=out", "seed, limit and impair need an impairment"),
    ("h=tap:t0,loss=1%,seed=-1", "seed must be a whole number, not '-1'"),
    ("h=tap:t0,loss=1%,limit=0", "limit must be at least 1"),
    ("h=tap:t0,loss=1%,impair=sideways", "impair must be both, in or out, not 'sideways'"),
    ("h=tap:t0,loss=1%,loss=2%", "key 'loss' given twice"),
    ("c=pcap:x.pcap,loss=1%", "unknown key 'loss' for pcap (keys: snaplen)"),
    ("s=stream:/tmp/x,lose=1%", "unknown key 'lose' for stream (keys: none); impairments: loss,"),
])
def test_port_spec_impairment_errors(text, reason):
    with pytest.raises(PortSpecError) as info:
        parse_port_spec(text)
    assert reason in str(info.value) and str(info.value).startswith(f"bad port spec {text!r}: ")


def test_build_port_wraps_only_impaired_specs(tmp_path):
    plain = build_port(parse_port_spec(f"s=stream:{tmp_path}/s.sock"))
    assert not isinstance(plain, ImpairedPort)
    port = build_port(parse_port_spec(f"s=stream:{tmp_path}/s.sock,loss=1%,delay=1ms,impair=out"))
    assert isinstance(port, ImpairedPort) and port.kind == "stream" and port.path == f"{tmp_path}/s.sock"
    assert port.out_impairment == Impairment(loss=0.01, delay=0.001) and port.in_impairment is None
    assert "loss=P" in PORT_SPEC_HELP and "impair=both|out|in" in PORT_SPEC_HELP


def test_impaired_counters_start_at_zero():
    port = ImpairedPort(FakePort(), out=Impairment(loss=0.1))
    assert port.impair_counters["out"] == ImpairCounters() and isinstance(port.counters, PortCounters)
