"""A socket its user drops without closing it is closed when garbage-collected, with a
ResourceWarning naming it, as the standard library's sockets are; whatever thread the
collector runs on, even one holding the stack's lock."""
import errno
import gc
import threading
import warnings

import pytest

from stack import LoopbackNicPair, SocketType, Stack
from support.tcp_sockets import WAIT, connected_pair, listener
from support.waiting import wait_for


@pytest.fixture
def stacks():
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24").start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    yield a, b
    a.stop()
    b.stop()
    pair.close()


def _drop(holder: list) -> list[str]:
    """Drop the only reference to the socket in ``holder``, collect, return the ResourceWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()  # (earlier tests' garbage is not this test's business)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        holder.clear()
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def _port_free(st, kind, port) -> bool:
    s = st.socket(kind)
    try:
        s.bind(("0.0.0.0", port))
        return True
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE, exc
        return False
    finally:
        s.close()


def test_a_dropped_datagram_socket_warns_and_frees_its_port(stacks):
    a, _ = stacks
    holder = [a.socket(SocketType.DATAGRAM)]
    holder[0].bind(("0.0.0.0", 5353))
    assert not _port_free(a, SocketType.DATAGRAM, 5353)
    assert _drop(holder) == ["unclosed <Socket DATAGRAM 0.0.0.0:5353>"]
    wait_for(lambda: _port_free(a, SocketType.DATAGRAM, 5353), "the collected socket's port to be free")


def test_a_dropped_listener_warns_and_frees_its_port(stacks):
    _, b = stacks
    holder = [listener(b, port=8080)]
    assert _drop(holder) == ["unclosed <Socket STREAM 0.0.0.0:8080 LISTEN>"]
    wait_for(lambda: _port_free(b, SocketType.STREAM, 8080), "the collected listener's port to be free")


def test_a_dropped_connection_is_closed_towards_the_peer(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    lst.close()
    holder = [client]
    del client
    (message,) = _drop(holder)
    assert message.startswith("unclosed <Socket STREAM 10.0.0.1:") and "-> 10.0.0.2:7" in message
    assert server.recv(10) == b"", "the peer sees the end of the stream (FIN)"
    server.close()


def test_a_dropped_connection_with_unread_data_is_reset(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    lst.close()
    server.sendall(b"never read")
    wait_for(lambda: client.tcp_info().recv_queue == 10, "the data to arrive")
    holder = [client]
    del client
    assert len(_drop(holder)) == 1
    with pytest.raises(ConnectionResetError):
        while server.recv(10):
            pass
    server.close()


def test_a_collection_while_the_stack_lock_is_held_does_not_deadlock(stacks):
    a, _ = stacks
    holder = [a.socket(SocketType.DATAGRAM)]
    holder[0].bind(("0.0.0.0", 5353))
    with a.lock:  # as when the collector runs on the stack's thread in the middle of its work
        messages = _drop(holder)
    assert messages == ["unclosed <Socket DATAGRAM 0.0.0.0:5353>"]
    wait_for(lambda: _port_free(a, SocketType.DATAGRAM, 5353), "the port to be free once the lock is free")


def test_a_collection_on_another_thread(stacks):
    a, _ = stacks
    holder = [a.socket(SocketType.DATAGRAM)]
    holder[0].bind(("0.0.0.0", 5353))
    t = threading.Thread(target=_drop, args=(holder,))
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    wait_for(lambda: _port_free(a, SocketType.DATAGRAM, 5353), "the port to be free")


def test_closed_sockets_and_stopped_stacks_give_no_warning(stacks):
    a, _ = stacks
    holder = [a.socket(SocketType.STREAM)]
    holder[0].close()
    assert _drop(holder) == []
    holder = [a.socket(SocketType.DATAGRAM)]
    a.stop()  # closes every socket of the stack
    assert _drop(holder) == []
