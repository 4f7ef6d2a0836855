"""Helpers shared by the STREAM socket tests (test_socket_tcp*.py): a listener,
a connected pair, a TCP frame parser for impairment hooks (the bounded wait
is support.waiting's).
Not a test module; each test module keeps its own fixtures (their configs differ)."""
from __future__ import annotations

from stack import IpAddress, SocketOption, SocketType
from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr
from stack.wire.tcp import TcpRepr

WAIT = 5.0  # generous bound for anything that should take milliseconds


def listener(st, port=7, backlog=8, **options):
    """A STREAM socket listening on `port` of stack `st`; options by SocketOption name."""
    s = st.socket(SocketType.STREAM)
    for opt, value in options.items():
        s.set_option(SocketOption[opt], value)
    s.bind(IpAddress.any(port))
    s.listen(backlog)
    s.set_timeout(WAIT)
    return s


def connected_pair(a, b, port=7, **options):
    """(client on a, server-side socket on b, listener on b); options go to the listener."""
    lst = listener(b, port, **options)
    client = a.socket(SocketType.STREAM)
    client.set_timeout(WAIT)
    client.connect(("10.0.0.2", port))
    server, _ = lst.accept()
    server.set_timeout(WAIT)
    return client, server, lst


def tcp_of(frame: bytes):
    """(Ipv4Repr, TcpRepr, payload) of a TCP frame, or None."""
    eth, payload = EthernetRepr.parse(frame)
    if eth.ethertype != EtherType.IPV4:
        return None
    ip, data = Ipv4Repr.parse(payload)
    if ip.protocol != IpProtocol.TCP:
        return None
    seg, body = TcpRepr.parse(data, ip.src, ip.dst)
    return ip, seg, bytes(body)
