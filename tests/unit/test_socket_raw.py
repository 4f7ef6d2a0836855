"""RAW ICMP sockets: ping both ways, privilege, filtering."""
import errno

import pytest

from stack import IpAddress, LoopbackNicPair, Socket, SocketType, Stack
from stack.wire import (
    DestUnreachable,
    DestUnreachableCode,
    EchoReply,
    EchoRequest,
    IpProtocol,
    Ipv4Repr,
    emit_icmpv4,
    parse_icmpv4,
)

WAIT = 5.0


@pytest.fixture
def stacks():
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24", privileged=True).start()
    b = Stack(pair.b, "10.0.0.2/24", privileged=True).start()
    yield a, b
    a.stop()
    b.stop()
    pair.close()


def raw(st):
    s = st.socket(SocketType.RAW, IpProtocol.ICMP)
    s.set_timeout(WAIT)
    return s


def receive_icmp(sock, want):
    """Next ICMP message of type ``want`` on a raw socket (IP header included)."""
    while True:
        packet, sender = sock.recv_from(65535)
        ip, payload = Ipv4Repr.parse(packet)
        assert ip.protocol == IpProtocol.ICMP and sender == IpAddress(ip.src, 0)
        msg = parse_icmpv4(payload)
        if isinstance(msg, want):
            return ip, msg


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
def test_ping_both_ways(stacks, direction):
    a, b = stacks if direction == "a->b" else reversed(stacks)
    dst = "10.0.0.2" if direction == "a->b" else "10.0.0.1"
    pinger, watcher = raw(a), raw(b)
    request = emit_icmpv4(EchoRequest(0xBEEF, 1, b"are you there"))
    assert pinger.send_to(request, IpAddress(dst, 0)) == len(request)
    ip, reply = receive_icmp(pinger, EchoReply)
    assert str(ip.src) == dst
    assert reply == EchoReply(0xBEEF, 1, b"are you there"), "the stack itself answered"
    _, seen = receive_icmp(watcher, EchoRequest)
    assert seen.ident == 0xBEEF, "raw sockets get a copy of incoming ICMP"
    pinger.close()
    watcher.close()


def test_ping_own_address_and_loopback(stacks):
    a, _ = stacks
    s = raw(a)
    s.send_to(emit_icmpv4(EchoRequest(1, 1, b"me")), "10.0.0.1:0")
    _, reply = receive_icmp(s, EchoReply)
    assert reply.data == b"me"
    s.connect("127.0.0.1:0")
    s.send(emit_icmpv4(EchoRequest(1, 2, b"lo")))
    ip, reply = receive_icmp(s, EchoReply)
    assert (str(ip.src), reply.seq) == ("127.0.0.1", 2)
    s.close()


def test_raw_socket_sees_port_unreachable(stacks):
    a, _ = stacks
    watcher = raw(a)
    with a.socket() as udp:
        udp.send_to(b"x", "10.0.0.2:9")
    _, msg = receive_icmp(watcher, DestUnreachable)
    assert msg.code == DestUnreachableCode.PORT
    watcher.close()


def test_connected_raw_socket_filters_by_peer(stacks):
    a, b = stacks
    s = raw(a)
    s.connect(IpAddress.parse("10.0.0.2:0"))
    s.send(emit_icmpv4(EchoRequest(2, 1, b"")))
    ip, _ = receive_icmp(s, EchoReply)
    assert str(ip.src) == "10.0.0.2"
    s.bind("10.0.0.1:0")
    assert s.local_address() == IpAddress.parse("10.0.0.1:0")
    with pytest.raises(OSError) as exc:
        s.bind("10.0.0.7:0")
    assert exc.value.errno == errno.EADDRNOTAVAIL
    s.close()


def test_raw_needs_privileged_stack():
    pair = LoopbackNicPair()
    with Stack(pair.a, "10.0.0.1/24") as st:
        with pytest.raises(PermissionError) as exc:
            st.socket(SocketType.RAW)
        assert exc.value.errno == errno.EPERM
    pair.close()


def test_raw_only_icmp(stacks):
    a, _ = stacks
    with pytest.raises(OSError) as exc:
        Socket(SocketType.RAW, IpProtocol.UDP, stack=a)
    assert exc.value.errno == errno.EPROTONOSUPPORT
    s = Socket(SocketType.RAW, stack=a)
    assert s.protocol == IpProtocol.ICMP
    with pytest.raises(OSError) as exc:
        s.send(b"x")
    assert exc.value.errno == errno.EDESTADDRREQ
    s.close()
