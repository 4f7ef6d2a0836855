"""SocketOption.TOS (RFC 9293 MUST-48: the application can set the Diffserv
field): the byte reaches the IP header of every packet the socket sends, on
two running stacks joined by a LoopbackNicPair."""
import errno

import pytest

from stack import Impairment, IpAddress, LoopbackNicPair, NicOffloads, Shutdown, SocketOption, SocketType, Stack
from stack.tcp.config import TcpConfig
from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr

WAIT = 5.0
EF = 0xB8      # DSCP 46 (expedited forwarding) << 2
CS1 = 0x20     # DSCP 8


def stacks_on(pair):
    a = Stack(pair.a, "10.0.0.1/24").start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    return a, b


@pytest.fixture(params=["plain", "tso"])
def link(request):
    offloads = NicOffloads.NONE if request.param == "plain" else NicOffloads.TX_CSUM | NicOffloads.TSO
    pair = LoopbackNicPair(offloads=offloads)
    a, b = stacks_on(pair)
    yield pair, a, b
    a.stop()
    b.stop()
    pair.close()


def record(nic) -> list[tuple[int, int, int]]:
    """(protocol, tos, IP total length) of every IPv4 packet `nic` transmits from now on."""
    seen = []

    def look(frame: bytes) -> bool:
        eth, payload = EthernetRepr.parse(frame)
        if eth.ethertype == EtherType.IPV4:
            ip, _ = Ipv4Repr.parse(payload)
            seen.append((ip.protocol, ip.tos, ip.payload_len + 20))
        return False                           # a hook that never drops

    nic.impairment = Impairment(loss=look)
    return seen


def test_datagram_tos_is_on_the_wire_whole(link):
    pair, a, b = link
    server = b.socket(SocketType.DATAGRAM)
    server.bind(IpAddress.any(7000))
    server.set_timeout(WAIT)
    s = a.socket(SocketType.DATAGRAM)
    assert s.get_option(SocketOption.TOS) == 0
    s.set_option(SocketOption.TOS, EF | 0x01)   # datagram sockets own their ECN bits, as on Linux
    assert s.get_option(SocketOption.TOS) == EF | 0x01
    seen = record(pair.a)
    s.send_to(b"x" * 3000, "10.0.0.2:7000")     # three fragments: all carry it
    assert server.recv(4000) == b"x" * 3000
    udp = [tos for proto, tos, _ in seen if proto == IpProtocol.UDP]
    assert udp == [EF | 0x01] * 3, seen
    s.close()
    server.close()


@pytest.mark.parametrize("bad", [-1, 256, True, "ef", 1.5])
def test_bad_tos_values_are_einval(link, bad):
    _, a, _ = link
    for kind in (SocketType.DATAGRAM, SocketType.STREAM):
        with a.socket(kind) as s:
            with pytest.raises(OSError) as exc:
                s.set_option(SocketOption.TOS, bad)
            assert exc.value.errno == errno.EINVAL


def test_stream_tos_marks_every_segment_both_ways(link):
    """The client's SYN, data and FIN carry its TOS; the listener's SYN-ACK
    and the accepted socket's segments carry the listener's. A STREAM socket
    drops the ECN bits it is given (TCP owns them), like Linux."""
    pair, a, b = link
    server = b.socket(SocketType.STREAM)
    server.set_option(SocketOption.TOS, CS1)
    server.bind(IpAddress.any(8000))
    server.listen(1)
    server.set_timeout(WAIT)
    client = a.socket(SocketType.STREAM)
    client.set_option(SocketOption.TOS, EF | 0x03)
    assert client.get_option(SocketOption.TOS) == EF
    client.set_timeout(WAIT)
    from_a, from_b = record(pair.a), record(pair.b)
    client.connect(IpAddress("10.0.0.2", 8000))
    conn, _ = server.accept()
    conn.set_timeout(WAIT)
    assert conn.get_option(SocketOption.TOS) == CS1       # inherited from the listener
    blob = bytes(range(256)) * 1000
    client.sendall(blob)
    client.shutdown(Shutdown.WRITE)
    got = b""
    while len(got) < len(blob):
        chunk = conn.recv(65536)
        assert chunk, "early EOF"
        got += chunk
    assert got == blob and conn.recv(10) == b""
    conn.sendall(b"reply")
    conn.close()
    assert client.recv(10) == b"reply"
    client.close()
    tcp_a = [(tos, size) for proto, tos, size in from_a if proto == IpProtocol.TCP]
    tcp_b = [(tos, size) for proto, tos, size in from_b if proto == IpProtocol.TCP]
    assert len(tcp_a) >= 10 and {tos for tos, _ in tcp_a} == {EF}, tcp_a[:5]
    assert len(tcp_b) >= 3 and {tos for tos, _ in tcp_b} == {CS1}, tcp_b[:5]
    server.close()
    if pair.a.offloads & NicOffloads.TSO:
        # The loopback NIC cuts TSO frames before the hook sees them: the pieces carry the byte.
        assert a.counters()["tcp"].get("tx_tso", 0) > 0 and pair.a.counters["tx_gso"] > 0, \
            "no TSO segment was sent: the TSO path went untested"


def test_config_rejects_ecn_bits():
    assert TcpConfig(tos=EF).tos == EF
    for bad in (EF | 1, -4, 256):
        with pytest.raises(ValueError):
            TcpConfig(tos=bad)
