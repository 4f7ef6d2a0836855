"""stack.socket_api.Poller: many sockets registered once, waited on again and again."""
import pytest

from stack import IpAddress, LoopbackNicPair, PollEvent, SocketType, Stack
from stack.socket_api import Poller
from support.tcp_sockets import WAIT, WAIT_MS, connected_pair, listener
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


def test_only_the_sockets_with_data_are_reported_level_triggered(stacks):
    a, b = stacks
    lst = listener(b, backlog=20)
    clients, servers = [], []
    for _ in range(10):
        c = a.socket(SocketType.STREAM)
        c.set_timeout(WAIT)
        c.connect(("10.0.0.2", 7))
        clients.append(c)
        servers.append(lst.accept()[0])
    p = Poller()
    for s in servers:
        p.register(s, PollEvent.READ)
    assert p.poll(0) == []
    clients[3].sendall(b"three")
    clients[8].sendall(b"eight")
    ready = {}
    wait_for(lambda: ready.update(p.poll(50)) or len(ready) == 2, "both sockets reported")
    assert ready == {servers[3]: PollEvent.READ, servers[8]: PollEvent.READ}
    assert dict(p.poll(0)) == ready  # level-triggered: still ready, reported again
    assert servers[3].recv(100) == b"three"
    assert dict(p.poll(0)) == {servers[8]: PollEvent.READ}
    p.unregister(servers[8])
    assert p.poll(0) == [] and len(p) == 9
    p.close()
    for sock in [*clients, *servers, lst]:
        sock.close()


def test_write_interest_modify_and_hangup(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    p = Poller()
    p.register(server, PollEvent.READ)
    assert p.poll(0) == []
    p.modify(server, PollEvent.READ | PollEvent.WRITE)
    assert p.poll(0) == [(server, PollEvent.WRITE)]
    p.modify(server, PollEvent.READ)
    client.close()
    ready = []
    wait_for(lambda: ready.extend(p.poll(50)) or ready, "the end of stream reported")
    assert ready[0][0] is server and PollEvent.READ in ready[0][1]  # end of stream is readable
    assert server.recv(10) == b""
    p.close()
    for sock in (server, lst):
        sock.close()


def test_a_ready_socket_whose_event_is_not_asked_for_does_not_spin(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    p = Poller()
    p.register(server, PollEvent.WRITE)
    p.modify(server, PollEvent.NONE)
    client.sendall(b"data")  # readable, but READ is not asked for
    wait_for(lambda: server._revents(PollEvent.READ), "the data")
    assert p.poll(50) == []
    p.modify(server, PollEvent.READ)
    assert p.poll(WAIT_MS) == [(server, PollEvent.READ)]
    p.close()
    for sock in (client, server, lst):
        sock.close()


def test_datagram_sockets_read_and_write(stacks):
    a, b = stacks
    s = b.socket(SocketType.DATAGRAM)
    s.bind(IpAddress.any(53))
    c = a.socket(SocketType.DATAGRAM)
    p = Poller()
    p.register(s, PollEvent.READ)
    p.register(c, PollEvent.WRITE)
    assert p.poll(0) == [(c, PollEvent.WRITE)]  # UDP sends never wait
    p.unregister(c)
    c.send_to(b"q", ("10.0.0.2", 53))
    assert p.poll(WAIT_MS) == [(s, PollEvent.READ)]
    with pytest.raises(KeyError):
        p.register(s)
    p.close()
    for sock in (s, c):
        sock.close()


def test_a_timeout_returns_nothing_and_a_closed_socket_cannot_be_registered(stacks):
    a, b = stacks
    s = b.socket(SocketType.STREAM)
    p = Poller()
    assert p.poll(10) == []
    s.close()
    with pytest.raises(OSError):
        p.register(s)
    p.close()


def _open_descriptors():
    import os

    return len(os.listdir("/proc/self/fd"))


def test_stream_sockets_take_no_descriptor_in_a_poller(stacks):
    # Ten thousand connections must fit a process's descriptor limit: a STREAM socket tells
    # the Poller of its changes itself, and one eventfd wakes the Poller for all of them.
    a, b = stacks
    lst = listener(b, backlog=50)
    clients, servers = [], []
    for _ in range(30):
        c = a.socket(SocketType.STREAM)
        c.set_timeout(WAIT)
        c.connect(("10.0.0.2", 7))
        clients.append(c)
        servers.append(lst.accept()[0])
    before = _open_descriptors()
    p = Poller()
    for s in servers:
        p.register(s, PollEvent.READ)
    assert _open_descriptors() - before == 2  # the Poller's epoll and its one eventfd
    clients[29].sendall(b"last")
    assert p.poll(WAIT_MS) == [(servers[29], PollEvent.READ)]  # woken by a change on the stack's thread
    assert _open_descriptors() - before == 2
    p.close()
    assert _open_descriptors() == before
    for sock in [*clients, *servers, lst]:
        sock.close()


def test_a_stream_socket_closed_while_registered_is_reported_invalid(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    p = Poller()
    p.register(server, PollEvent.READ)
    assert p.poll(0) == []
    server.close()  # (by the stack stopping, say): the loop learns at once, not never
    assert p.poll(WAIT_MS) == [(server, PollEvent.INVALID)]
    p.unregister(server)
    assert p.poll(0) == []
    p.close()
    for sock in (client, lst):
        sock.close()


def test_fileno_still_follows_readiness_after_a_poller(stacks):
    import select

    a, b = stacks
    client, server, lst = connected_pair(a, b)
    p = Poller()
    p.register(server, PollEvent.READ)
    client.sendall(b"x")
    assert p.poll(WAIT_MS) == [(server, PollEvent.READ)]
    fd = server.fileno()  # made now, it starts with the socket's current readiness
    assert select.select([fd], [], [], 0)[0] == [fd]
    assert server.recv(10) == b"x"
    assert select.select([fd], [], [], 0)[0] == []
    p.close()
    for sock in (client, server, lst):
        sock.close()


def test_a_parked_socket_goes_back_to_its_descriptor_once_it_answers(stacks):
    a, b = stacks
    s = b.socket(SocketType.DATAGRAM)
    s.bind(IpAddress.any(53))
    c = a.socket(SocketType.DATAGRAM)
    p = Poller()
    p.register(s, PollEvent.READ)
    fd = p._fd_of[s]
    # Its descriptor fires with nothing to report (the datagram was taken
    # between the wake-up and the look): it is parked, asked every few ms.
    assert p._ready({s: None}, [(p._sel.get_key(fd), None)]) == []
    assert s in p._parked
    c.send_to(b"q", ("10.0.0.2", 53))
    assert p.poll(WAIT) == [(s, PollEvent.READ)]
    # It answered: waiting on its descriptor again, not parked for good.
    assert s not in p._parked and p._sel.get_key(fd).data is s
    p.unregister(s)
    p.close()
    for sock in (s, c):
        sock.close()


def test_a_change_that_wakes_the_wait_is_reported_without_another_wait(stacks):
    """Data arriving while poll() sleeps wakes it (the told sockets' eventfd) and is
    reported at once: two selects (the first look, the wait the data ended), not a
    third short wait before looking at the socket that changed."""
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    p = Poller()
    p.register(server, PollEvent.READ)
    assert p.poll(0) == []
    waits = []
    select = p._sel.select

    def select_and_send_once(timeout):
        waits.append(timeout)
        if len(waits) == 2:  # the wait: the data comes while poll() sleeps
            client.sendall(b"line")
            wait_for(lambda: server._revents(PollEvent.READ), "the data at the server")
        return select(timeout)

    p._sel.select = select_and_send_once
    assert p.poll(WAIT_MS) == [(server, PollEvent.READ)]
    assert len(waits) == 2, f"selects with these timeouts (s): {waits}"
    p.close()
    for sock in (client, server, lst):
        sock.close()
