"""Bursts through the switch: a port hands over several frames at once
(`deliver_burst`), ports that take bursts get one `transmit_burst` per
burst, the others one `transmit` per frame; the result is the same as
frame by frame (checked against the per-frame path on random traffic)."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nicdev.net.impair import ImpairedPort
from nicdev.net.loop import EventLoop
from nicdev.net.port import Port
from nicdev.net.switch import Switch
from nicdev.virtio.impairment import Impairment
from nicdev.virtio.offload import GSO_TCPV4, FrameMeta

from support.offload_frames import tcp4_checksums_ok, tcp4_frame
from support.switch_ports import BCAST, MCAST, A, B, C, FakePort, frame

TSO = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)


class RecordingPort(Port):
    """Records (frame, meta) per transmit, and each transmit_burst call if it takes bursts."""

    kind = "rec"

    def __init__(self, name, *, bursts=False, gso=False, fail=False, captures=False):
        super().__init__(name)
        self.takes_bursts = bursts
        self.accepts_csum_partial = gso
        self.accepts_gso = frozenset({GSO_TCPV4}) if gso else frozenset()
        self.captures_all = captures
        self.fail = fail
        self.sent = []
        self.calls = []

    def start(self, loop):
        pass

    def transmit(self, frame, meta=None):
        if self.fail:
            raise RuntimeError("peer exploded")
        self.sent.append((frame, meta))
        self.counters.tx_frames += 1
        return True

    def transmit_burst(self, items):
        if self.fail:
            raise RuntimeError("peer exploded")
        self.calls.append(list(items))
        self.sent.extend(items)
        self.counters.tx_frames += len(items)
        return len(items)


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def switch_with(loop, *ports, **kw):
    sw = Switch(loop, **kw)
    for p in ports:
        sw.add_port(p)
    return sw


def test_a_port_that_takes_bursts_gets_one_call_per_burst_in_order(loop):
    src, native, plain = RecordingPort("src"), RecordingPort("native", bursts=True), RecordingPort("plain")
    switch_with(loop, src, native, plain)
    burst = [(frame(BCAST, A, bytes([i]) * 46), None) for i in range(10)]
    src.deliver_burst(burst)
    assert native.calls == [burst]
    assert plain.calls == [] and plain.sent == burst
    assert src.counters.rx_frames == 10 and src.counters.rx_bytes == 600


def test_learning_and_lookup_once_per_run_of_one_address(loop, monkeypatch):
    a, b = RecordingPort("a"), RecordingPort("b", bursts=True)
    sw = switch_with(loop, a, b)
    b.deliver(frame(BCAST, B))                            # B learned on b
    learns, lookups = [], []
    real_learn, real_lookup = sw._learn, sw._lookup
    monkeypatch.setattr(sw, "_learn", lambda *args: learns.append(args) or real_learn(*args))
    monkeypatch.setattr(sw, "_lookup", lambda *args: lookups.append(args) or real_lookup(*args))
    a.deliver_burst([(frame(B, A), None)] * 64)
    assert len(learns) == 1 and len(lookups) == 1
    assert len(b.calls) == 1 and len(b.calls[0]) == 64
    assert sw.counters.forwarded == 64 and sw.counters.learned == 2


def test_a_source_learned_mid_burst_is_used_for_the_frames_after_it(loop):
    a, b, c = RecordingPort("a"), RecordingPort("b"), RecordingPort("c")
    sw = switch_with(loop, a, b, c)
    to_c = frame(C, A)
    # C is unknown for the first frame (flooded), then learned on b: the third
    # frame to C goes to b only.
    b.deliver_burst([(frame(BCAST, B), None)])
    a.deliver_burst([(to_c, None)])
    b.deliver_burst([(frame(A, C), None)])
    a.deliver_burst([(to_c, None), (to_c, None)])
    assert [f for f, _ in c.sent] == [frame(BCAST, B), to_c]
    assert [f for f, _ in b.sent] == [to_c, to_c, to_c]
    assert sw.counters.flooded == 2 and sw.counters.forwarded == 3


def test_burst_that_raises_is_counted_as_dropped_and_others_still_get_theirs(loop, caplog):
    src, bad, good = RecordingPort("src"), RecordingPort("bad", bursts=True, fail=True), RecordingPort("good")
    switch_with(loop, src, bad, good)
    with caplog.at_level(logging.ERROR):
        src.deliver_burst([(frame(BCAST, A), None)] * 3)
    assert bad.counters.tx_dropped == 3 and bad.counters.errors == {"transmit raised RuntimeError": 1}
    assert len(good.sent) == 3
    assert "port bad: transmit failed" in caplog.text


def test_a_link_down_port_that_takes_bursts_counts_every_frame_dropped(loop):
    src, down = RecordingPort("src"), RecordingPort("down", bursts=True)
    switch_with(loop, src, down)
    down.link_up = False
    src.deliver_burst([(frame(BCAST, A), None)] * 5)
    assert down.calls == [] and down.counters.tx_dropped == 5


def test_gso_frames_in_a_burst_are_finished_once_for_ports_that_need_it(loop):
    src, taker, plain = RecordingPort("src"), RecordingPort("taker", bursts=True, gso=True), RecordingPort("plain")
    cap = RecordingPort("cap", captures=True)
    sw = switch_with(loop, src, taker, plain, cap)
    big = tcp4_frame(bytes(4000))
    src.deliver_burst([(big, TSO), (frame(BCAST, A), None)])
    assert taker.calls == [[(big, TSO), (frame(BCAST, A), None)]]
    assert len(plain.sent) == 4 and all(meta is None for _, meta in plain.sent)
    assert all(tcp4_checksums_ok(f) for f, _ in plain.sent[:3]) and plain.sent[3][0] == frame(BCAST, A)
    assert [f for f, _ in cap.sent] == [f for f, _ in plain.sent]
    assert sw.counters.segmented == 1 and sw.counters.segments == 3


def test_frames_given_as_memoryviews_are_switched_as_bytes(loop):
    src, dst = RecordingPort("src"), RecordingPort("dst")
    switch_with(loop, src, dst)
    pool = bytearray(frame(BCAST, A) + frame(BCAST, B))
    view = memoryview(pool)
    src.deliver_burst([(view[:60], None), (view[60:], None)])
    pool[:] = bytes(len(pool))           # the pool is reused after the call
    assert dst.sent == [(frame(BCAST, A), None), (frame(BCAST, B), None)]


def test_a_per_frame_sink_gets_a_burst_frame_by_frame():
    port = FakePort("p")
    got = []
    port.attach(lambda p, f, m: got.append((p, f, m)))
    port.deliver_burst([(b"one", None), (b"two", TSO)])
    assert got == [(port, b"one", None), (port, b"two", TSO)]
    assert port.counters.rx_frames == 2 and port.counters.rx_bytes == 6


def test_transmit_burst_defaults_to_transmit_per_frame():
    port = FakePort("p")
    assert port.transmit_burst([(b"a" * 60, None), (b"b" * 60, None)]) == 2
    assert port.sent == [b"a" * 60, b"b" * 60] and not port.takes_bursts


def test_an_impaired_port_impairs_a_burst_frame_by_frame(loop):
    inner = RecordingPort("lossy")
    lossy = ImpairedPort(inner, in_=Impairment(loss=1.0))
    dst = RecordingPort("dst")
    switch_with(loop, lossy, dst)
    inner.deliver_burst([(frame(BCAST, A), None)] * 4)
    assert dst.sent == [] and inner.counters.rx_frames == 4
    assert lossy.impair_counters["in"].impaired_dropped == 4


# -- the same traffic frame by frame and in bursts ---------------------------------------
MACS = [A, B, C, BCAST, MCAST, bytes(6)]
_frames = st.one_of(
    st.tuples(st.sampled_from(MACS), st.sampled_from(MACS), st.sampled_from([0, 46, 200])).map(
        lambda t: (frame(t[0], t[1], bytes(t[2])), None)),
    st.sampled_from([(tcp4_frame(bytes(3000)), TSO), (b"\x02" * 10, None), (bytes(70000), None)]),
)
_bursts = st.lists(st.tuples(st.integers(0, 2), st.lists(_frames, min_size=1, max_size=12)), max_size=12)


def _run(bursts, as_bursts: bool, max_macs: int):
    loop = EventLoop()
    try:
        ports = [RecordingPort("p0", gso=True), RecordingPort("p1", bursts=True), RecordingPort("p2"),
                 RecordingPort("cap", captures=True)]
        sw = switch_with(loop, *ports, max_macs=max_macs)
        for src, items in bursts:
            if as_bursts:
                ports[src].deliver_burst(items)
            else:
                for f, m in items:
                    ports[src].deliver(f, m)
        return ([p.sent for p in ports], [p.counters.as_dict() for p in ports],
                sw.counters.as_dict(), [(r["mac"], r["port"]) for r in sw.mac_table()])
    finally:
        loop.close()


@settings(max_examples=150, deadline=None)
@given(_bursts, st.sampled_from([1, 2, 4096]))
def test_bursts_switch_exactly_like_single_frames(bursts, max_macs):
    assert _run(bursts, True, max_macs) == _run(bursts, False, max_macs)
