"""The monitor's tables as text: each view from a real stack's snapshot,
aligned columns, rates between two snapshots, and the live loop (redraw on
a terminal, appended snapshots with their time otherwise)."""
from __future__ import annotations

import io
import re

import pytest

from mnet.apps.monitor import show
from mnet.apps.monitor.live import CLEAR, run_monitor
from mnet.apps.monitor.render import VIEWS, rates, render, table
from stack import IpAddress, LoopbackNicPair, SocketType, Stack

from support.waiting import wait_for


@pytest.fixture
def pair():
    nic_a, nic_b = LoopbackNicPair()
    with Stack(nic_a, "10.0.0.1/24") as a, Stack(nic_b, "10.0.0.2/24", gateway="10.0.0.254") as b:
        listener = b.socket(SocketType.STREAM)
        listener.bind(IpAddress.any(80))
        listener.listen()
        client = a.socket(SocketType.STREAM)
        client.connect(IpAddress.parse("10.0.0.2:80"))
        server, _ = listener.accept()
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        wait_for(lambda: "18" in [str(s["recv_q"]) for s in b.snapshot()["sockets"]], "18 bytes waiting")
        yield a, b, client


def column(lines: list[str], header: str) -> int:
    return lines[0].index(header)


def test_ss_view_lists_the_listener_and_the_established_connection_in_aligned_columns(pair):
    a, b, client = pair
    port = client.local_address().port
    lines = show(b, "ss").splitlines()
    assert lines[0].split()[:4] == ["Netid", "State", "Recv-Q", "Send-Q"]
    listen = next(line for line in lines if " LISTEN " in line)
    estab = next(line for line in lines if " ESTABLISHED " in line)
    assert re.match(r"tcp +LISTEN +0 +128 +0\.0\.0\.0:80 +0\.0\.0\.0:\* +syn_queue:0 ", listen), listen
    assert re.match(rf"tcp +ESTABLISHED +18 +0 +10\.0\.0\.2:80 +10\.0\.0\.1:{port} +cwnd:\d+ ", estab), estab
    # Numbers end where their header ends; addresses start where theirs starts.
    recv_end = column(lines, "Recv-Q") + len("Recv-Q")
    assert listen[recv_end - 1] == "0" and estab[recv_end - 2:recv_end] == "18"
    local = column(lines, "Local Address:Port")
    assert listen[local:].startswith("0.0.0.0:80") and estab[local:].startswith("10.0.0.2:80")


def test_neigh_route_and_ip_views(pair):
    a, b, _ = pair
    neigh = show(b, "neigh").splitlines()
    assert neigh[0].split() == ["Address", "HWaddress", "State", "Confirmed", "Expires", "Queued"]
    assert re.match(rf"10\.0\.0\.1 +{a.iface.mac} +REACHABLE +\d+\.\ds +\d+\.\ds +0$", neigh[1]), neigh
    route = show(b, "route")
    assert re.search(r"^0\.0\.0\.0/0 +gateway +10\.0\.0\.254 +10\.0\.0\.2$", route, re.M), route
    assert re.search(r"^10\.0\.0\.0/24 +link +- +10\.0\.0\.2$", route, re.M), route
    ip = show(b, "ip")
    assert "<UP> mtu 1500" in ip and f"link/ether {b.iface.mac}" in ip
    assert "inet 10.0.0.2/24" in ip and "gateway 10.0.0.254" in ip


def test_all_shows_every_view_under_its_title_and_rings_say_when_there_are_none(pair):
    _, b, _ = pair
    text = show(b)
    assert [line for line in text.splitlines() if line.startswith("== ")] == [f"== {v} ==" for v in VIEWS]
    assert "no rings: this NIC has no rings (LoopbackNic)" in text
    assert re.search(r"^counters: rx_frames \d+, tx_frames \d+$", text, re.M), text


def test_an_unknown_view_is_refused():
    with pytest.raises(ValueError, match="unknown view 'arp': one of all, ip, neigh, route, ss, rings"):
        render({}, "arp")


def test_table_aligns_numbers_right_and_writes_none_as_a_dash():
    assert table(["Name", "N"], [["a", 5], ["bbb", 120], ["c", None]]) == [
        "Name    N", "a       5", "bbb   120", "c       -"]


def _snap(t: float, **counters) -> dict:
    return {"time": t, "nic": {"counters": counters}}


def test_rates_between_two_snapshots():
    rate = rates(_snap(10.0, rx_frames=100, rx_bytes=10_000, tx_frames=50),
                 _snap(12.0, rx_frames=300, rx_bytes=30_000, tx_frames=60))
    assert rate == {"seconds": 2.0, "rx_frames": 100.0, "rx_bytes": 10_000.0, "tx_frames": 5.0, "tx_bytes": None}
    assert rates(_snap(10.0, rx_frames=5), _snap(10.0, rx_frames=9)) is None       # no time passed
    assert rates(_snap(10.0, rx_frames=500), _snap(11.0, rx_frames=9)) is None     # a new stack: counters went back
    text = render({"nic": {"rings": [], "driver": "X"}}, "rings", rate)
    assert text.splitlines()[-1] == "rates over 2.0 s: rx 100 frames/s 10.0 kB/s, tx 5 frames/s"


class _Snapshots:
    """Snapshots of one stack whose NIC moves 10 frames of 1000 bytes a second."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> dict:
        n = int(self.t * 10)
        snap = {"time": self.t, "interface": {"mac": "02:00:00:00:00:01", "mtu": 1500, "addresses": ["10.0.0.2/24"],
                                              "gateway": None},
                "neighbours": [], "routes": [], "sockets": [],
                "nic": {"driver": "virtio-net", "link": True, "rings": [],
                        "counters": {"rx_frames": n, "rx_bytes": 1000 * n, "tx_frames": n, "tx_bytes": 1000 * n}}}
        return snap

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_live_mode_appends_stamped_snapshots_with_rates_when_not_a_terminal():
    source = _Snapshots()
    out = io.StringIO()
    done = run_monitor(source, out, view="rings", interval=1.0, refreshes=3, sleep=source.sleep,
                       source="stack at /x.sock", wall=lambda: 0.0)
    assert done == 3
    text = out.getvalue()
    assert CLEAR not in text
    assert text.count("--- stack at /x.sock at 1970-01-01 00:00:00.000 UTC ---\n") == 3
    assert text.count("rates over 1.0 s: rx 10 frames/s 10.0 kB/s, tx 10 frames/s 10.0 kB/s") == 2  # from the 2nd


def test_live_mode_redraws_a_terminal_and_once_prints_the_tables_alone():
    source = _Snapshots()
    out = io.StringIO()
    run_monitor(source, out, view="ip", interval=0.5, tty=True, refreshes=2, sleep=source.sleep, source="s")
    assert out.getvalue().count(CLEAR) == 2 and out.getvalue().startswith(CLEAR + "s at ")
    once = io.StringIO()
    assert run_monitor(source, once, view="ip", sleep=pytest.fail) == 1
    assert once.getvalue() == render(source(), "ip") + "\n"
