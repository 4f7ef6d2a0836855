"""A call made for the other kind of socket fails as POSIX/Linux says, with an OSError and its errno
(never an AttributeError): listen/accept on a datagram socket, send_to on a stream socket..."""
import errno

import pytest

from stack import LoopbackNicPair, SocketOption, SocketType, Stack
from support.tcp_sockets import WAIT


@pytest.fixture
def stacks():
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24", privileged=True).start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    yield a, b
    a.stop()
    b.stop()
    pair.close()


@pytest.mark.parametrize("kind", [SocketType.DATAGRAM, SocketType.RAW])
def test_listen_and_accept_on_a_datagram_socket_are_eopnotsupp(stacks, kind):
    a, _ = stacks
    with a.socket(kind) as s:
        with pytest.raises(OSError) as exc:
            s.listen()
        assert exc.value.errno == errno.EOPNOTSUPP and "STREAM" in str(exc.value)
        with pytest.raises(OSError) as exc:
            s.listen(5)
        assert exc.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as exc:
            s.accept()
        assert exc.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as exc:
        s.accept()
    assert exc.value.errno == errno.EBADF, "a closed socket says so first, as Linux"


def test_tcp_only_things_on_a_datagram_socket(stacks):
    a, _ = stacks
    with a.socket(SocketType.DATAGRAM) as s:
        with pytest.raises(OSError) as exc:
            s.set_option(SocketOption.TCP_NO_DELAY, True)
        assert exc.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as exc:
            s.tcp_info()
        assert exc.value.errno == errno.ENOPROTOOPT


def test_sendall_on_a_connected_datagram_socket_sends_one_datagram(stacks):
    a, b = stacks
    with b.socket(SocketType.DATAGRAM) as server, a.socket(SocketType.DATAGRAM) as client:
        server.bind(("0.0.0.0", 5353))
        server.set_timeout(WAIT)
        with pytest.raises(OSError) as exc:
            client.sendall(b"nobody")
        assert exc.value.errno in (errno.EDESTADDRREQ, errno.ENOTCONN)
        client.connect(("10.0.0.2", 5353))
        assert client.sendall(b"whole datagram") is None
        assert server.recv_from(100)[0] == b"whole datagram"


def test_send_to_on_a_stream_socket(stacks):
    a, _ = stacks
    with a.socket(SocketType.STREAM) as s:
        with pytest.raises(OSError) as exc:
            s.send_to(b"x", ("10.0.0.2", 7))
        assert exc.value.errno == errno.ENOTCONN
