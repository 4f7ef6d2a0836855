"""The learning switch against fake ports and a loop whose clock the test drives."""
from __future__ import annotations

import logging

import pytest

from nicdev.net.errors import PortError
from nicdev.net.loop import EventLoop
from nicdev.net.switch import Switch

from support.switch_ports import BCAST, MCAST, A, B, C, FakePort, frame


class ClockLoop(EventLoop):
    """A real EventLoop whose clock only moves when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 1000.0

    def now(self) -> float:
        return self.clock

    def advance(self, seconds: float) -> None:
        self.clock += seconds
        self.run_once(0)       # fire the timers that are now due


@pytest.fixture
def loop():
    lp = ClockLoop()
    yield lp
    lp.close()


def make_switch(loop, names=("p1", "p2", "p3"), **kw):
    sw = Switch(loop, **kw)
    ports = {n: sw.add_port(FakePort(n)) for n in names}
    return sw, ports


def test_add_port_attaches_and_starts(loop):
    sw, ports = make_switch(loop)
    assert all(p.started_with is loop for p in ports.values())
    assert list(sw.ports) == ["p1", "p2", "p3"]


def test_unknown_unicast_is_flooded_to_all_but_ingress(loop):
    sw, p = make_switch(loop)
    f = frame(B, A)
    p["p1"].deliver(f)
    assert p["p1"].sent == []
    assert p["p2"].sent == [f] and p["p3"].sent == [f]
    assert sw.counters.flooded == 1 and sw.counters.forwarded == 0


@pytest.mark.parametrize("dst", [BCAST, MCAST], ids=["broadcast", "multicast"])
def test_group_destinations_flood_even_when_learned(loop, dst):
    sw, p = make_switch(loop)
    p["p2"].deliver(frame(BCAST, B))
    f = frame(dst, A)
    p["p1"].deliver(f)
    assert p["p2"].sent[-1] == f and p["p3"].sent[-1] == f
    assert p["p1"].sent == [frame(BCAST, B)]


def test_learned_unicast_goes_to_one_port_only(loop):
    sw, p = make_switch(loop)
    p["p2"].deliver(frame(BCAST, B))           # B learned on p2
    for port in p.values():
        port.sent.clear()
    f = frame(B, A)
    p["p1"].deliver(f)
    assert p["p2"].sent == [f]
    assert p["p3"].sent == [] and p["p1"].sent == []
    assert sw.counters.forwarded == 1 and sw.counters.learned == 2
    assert [(r["mac"], r["port"]) for r in sw.mac_table()] == [("02:00:00:00:00:01", "p1"),
                                                               ("02:00:00:00:00:02", "p2")]


def test_no_hairpin_destination_behind_ingress_is_filtered(loop):
    sw, p = make_switch(loop)
    p["p1"].deliver(frame(BCAST, B))           # B lives behind p1
    for port in p.values():
        port.sent.clear()
    p["p1"].deliver(frame(B, A))               # A talks to B on the same segment
    assert all(port.sent == [] for port in p.values())
    assert sw.counters.filtered == 1


def test_group_source_is_never_learned(loop):
    sw, p = make_switch(loop)
    p["p1"].deliver(frame(A, MCAST))
    p["p1"].deliver(frame(A, BCAST))
    p["p1"].deliver(frame(A, b"\x00" * 6))
    assert sw.mac_table() == [] and sw.counters.learned == 0
    # ...so frames to those addresses are still flooded, not sent back to p1
    p["p2"].deliver(frame(MCAST, B))
    assert p["p1"].sent and p["p3"].sent


def test_mac_moving_ports_is_relearned(loop):
    sw, p = make_switch(loop)
    p["p1"].deliver(frame(BCAST, A))
    p["p3"].deliver(frame(BCAST, A))           # A moved to p3
    assert sw.counters.moved == 1 and sw.counters.learned == 1
    p["p2"].sent.clear(), p["p1"].sent.clear(), p["p3"].sent.clear()
    f = frame(A, B)
    p["p2"].deliver(f)
    assert p["p3"].sent == [f] and p["p1"].sent == []


def test_entries_age_out_on_the_sweep(loop):
    sw, p = make_switch(loop, ageing=10.0)
    p["p2"].deliver(frame(BCAST, B))
    loop.advance(6)
    assert sw.mac_table()[0]["age"] == 6
    loop.advance(6)                            # 12 s of silence > 10 s
    assert sw.mac_table() == [] and sw.counters.aged == 1
    for port in p.values():
        port.sent.clear()
    p["p1"].deliver(frame(B, A))               # unknown again: flooded
    assert p["p2"].sent and p["p3"].sent and sw.counters.flooded == 2


def test_traffic_keeps_an_entry_alive(loop):
    sw, p = make_switch(loop, ageing=10.0)
    for _ in range(5):
        p["p2"].deliver(frame(BCAST, B))
        loop.advance(6)
    assert [r["mac"] for r in sw.mac_table()] == ["02:00:00:00:00:02"]
    assert sw.counters.aged == 0


def test_stale_entry_is_not_used_before_the_sweep_runs(loop):
    sw, p = make_switch(loop, ageing=10.0)
    p["p2"].deliver(frame(BCAST, B))
    loop.clock += 11                           # time passes, no timer has fired yet
    p["p1"].deliver(frame(B, A))
    assert p["p3"].sent[-1] == frame(B, A)     # flooded, not forwarded to p2 only
    assert sw.counters.forwarded == 0


@pytest.mark.parametrize("length", [0, 1, 13])
def test_runt_frames_are_counted_and_dropped(loop, length):
    sw, p = make_switch(loop)
    p["p1"].deliver(b"\xff" * length)
    assert all(port.sent == [] for port in p.values())
    assert sw.counters.malformed == 1
    assert p["p1"].counters.rx_dropped == 1 and p["p1"].counters.errors == {"runt frame": 1}


def test_oversized_frames_are_counted_and_dropped(loop):
    sw, p = make_switch(loop)
    p["p1"].deliver(frame(BCAST, A, b"\0" * 65536))
    assert all(port.sent == [] for port in p.values())
    assert sw.counters.malformed == 1 and p["p1"].counters.errors == {"oversized frame": 1}
    p["p1"].deliver(frame(BCAST, A, b"\0" * (65535 - 2)))   # exactly the maximum is fine
    assert sw.counters.flooded == 1


def test_minimum_frame_is_switched(loop):
    sw, p = make_switch(loop)
    p["p1"].deliver(BCAST + A + b"\x08\x06")  # header only, 14 bytes
    assert p["p2"].sent == [BCAST + A + b"\x08\x06"]


def test_port_whose_transmit_raises_does_not_break_the_switch(loop, caplog):
    sw, p = make_switch(loop)
    bad = sw.add_port(FakePort("bad", fail=True))
    with caplog.at_level(logging.DEBUG, logger="nicdev.net.switch"):
        p["p1"].deliver(frame(BCAST, A))
        p["p1"].deliver(frame(BCAST, A))
    assert len(p["p2"].sent) == 2 and len(p["p3"].sent) == 2
    assert bad.counters.errors == {"transmit raised RuntimeError": 2}
    assert bad.counters.tx_dropped == 2
    # the first failure is logged with its traceback, later ones quietly
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "bad" in errors[0].getMessage() and errors[0].exc_info


def test_link_down_port_gets_nothing_and_counts_drops(loop):
    sw, p = make_switch(loop)
    p["p3"].link_up = False
    p["p1"].deliver(frame(BCAST, A))
    assert p["p3"].sent == [] and p["p3"].counters.tx_dropped == 1
    assert p["p2"].sent


def test_duplicate_port_name_is_refused(loop):
    sw, p = make_switch(loop)
    with pytest.raises(PortError, match="a port named 'p1' is already on the switch"):
        sw.add_port(FakePort("p1"))
    assert sw.ports["p1"] is p["p1"]


def test_port_whose_start_fails_is_closed_and_left_off(loop):
    class Broken(FakePort):
        def start(self, loop):
            raise PortError("no such thing")

    sw, p = make_switch(loop)
    broken = Broken("br")
    with pytest.raises(PortError, match="no such thing"):
        sw.add_port(broken)
    assert "br" not in sw.ports and broken.closed
    broken.deliver(frame(BCAST, A))             # detached: reaches nobody
    assert p["p1"].sent == []


def test_remove_port_closes_it_and_forgets_its_macs(loop):
    sw, p = make_switch(loop)
    p["p2"].deliver(frame(BCAST, B))
    removed = sw.remove_port("p2")
    assert removed.closed and "p2" not in sw.ports
    assert sw.mac_table() == []
    p["p1"].deliver(frame(B, A))
    assert p["p2"].sent == []
    assert p["p3"].sent[-1] == frame(B, A)
    removed.deliver(frame(BCAST, C))            # no longer attached
    assert sw.counters.learned == 2             # A (and B earlier), not C
    with pytest.raises(PortError, match="no port named 'p2'"):
        sw.remove_port("p2")


def test_table_size_is_bounded(loop):
    sw, p = make_switch(loop, max_macs=2)
    for i in range(5):
        p["p1"].deliver(frame(BCAST, bytes([2, 0, 0, 0, 1, i])))
    assert len(sw.mac_table()) == 2
    assert sw.counters.learned == 2 and sw.counters.table_full == 3


def test_close_closes_every_port_and_is_idempotent(loop):
    sw, p = make_switch(loop)
    sw.close()
    sw.close()
    assert all(port.closed for port in p.values()) and not sw.ports
    with pytest.raises(PortError, match="closed"):
        sw.add_port(FakePort("late"))


def test_stats_and_summary(loop):
    sw, p = make_switch(loop)
    p["p1"].deliver(frame(BCAST, A))
    p["p1"].deliver(b"runt")
    stats = sw.stats()
    assert stats["switch"]["flooded"] == 1 and stats["switch"]["malformed"] == 1
    assert stats["switch"]["mac_entries"] == 1
    assert stats["ports"]["p1"]["rx_frames"] == 2 and stats["ports"]["p1"]["rx_dropped"] == 1
    assert stats["ports"]["p2"]["tx_frames"] == 1 and stats["ports"]["p2"]["kind"] == "fake"
    text = sw.summary()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["port", "kind", "status"]
    p1 = next(line for line in lines if line.startswith("p1"))
    assert p1.split() == ["p1", "fake", "up", "2", str(60 + 4), "0", "0", "1", "1"]
    assert "errors p1: runt frame x1" in text
    assert "flooded 1" in text and "malformed 1" in text and "1 MAC entries" in text


def test_summary_without_ports(loop):
    assert "(no ports)" in Switch(loop).summary()


@pytest.mark.parametrize("kw", [{"ageing": 0}, {"ageing": -1}, {"max_macs": 0}])
def test_bad_parameters(loop, kw):
    with pytest.raises(ValueError):
        Switch(loop, **kw)
