"""The stack's read-only snapshot (what the monitor shows): the ARP cache's
entries with their states, the route table's rules, and a whole stack's
snapshot with real sockets and TCP connections open, on the loopback NIC
pair and on the virtio-net driver (its rings)."""
from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from stack import IpAddress, LoopbackNicPair, SocketType, Stack
from stack.arp_cache import ArpCache
from stack.drivers import VirtioNetNic
from stack.routes import RouteKind, RouteTable
from stack.wire import MacAddress

from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.waiting import wait_for

MAC = MacAddress("02:00:00:00:00:07")


# -- the ARP cache's entries -------------------------------------------------------

def test_neighbours_say_incomplete_reachable_and_probe_with_their_ages():
    cache = ArpCache(tries=3, retry_interval=1.0, reachable_time=60.0)
    waiting, known = IPv4Address("10.0.0.5"), IPv4Address("10.0.0.7")
    cache.enqueue(waiting, "packet", now=0.0)
    cache.poll(0.0)                                  # the first request goes out
    cache.learn(known, MAC, now=10.0, create=True)
    rows = {n.ip: n for n in cache.neighbours(now=25.0)}
    assert rows[waiting].state == "INCOMPLETE" and rows[waiting].mac is None
    assert rows[waiting].queued == 1 and rows[waiting].tries == 1 and rows[waiting].confirmed is None
    assert rows[known].state == "REACHABLE" and rows[known].mac == MAC
    assert rows[known].confirmed == pytest.approx(15.0) and rows[known].expires_in == pytest.approx(45.0)
    cache.lookup(known, now=68.0)                    # in use in its last 3 s: it probes
    assert [n.state for n in cache.neighbours(now=68.0) if n.ip == known] == ["PROBE"]
    cache.learn(known, MAC, now=68.5, create=False)  # the answer renews it
    assert [(n.state, n.confirmed) for n in cache.neighbours(now=69.0) if n.ip == known] == [("REACHABLE", 0.5)]


def test_an_aged_out_neighbour_is_not_listed_and_listing_changes_nothing():
    cache = ArpCache(reachable_time=5.0)
    cache.learn(IPv4Address("10.0.0.7"), MAC, now=0.0, create=True)
    assert cache.neighbours(now=6.0) == []
    assert cache.neighbours(now=6.0) == []
    assert cache.entries(now=4.0) == {IPv4Address("10.0.0.7"): MAC}     # listing removed nothing


# -- the route table's rules ------------------------------------------------------------

def test_route_entries_list_what_lookup_follows():
    table = RouteTable([IPv4Interface("10.0.0.2/24"), IPv4Interface("192.168.9.1/31")], IPv4Address("10.0.0.254"))
    rows = [(str(r.destination), r.kind, str(r.src), r.next_hop and str(r.next_hop)) for r in table.entries()]
    assert rows == [
        ("10.0.0.2/32", RouteKind.LOCAL, "10.0.0.2", None),
        ("10.0.0.255/32", RouteKind.BROADCAST, "10.0.0.2", None),
        ("10.0.0.0/24", RouteKind.LINK, "10.0.0.2", None),
        ("192.168.9.1/32", RouteKind.LOCAL, "192.168.9.1", None),     # a /31 has no broadcast (RFC 3021)
        ("192.168.9.0/31", RouteKind.LINK, "192.168.9.1", None),
        ("127.0.0.0/8", RouteKind.LOCAL, "127.0.0.1", None),
        ("255.255.255.255/32", RouteKind.BROADCAST, "10.0.0.2", None),
        ("0.0.0.0/0", RouteKind.GATEWAY, "10.0.0.2", "10.0.0.254"),
    ]
    # Each entry agrees with lookup() for an address it covers.
    for entry in table.entries():
        probe = entry.destination.network_address if entry.destination.prefixlen else IPv4Address("8.8.8.8")
        if entry.destination == IPv4Network("127.0.0.0/8"):
            probe = IPv4Address("127.0.0.1")
        assert table.lookup(probe).kind is entry.kind, entry


# -- a whole stack ---------------------------------------------------------------------------

@pytest.fixture
def stacks():
    nic_a, nic_b = LoopbackNicPair()
    with Stack(nic_a, "10.0.0.1/24", gateway="10.0.0.254") as a, Stack(nic_b, "10.0.0.2/24") as b:
        yield a, b


def open_connection(a: Stack, b: Stack, port: int = 7):
    listener = b.socket(SocketType.STREAM)
    listener.bind(IpAddress.any(port))
    listener.listen(16)
    client = a.socket(SocketType.STREAM)
    client.connect(IpAddress.parse(f"10.0.0.2:{port}"))
    server, _ = listener.accept()
    return listener, client, server


def sockets_by(snap: dict, netid: str, state: str) -> list[dict]:
    return [s for s in snap["sockets"] if s["netid"] == netid and s["state"] == state]


def test_snapshot_shows_the_interface_neighbours_routes_sockets_and_counters(stacks):
    a, b = stacks
    listener, client, server = open_connection(a, b)
    udp = b.socket(SocketType.DATAGRAM)
    udp.bind(IpAddress.any(5353))
    peer_udp = a.socket(SocketType.DATAGRAM)
    peer_udp.connect(IpAddress.parse("10.0.0.2:5353"))
    peer_udp.send(b"x" * 100)
    client.sendall(b"hello")
    wait_for(lambda: sockets_by(b.snapshot(), "tcp", "ESTABLISHED")[0]["recv_q"] == 5, "5 unread bytes in Recv-Q")
    wait_for(lambda: [s for s in b.snapshot()["sockets"] if s["netid"] == "udp" and s["recv_q"]], "the datagram queued")
    snap = b.snapshot()
    assert json.loads(json.dumps(snap)) == snap                  # plain data, JSON as it is
    assert snap["interface"] == {"mac": str(b.iface.mac), "mtu": 1500, "addresses": ["10.0.0.2/24"], "gateway": None}
    assert [(n["ip"], n["mac"], n["state"]) for n in snap["neighbours"]] == [("10.0.0.1", str(a.iface.mac), "REACHABLE")]
    assert {"destination": "10.0.0.0/24", "kind": "link", "src": "10.0.0.2", "via": None} in snap["routes"]
    [lst] = sockets_by(snap, "tcp", "LISTEN")
    assert (lst["local"], lst["peer"], lst["send_q"], lst["recv_q"]) == ("0.0.0.0:7", "0.0.0.0:*", 16, 0)
    [conn] = sockets_by(snap, "tcp", "ESTABLISHED")
    assert conn["local"] == "10.0.0.2:7" and conn["peer"] == f"10.0.0.1:{client.local_address().port}"
    assert conn["recv_q"] == 5 and conn["details"]["bytes_received"] == 5
    [dgram] = sockets_by(snap, "udp", "UNCONN")
    assert dgram["local"] == "0.0.0.0:5353" and dgram["details"]["datagrams"] == 1 and dgram["recv_q"] > 100
    assert snap["counters"]["tcp"]["rx_segments"] > 0 and snap["counters"]["udp"]["rx"] == 1
    assert snap["nic"]["driver"] == "LoopbackNic" and snap["nic"]["link"] is True and snap["nic"]["rings"] == []
    assert snap["running"] is True
    # The other side: its connected UDP socket, its connection, its gateway route.
    other = a.snapshot()
    [estab_udp] = sockets_by(other, "udp", "ESTAB")
    assert estab_udp["peer"] == "10.0.0.2:5353"
    assert [c["peer"] for c in sockets_by(other, "tcp", "ESTABLISHED")] == ["10.0.0.2:7"]
    assert {"destination": "0.0.0.0/0", "kind": "gateway", "src": "10.0.0.1", "via": "10.0.0.254"} in other["routes"]
    for sock in (listener, client, server, udp, peer_udp):
        sock.close()


def test_snapshot_follows_a_closing_connection(stacks):
    a, b = stacks
    listener, client, server = open_connection(a, b)
    client.close()
    wait_for(lambda: [c["state"] for c in a.snapshot()["sockets"] if c["peer"] == "10.0.0.2:7"] == ["FIN-WAIT-2"],
             "the closing side in FIN-WAIT-2")
    assert [c["state"] for c in sockets_by(b.snapshot(), "tcp", "CLOSE-WAIT")] == ["CLOSE-WAIT"]
    server.close()
    wait_for(lambda: [c["state"] for c in a.snapshot()["sockets"] if c["peer"] == "10.0.0.2:7"] == ["TIME-WAIT"],
             "the closing side in TIME-WAIT")
    listener.close()


def test_snapshot_shows_a_neighbour_being_resolved(stacks):
    a, _ = stacks
    sock = a.socket(SocketType.DATAGRAM)
    sock.send_to(b"anyone?", IpAddress.parse("10.0.0.77:9"))
    rows = [n for n in a.snapshot()["neighbours"] if n["ip"] == "10.0.0.77"]
    assert [(n["state"], n["mac"], n["queued"]) for n in rows] == [("INCOMPLETE", None, 1)]
    sock.close()


# -- the virtio-net driver's rings ------------------------------------------------------------

@pytest.fixture
def virtio_stacks(tmp_path, datapath):
    bg = BackgroundSwitch()
    nics = []
    try:
        for name in ("a", "b"):
            bg.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock")))
            nics.append(VirtioNetNic(str(tmp_path / f"{name}.sock"), queue_size=256))
        with Stack(nics[0], "10.0.0.1/24") as a, Stack(nics[1], "10.0.0.2/24") as b:
            yield a, b
    finally:
        for nic in nics:
            nic.close()
        bg.close()


def test_virtio_rings_in_the_snapshot(virtio_stacks):
    a, b = virtio_stacks
    listener, client, server = open_connection(a, b)
    client.sendall(b"y" * 50_000)
    got = bytearray()
    while len(got) < 50_000:
        got += server.recv(65536)
    nic = b.snapshot()["nic"]
    assert nic["driver"] == "virtio-net" and nic["link"] is True and nic["queue_size"] == 256
    assert "VERSION_1" in nic["features"] and "MRG_RXBUF" in nic["features"]
    rings = {r["name"]: r for r in nic["rings"]}
    assert set(rings) == {"rx", "tx"}
    for r in rings.values():
        assert r["size"] == 256
        assert r["in_flight"] == (r["avail_idx"] - r["last_used"]) & 0xFFFF <= 256
        assert r["used_pending"] == (r["used_idx"] - r["last_used"]) & 0xFFFF <= r["in_flight"]
        assert r["frames"] > 0 and r["bytes"] > 0 and r["drops"] == 0
    assert rings["rx"]["in_flight"] == 256               # every receive buffer is offered back at once
    assert rings["rx"]["bytes"] >= 50_000                # the data came through the RX ring (TSO: in few frames)
    assert rings["rx"]["frames"] == nic["counters"]["rx_frames"] and rings["tx"]["kicks"] == nic["counters"]["tx_kicks"]
    assert rings["tx"]["kicks"] > 0 and rings["rx"]["interrupts"] > 0
    assert rings["rx"]["event_idx"] == (rings["rx"]["used_event"] is not None)
    for sock in (listener, client, server):
        sock.close()


def test_a_closed_virtio_nic_has_no_rings(tmp_path, datapath):
    with BackgroundSwitch() as bg:
        bg.add_port(VhostUserPort("a", str(tmp_path / "a.sock")))
        nic = VirtioNetNic(str(tmp_path / "a.sock"), queue_size=64)
        assert [r["name"] for r in nic.snapshot()["rings"]] == ["rx", "tx"]
        nic.close()
        snap = nic.snapshot()
        assert snap["link"] is False and snap["rings"] == []
