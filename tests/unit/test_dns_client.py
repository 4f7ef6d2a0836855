"""DnsClient on a stack, against a small DNS server of the test's on a second stack
(hand-built answers; UDP and TCP); both stacks on a virtual clock where time matters."""
import threading

import pytest

from stack import IpAddress, LoopbackNicPair, SocketType, Stack, VirtualClock
from stack.dns.cache import DnsCache
from stack.dns.client import DnsClient
from stack.dns.errors import DnsError, DnsTimeout, MalformedMessage, NameNotFound, NoData
from stack.dns.hosts import HostsTable
from stack.dns.message import parse_message
from stack.dns.resolver import TcpMessageReader, tcp_frame
from support.dns_wire import QNAME_AT, a, aaaa, answer, header, name, pointer, question, rr, soa

SERVER = "10.0.0.2"
ABSENT = "10.0.0.77"  # nobody answers ARP for it


class FakeDnsServer:
    """Answers on UDP and TCP port 53 of ``stack`` with ``handler(query_message, tcp) -> bytes | None``."""

    def __init__(self, stack, handler) -> None:
        self.handler = handler
        self.queries: list[tuple[str, bool, int]] = []  # (name, tcp, source port)
        self.messages = []  # the queries as parsed
        self.udp = stack.socket(SocketType.DATAGRAM)
        self.udp.bind(IpAddress.any(53))
        self.udp.set_timeout(0.5)
        self.tcp = stack.socket(SocketType.STREAM)
        self.tcp.bind(IpAddress.any(53))
        self.tcp.listen(4)
        self.tcp.set_timeout(0.5)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_udp, self._serve_tcp)]
        for t in self._threads:
            t.start()

    def _answer(self, data: bytes, tcp: bool, port: int) -> bytes | None:
        msg = parse_message(data)
        self.messages.append(msg)
        self.queries.append((msg.questions[0].name, tcp, port))
        return self.handler(msg, tcp)

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recv_from(65535)
            except OSError:
                continue
            out = self._answer(data, False, peer.port)
            if out is not None:
                self.udp.send_to(out, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.tcp.accept()
            except OSError:
                continue
            with conn:
                conn.set_timeout(2.0)
                reader, message = TcpMessageReader(), None
                while message is None:
                    message = reader.feed(conn.recv(reader.missing()))
                out = self._answer(message, True, peer.port)
                if out is not None:
                    conn.sendall(tcp_frame(out))

    def close(self) -> None:
        self._stop.set()
        self.udp.close()  # (wakes the threads: time may stand still on a virtual clock)
        self.tcp.close()
        for t in self._threads:
            t.join(5)
            assert not t.is_alive(), "the fake DNS server's thread did not stop"


def reply_to(msg, records, **flags):
    q = msg.questions[0]
    return answer(msg.header.ident, q.name, records, qtype=q.rtype, **flags)


ZONE_SOA = soa(name("example.com"), minimum=120, ttl=600)  # negative answers: cached 120 s


def zone(msg, tcp):
    """www.example.com: 2 A and 1 AAAA; big.example.com: 60 A, truncated over UDP; else NXDOMAIN."""
    q = msg.questions[0]
    if q.name == "www.example.com":
        if q.rtype == 28:
            return reply_to(msg, [aaaa(pointer(QNAME_AT), "2001:db8::80", ttl=30)])
        return reply_to(msg, [a(pointer(QNAME_AT), "192.0.2.80", ttl=30), a(pointer(QNAME_AT), "192.0.2.81", 60)])
    if q.name == "big.example.com":
        if not tcp:
            return reply_to(msg, [], tc=True)
        return reply_to(msg, [a(pointer(QNAME_AT), f"198.51.100.{i}") for i in range(1, 61)])
    if q.name == "alias.example.com":
        return reply_to(msg, [rr(pointer(QNAME_AT), 5, name("www.example.com"), ttl=50),
                              a(name("www.example.com"), "192.0.2.80", ttl=40)])
    if q.name == "v4.example.com":
        if q.rtype == 28:
            return reply_to(msg, [], authority=[ZONE_SOA])  # NODATA
        return reply_to(msg, [a(pointer(QNAME_AT), "192.0.2.4")])
    if q.name == "gone.example.com":
        return reply_to(msg, [], rcode=3, authority=[ZONE_SOA])
    if q.name == "bad.example.com":
        return header(msg.header.ident, an=1) + question(q.name) + rr(pointer(400), 1, b"\0\0\0\0")
    return reply_to(msg, [], rcode=3)


@pytest.fixture
def lab():
    clock = VirtualClock()
    nics = LoopbackNicPair()
    client_stack = Stack(nics.a, "10.0.0.1/24", clock=clock).start()
    server_stack = Stack(nics.b, "10.0.0.2/24", clock=clock).start()
    server = FakeDnsServer(server_stack, zone)
    yield clock, client_stack, server
    server.close()
    client_stack.stop()
    server_stack.stop()
    nics.close()


def test_a_aaaa_nxdomain_and_malformed(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        assert client.resolve("www.example.com") == ["192.0.2.80", "192.0.2.81"]
        assert client.resolve("www.example.com", "AAAA") == ["2001:db8::80"]
        with pytest.raises(NameNotFound, match="nope.example.com"):
            client.resolve("nope.example.com")
        with pytest.raises(MalformedMessage, match=f"malformed answer from {SERVER}"):
            client.resolve("bad.example.com")
    assert all(not tcp for _, tcp, _ in server.queries)


def test_random_source_ports(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER], cache=DnsCache(max_entries=1))
    with clock.flowing():
        for i in range(8):
            with pytest.raises(NameNotFound):
                client.resolve(f"n{i}.example.com")
    ports = [port for _, _, port in server.queries]
    assert ports == client.source_ports and len(set(ports)) >= 7 and all(p >= 1024 for p in ports)


def test_truncated_answer_is_fetched_over_tcp(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        found = client.resolve("big.example.com")
    assert found == [f"198.51.100.{i}" for i in range(1, 61)]
    assert [(n, tcp) for n, tcp, _ in server.queries] == [("big.example.com", False), ("big.example.com", True)]


def test_cache_keeps_answers_for_their_ttl_on_the_stack_clock(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        client.resolve("www.example.com")
    clock.pass_time(29.0)
    with clock.flowing():
        assert client.resolve("www.example.com") == ["192.0.2.80", "192.0.2.81"]
    assert len(server.queries) == 1
    clock.pass_time(1.5)  # the smallest TTL (30 s) has run out
    with clock.flowing():
        client.resolve("www.example.com")
    assert len(server.queries) == 2


def test_a_dead_server_then_a_live_one(lab):
    clock, st, server = lab
    client = DnsClient(st, [ABSENT, SERVER], timeout=1.0, attempts=2)
    with clock.flowing():
        assert client.resolve("www.example.com", "AAAA") == ["2001:db8::80"]
    assert len(server.queries) == 1


def test_timeout_names_every_server_tried(lab):
    clock, st, server = lab
    client = DnsClient(st, [ABSENT, "10.0.0.78"], timeout=0.5, attempts=2)
    with clock.flowing(), pytest.raises(DnsTimeout) as err:
        client.resolve("www.example.com")
    assert ABSENT in str(err.value) and "10.0.0.78" in str(err.value)
    assert server.queries == []


def test_wrong_answers_are_ignored_and_the_lookup_times_out(lab):
    clock, st, server = lab
    server.handler = lambda msg, tcp: answer(msg.header.ident ^ 0x5A5A, msg.questions[0].name,
                                             [a(pointer(QNAME_AT), "6.6.6.6")])
    client = DnsClient(st, [SERVER], timeout=0.5, attempts=1)
    with clock.flowing(), pytest.raises(DnsTimeout):
        client.resolve("www.example.com")
    assert client.ignored == {"wrong id": 1}


def test_hosts_table_and_literals_need_no_server(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER], hosts=HostsTable.parse("10.0.0.5 db.lan\n"))
    assert client.resolve("db.lan") == ["10.0.0.5"]
    assert client.resolve("192.0.2.1") == ["192.0.2.1"]
    assert client.resolve("2001:db8::1", "AAAA") == ["2001:db8::1"]
    with pytest.raises(DnsError, match="IPv6 address, not a A name"):
        client.resolve("2001:db8::1", "A")
    with pytest.raises(DnsError, match="bad DNS server"):
        DnsClient(st, ["dns.example"])
    with pytest.raises(ValueError, match="EDNS payload size must be 512..65535"):
        DnsClient(st, [SERVER], edns_payload=100)
    assert server.queries == []


def test_a_cached_answer_keeps_its_canonical_name_and_chain_and_counts_its_ttl_down(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        first = client.lookup("alias.example.com")
    assert (first.canonical_name, first.aliases, first.ttl, first.origin) == (
        "www.example.com", ("alias.example.com",), 40, "server")
    clock.pass_time(15.0)
    with clock.flowing():
        cached = client.lookup("alias.example.com")
    assert len(server.queries) == 1
    assert (cached.name, cached.canonical_name, cached.aliases, cached.addresses, cached.origin) == (
        first.name, first.canonical_name, first.aliases, first.addresses, "cache")
    assert cached.ttl in (25, 24)  # 40 s less the 15 s in the cache (and the clock's drift while flowing)
    cached.addresses.append("6.6.6.6")  # the caller's copy, not the cache's
    assert client.resolve("alias.example.com") == ["192.0.2.80"]


def test_nxdomain_and_nodata_are_cached_for_the_soa_minimum(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        with pytest.raises(NameNotFound) as first:
            client.resolve("gone.example.com")
        with pytest.raises(NoData) as first_nodata:
            client.resolve("v4.example.com", "AAAA")
    clock.pass_time(100.0)
    with clock.flowing():
        with pytest.raises(NameNotFound) as again:
            client.resolve("gone.example.com")
        with pytest.raises(NoData) as again_nodata:
            client.resolve("v4.example.com", "AAAA")
        assert client.resolve("v4.example.com") == ["192.0.2.4"]  # the A records are another question
    assert str(again.value) == str(first.value) and str(again_nodata.value) == str(first_nodata.value)
    assert first.value.negative_ttl == 120 and again.value.negative_ttl in (20, 19)
    assert [n for n, _, _ in server.queries] == ["gone.example.com", "v4.example.com", "v4.example.com"]
    clock.pass_time(21.0)  # the SOA minimum (120 s) has run out
    with clock.flowing(), pytest.raises(NameNotFound):
        client.resolve("gone.example.com")
    assert len(server.queries) == 4


def test_nxdomain_without_soa_is_not_cached(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        for _ in range(2):
            with pytest.raises(NameNotFound):
                client.resolve("nope.example.com")
    assert len(server.queries) == 2


def test_queries_carry_edns_and_a_server_without_it_gets_plain_queries(lab):
    clock, st, server = lab
    client = DnsClient(st, [SERVER])
    with clock.flowing():
        client.resolve("www.example.com")
    assert server.messages[-1].edns.payload_size == 1232
    server.handler = lambda msg, tcp: header(msg.header.ident, rcode=1, qd=0) if msg.edns else zone(msg, tcp)
    with clock.flowing():
        assert client.resolve("www.example.com", "AAAA") == ["2001:db8::80"]
    assert [m.edns is not None for m in server.messages] == [True, True, False]
    plain = DnsClient(st, [SERVER], edns_payload=None, cache=DnsCache())
    with clock.flowing():
        plain.resolve("v4.example.com")
    assert server.messages[-1].edns is None and len(server.messages) == 4
