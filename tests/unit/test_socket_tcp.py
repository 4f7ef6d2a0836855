"""STREAM sockets on two running stacks joined by a LoopbackNicPair: opening, data, closing, errors."""
import errno
import threading
import time

import pytest

import stack
from stack import IpAddress, LoopbackNicPair, PollEvent, Shutdown, Socket, SocketOption, SocketType, Stack, VirtualClock
from stack.arp_cache import ArpCache
from stack.stream_socket import StreamSocket
from stack.tcp import TcpConfig, TcpInfo, TcpState
from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr
from support.tcp_sockets import WAIT, WAIT_MS, Call, closing_sockets, connected_pair, listener
from support.waiting import wait_for

FAST = TcpConfig(initial_rto=0.2, syn_retries=2, time_wait=1.0)  # short timers for failure cases


@pytest.fixture
def nics():
    pair = LoopbackNicPair()
    yield pair
    pair.close()


@pytest.fixture
def stacks(nics):
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST, arp_cache=ArpCache(retry_interval=0.05)).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST).start()
    with closing_sockets(a, b):
        yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def virtual_stacks(nics, clock):
    """The stacks of ``stacks`` on one virtual clock: TCP's timers and the sockets'
    timeouts run on virtual time, which a test lets pass with ``clock.flowing()``."""
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST, arp_cache=ArpCache(retry_interval=0.05), clock=clock).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST, clock=clock).start()
    with closing_sockets(a, b):
        yield a, b
    a.stop()
    b.stop()


def is_tcp(frame: bytes) -> bool:
    eth, payload = EthernetRepr.parse(frame)
    return eth.ethertype == EtherType.IPV4 and Ipv4Repr.parse(payload)[0].protocol == IpProtocol.TCP


# -- opening ----------------------------------------------------------------------------------------

def test_connect_accept_and_echo(stacks):
    a, b = stacks
    lst = listener(b)
    client = Socket(SocketType.STREAM, stack=a)
    assert isinstance(client, StreamSocket) and isinstance(client, Socket) and client.type is SocketType.STREAM
    client.set_timeout(WAIT)
    client.connect(IpAddress.new_v4(10, 0, 0, 2, 7))
    server, peer = lst.accept()
    assert peer == client.local_address() and peer.ip == IpAddress.parse("10.0.0.1").ip
    assert server.local_address() == IpAddress.parse("10.0.0.2:7") == client.peer_address()
    assert server.peer_address() == peer
    assert client.send(b"hello, stack") == 12
    assert server.recv(100) == b"hello, stack"
    server.sendall(b"hello back")
    assert client.recv(100) == b"hello back"
    assert server.get_timeout() is None, "accepted sockets block, like Python's"


def test_listen_without_bind_picks_an_ephemeral_port_and_listeners_are_listed(stacks):
    a, b = stacks
    lst = b.socket(SocketType.STREAM)
    lst.listen()
    port = lst.local_address().port
    assert 32768 <= port <= 60999
    (info,) = b.tcp_listeners()
    assert info.local[1] == port and info.backlog == 128
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect(("10.0.0.2", port))


def test_tcp_info_and_the_connection_table(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.sendall(b"x" * 10000)
    assert len(server.recv(10000)) > 0
    info = client.tcp_info()
    assert isinstance(info, TcpInfo) and info.state is TcpState.ESTABLISHED
    assert info.bytes_sent == 10000 and info.srtt is not None and info.cwnd > 0
    (conn,) = a.connections()
    assert conn.local == info.local and conn.remote == info.remote
    table = b.connection_table()
    assert "LISTEN" in table and "ESTABLISHED" in table and "10.0.0.2:7" in table and "cwnd:" in table
    with pytest.raises(OSError) as exc:
        a.socket(SocketType.STREAM).tcp_info()
    assert exc.value.errno == errno.ENOTCONN


def test_blocking_connect_to_a_closed_port_is_refused(stacks):
    a, _ = stacks
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    with pytest.raises(ConnectionRefusedError):
        c.connect("10.0.0.2:9")
    assert b_counter(stacks[1], "tx_rst") == 1
    # the socket may try again (as on Linux)
    with pytest.raises(ConnectionRefusedError):
        c.connect("10.0.0.2:9")


def b_counter(st, name):
    return st.counters()["tcp"].get(name, 0)


def test_non_blocking_connect_in_progress_then_writable(stacks):
    import select

    a, b = stacks
    lst = listener(b)
    c = a.socket(SocketType.STREAM)
    c.set_nonblocking(True)
    with pytest.raises(BlockingIOError) as exc:
        c.connect("10.0.0.2:7")
    assert exc.value.errno == errno.EINPROGRESS
    _, w, _ = select.select([], [c], [], WAIT)
    assert w == [c], "writable once connected"
    assert c.take_error() is None and c.get_option(SocketOption.ERROR) == 0
    c.connect("10.0.0.2:7")  # the first call after completion reports success, like Linux
    with pytest.raises(OSError) as exc:
        c.connect("10.0.0.2:7")
    assert exc.value.errno == errno.EISCONN
    server, _ = lst.accept()
    assert c.send(b"ok") == 2 and server.recv(10) == b"ok"


def test_non_blocking_connect_refused_shows_as_writable_and_take_error(stacks):
    import selectors

    a, _ = stacks
    c = a.socket(SocketType.STREAM)
    c.set_nonblocking(True)
    with pytest.raises(BlockingIOError):
        c.connect("10.0.0.2:9")
    with selectors.DefaultSelector() as sel:
        sel.register(c, selectors.EVENT_WRITE)
        assert sel.select(WAIT), "the failed attempt makes the socket writable"
    (sock, ev), = a.poll([c], PollEvent.WRITE, timeout=0)
    assert PollEvent.WRITE in ev and PollEvent.ERROR in ev and PollEvent.HANGUP in ev
    err = c.take_error()
    assert isinstance(err, ConnectionRefusedError) and err.errno == errno.ECONNREFUSED
    assert c.take_error() is None


def test_non_blocking_connect_twice_is_ealready(stacks, nics):
    a, b = stacks
    nics.a.impairment = stack.Impairment(loss=is_tcp)  # the SYNs vanish
    c = a.socket(SocketType.STREAM)
    c.set_nonblocking(True)
    with pytest.raises(BlockingIOError):
        c.connect("10.0.0.2:7")
    with pytest.raises(BlockingIOError) as exc:
        c.connect("10.0.0.2:7")
    assert exc.value.errno == errno.EALREADY
    assert a.poll([c], PollEvent.WRITE | PollEvent.READ, timeout=50) == []


def test_connect_with_a_timeout_times_out_and_the_attempt_goes_on(virtual_stacks, nics, clock):
    a, b = virtual_stacks
    lst = listener(b)
    nics.a.impairment = stack.Impairment(loss=is_tcp)
    c = a.socket(SocketType.STREAM)
    c.set_timeout(0.1)
    t0 = clock.now()
    with clock.flowing(), pytest.raises(TimeoutError):
        c.connect("10.0.0.2:7")
    assert clock.now() - t0 < 1.0
    nics.a.impairment = None  # the next SYN retransmission gets through
    c.set_timeout(WAIT)
    with clock.flowing():
        c.connect("10.0.0.2:7")
    server, _ = lst.accept()
    assert server.peer_address() == c.local_address()


def test_connect_to_a_host_that_never_answers_times_out(virtual_stacks, nics, clock):
    a, _ = virtual_stacks
    nics.a.impairment = stack.Impairment(loss=is_tcp)  # ARP works, TCP is black-holed
    c = a.socket(SocketType.STREAM)
    t0 = clock.now()
    with clock.flowing(), pytest.raises(TimeoutError) as exc:
        c.connect("10.0.0.2:7")
    assert exc.value.errno == errno.ETIMEDOUT
    # initial RTO 0.2 s, two retries: 0.2 + 0.4 + 0.8
    assert 1.2 < clock.now() - t0 < 4.0


def test_connect_to_an_address_nobody_has_is_host_unreachable(stacks):
    a, _ = stacks
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    with pytest.raises(OSError) as exc:
        c.connect("10.0.0.77:7")
    assert exc.value.errno == errno.EHOSTUNREACH


def test_connect_without_a_route_or_to_broadcast_is_enetunreach(stacks):
    a, _ = stacks
    for dst in ("192.0.2.1:80", "10.0.0.255:80"):
        with pytest.raises(OSError) as exc:
            a.socket(SocketType.STREAM).connect(dst)
        assert exc.value.errno == errno.ENETUNREACH


def test_connect_from_a_bound_port(stacks):
    a, b = stacks
    lst = listener(b)
    c = a.socket(SocketType.STREAM)
    c.bind("10.0.0.1:4444")
    assert c.local_address() == IpAddress.parse("10.0.0.1:4444")
    c.set_timeout(WAIT)
    c.connect("10.0.0.2:7")
    _, peer = lst.accept()
    assert peer == IpAddress.parse("10.0.0.1:4444")


def test_in_stack_loopback_connection(stacks):
    a, _ = stacks
    lst = listener(a, 8080)
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect("127.0.0.1:8080")
    s, peer = lst.accept()
    c.sendall(b"loop" * 10000)
    got = b""
    while len(got) < 40000:
        got += s.recv(65536)
    assert got == b"loop" * 10000 and peer.ip == IpAddress.parse("127.0.0.1").ip


# -- addresses and ports ---------------------------------------------------------------------------

def test_port_in_use_and_reuse_addr_after_time_wait(stacks):
    a, b = stacks
    lst = listener(b, 7)
    with pytest.raises(OSError) as exc:
        b.socket(SocketType.STREAM).bind("0.0.0.0:7")
    assert exc.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as exc:
        b.socket(SocketType.STREAM).bind("10.0.0.2:7")
    assert exc.value.errno == errno.EADDRINUSE
    client = a.socket(SocketType.STREAM)
    client.set_timeout(WAIT)
    client.bind("10.0.0.1:5000")
    client.connect("10.0.0.2:7")
    server, _ = lst.accept()
    client.close()  # a closes first: a's side goes to TIME-WAIT
    assert server.recv(10) == b""
    server.close()
    wait_for(lambda: [i.state for i in a.connections()] == [TcpState.TIME_WAIT], "TIME-WAIT")
    again = a.socket(SocketType.STREAM)
    with pytest.raises(OSError) as exc:
        again.bind("10.0.0.1:5000")
    assert exc.value.errno == errno.EADDRINUSE
    again.set_option(SocketOption.REUSE_ADDR, True)
    again.bind("10.0.0.1:5000")
    assert again.local_address().port == 5000


def test_bind_twice_and_foreign_address(stacks):
    a, _ = stacks
    s = a.socket(SocketType.STREAM)
    s.bind("0.0.0.0:0")
    with pytest.raises(OSError) as exc:
        s.bind("0.0.0.0:0")
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        a.socket(SocketType.STREAM).bind("10.0.0.2:80")
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_closing_a_bound_socket_releases_its_port(stacks):
    a, _ = stacks
    s = a.socket(SocketType.STREAM)
    s.bind("0.0.0.0:6000")
    s.close()
    t = a.socket(SocketType.STREAM)
    t.bind("0.0.0.0:6000")
    t.listen(1)
    t.close()
    a.socket(SocketType.STREAM).bind("0.0.0.0:6000")


# -- wrong calls -----------------------------------------------------------------------------------

def test_calls_that_need_a_connection(stacks):
    a, _ = stacks
    s = a.socket(SocketType.STREAM)
    for call in (lambda: s.send(b"x"), lambda: s.recv(1), s.peer_address, lambda: s.shutdown(Shutdown.BOTH)):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as exc:
        s.accept()
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        s.send_to(b"x", "10.0.0.2:7")
    assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as exc:
        Socket(SocketType.STREAM, 17, stack=a)
    assert exc.value.errno == errno.EPROTONOSUPPORT
    with pytest.raises(ValueError):
        s.recv(-1)
    with pytest.raises(TypeError):
        s.listen("many")
    with pytest.raises(ValueError):
        s.shutdown(0)


def test_calls_that_conflict_with_the_state(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b)
    for call in (lambda: client.connect("10.0.0.2:7"), lambda: lst.connect("10.0.0.2:7"),
                 lambda: client.send_to(b"x", "10.0.0.2:7")):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EISCONN
    with pytest.raises(OSError) as exc:
        client.listen(5)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        lst.recv(10)
    assert exc.value.errno == errno.ENOTCONN


def test_closed_socket_is_ebadf_and_close_is_idempotent(stacks):
    a, b = stacks
    client, _, _ = connected_pair(a, b)
    client.close()
    client.close()
    assert client.fileno() == -1 and client.closed and "closed" in repr(client)
    for call in (lambda: client.send(b"x"), lambda: client.recv(1), lambda: client.get_option(SocketOption.LINGER)):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EBADF


# -- data ------------------------------------------------------------------------------------------

def test_recv_blocks_times_out_and_non_blocking_is_eagain(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    server.set_timeout(0.05)
    with pytest.raises(TimeoutError):
        server.recv(10)
    server.set_nonblocking(True)
    with pytest.raises(BlockingIOError) as exc:
        server.recv(10)
    assert exc.value.errno == errno.EAGAIN
    server.set_nonblocking(False)
    threading.Timer(0.05, lambda: client.send(b"late")).start()
    assert server.recv(10) == b"late"
    assert server.recv(0) == b""


def test_recv_from_gives_the_peer(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.send(b"abc")
    data, peer = server.recv_from(10)
    assert data == b"abc" and peer == client.local_address()


def test_non_blocking_send_is_partial_when_the_buffer_fills(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.SEND_BUFFER_SIZE, 20000)
    server.set_option(SocketOption.RECEIVE_BUFFER_SIZE, 20000)
    client.set_nonblocking(True)
    total = 0
    with pytest.raises(BlockingIOError):
        for _ in range(1000):
            n = client.send(bytes(50000))
            assert 0 < n <= 20000
            total += n
    assert total >= 20000, "the send buffer and the peer's window were filled"
    got = 0
    while got < total:
        got += len(server.recv(65536))
    assert got == total


def test_blocking_send_waits_for_room(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.SEND_BUFFER_SIZE, 8192)
    received = []

    def slow_reader():
        n = 0
        while n < 200000:
            time.sleep(0.002)
            d = server.recv(5000)
            n += len(d)
            received.append(d)

    t = threading.Thread(target=slow_reader)
    t.start()
    payload = bytes(range(200)) * 1000
    assert client.send(payload) == 200000, "a blocking send queues everything"
    t.join(WAIT * 2)
    assert b"".join(received) == payload


def test_send_with_a_timeout_returns_what_was_queued(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.SEND_BUFFER_SIZE, 10000)
    server.set_option(SocketOption.RECEIVE_BUFFER_SIZE, 10000)
    client.set_timeout(0.1)
    n = client.send(bytes(1_000_000))
    assert 0 < n < 1_000_000
    with pytest.raises(TimeoutError):
        client.sendall(bytes(1_000_000))


# -- closing ---------------------------------------------------------------------------------------

def test_half_close_with_shutdown_write(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.sendall(b"request")
    client.shutdown(Shutdown.WRITE)
    with pytest.raises(BrokenPipeError):
        client.send(b"more")
    assert server.recv(100) == b"request"
    assert server.recv(100) == b"", "end of stream"
    assert server.recv(100) == b""
    server.sendall(b"reply after the peer's FIN")
    server.close()
    assert client.recv(100) == b"reply after the peer's FIN"
    assert client.recv(100) == b""
    (sock, ev), = a.poll([client], PollEvent.READ, timeout=WAIT_MS)
    assert PollEvent.HANGUP in ev and PollEvent.READ in ev


def test_shutdown_read_makes_recv_return_eof(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.send(b"dropped?")
    wait_for(lambda: server.tcp_info().recv_queue == 8, "data at the server")
    server.shutdown(Shutdown.READ)
    assert server.recv(100) == b""
    server.sendall(b"still can send")
    assert client.recv(100) == b"still can send"


def test_graceful_close_delivers_everything_in_the_background(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    payload = bytes(range(256)) * 800  # fits the send buffer: sendall returns before the peer reads
    client.sendall(payload)
    client.close()  # returns at once; the stack keeps sending
    got = bytearray()
    while True:
        d = server.recv(65536)
        if not d:
            break
        got += d
    assert bytes(got) == payload


def test_linger_zero_resets_and_the_peer_gets_econnreset(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.LINGER, 0)
    assert client.get_option(SocketOption.LINGER) == 0
    client.close()
    with pytest.raises(ConnectionResetError):
        server.recv(10)
    with pytest.raises(BrokenPipeError):
        server.send(b"x")
    assert a.connections() == [] or all(i.state is TcpState.CLOSED for i in a.connections())


def test_close_with_unread_data_resets(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.send(b"never read")
    wait_for(lambda: server.tcp_info().recv_queue == 10, "data at the server")
    server.close()
    with pytest.raises(ConnectionResetError):
        client.recv(10)


def test_linger_waits_until_the_data_is_acknowledged(virtual_stacks, nics, clock):
    a, b = virtual_stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.LINGER, 3)
    dropped = []

    def drop_first_data(frame):  # lose the one data segment: close must wait for its retransmission
        if not dropped and is_tcp(frame) and len(frame) > 1000:
            dropped.append(frame)
            return True
        return False

    nics.a.impairment = stack.Impairment(loss=drop_first_data)
    client.sendall(bytes(1200))
    t0 = clock.now()
    with clock.flowing():
        client.close()
        waited = clock.now() - t0
        got = 0
        while d := server.recv(65536):
            got += len(d)
    assert dropped and 0.15 < waited < 3.0, waited
    assert got == 1200


def test_linger_gives_up_after_its_time(virtual_stacks, nics, clock):
    a, b = virtual_stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.LINGER, 0.3)
    nics.a.impairment = stack.Impairment(loss=is_tcp)
    client.send(b"lost")
    t0 = clock.now()
    call = Call(clock, client.close)
    assert clock.wait_for_sleepers(1)
    clock.advance_to(t0 + 0.25)
    assert not call.done(0.05), "0.25 s of a 0.3 s linger: still waiting"
    clock.advance_to(t0 + 0.3)
    assert call.done() and call.error is None
    assert 0.25 < call.ended_at - t0 < 2.0


def test_close_wakes_a_thread_blocked_in_recv_with_ebadf(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    errors = []

    def reader():
        try:
            server.recv(10)
        except OSError as exc:
            errors.append(exc.errno)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    server.close()
    t.join(WAIT)
    assert errors == [errno.EBADF]


def test_closing_a_listener_resets_queued_connections(stacks):
    a, b = stacks
    lst = listener(b)
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect("10.0.0.2:7")  # completes in the accept queue
    lst.close()
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    d = a.socket(SocketType.STREAM)
    d.set_timeout(WAIT)
    with pytest.raises(ConnectionRefusedError):
        d.connect("10.0.0.2:7")


def test_shutdown_of_a_listener_wakes_accept(stacks):
    _, b = stacks
    lst = listener(b)
    lst.set_timeout(None)
    errors = []

    def acceptor():
        try:
            lst.accept()
        except OSError as exc:
            errors.append(exc.errno)

    t = threading.Thread(target=acceptor)
    t.start()
    time.sleep(0.05)
    lst.shutdown(Shutdown.BOTH)
    t.join(WAIT)
    assert errors == [errno.EINVAL]


def test_peer_reset_then_send_is_econnreset_then_epipe(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    server.set_option(SocketOption.LINGER, 0)
    server.close()
    wait_for(lambda: client.tcp_info().state is TcpState.CLOSED, "the RST")
    with pytest.raises(ConnectionResetError):
        client.send(b"x")
    with pytest.raises(BrokenPipeError):
        client.send(b"x")
    assert client.recv(10) == b""


def test_stack_stop_closes_stream_sockets(nics):
    a = Stack(nics.a, "10.0.0.1/24").start()
    b = Stack(nics.b, "10.0.0.2/24").start()
    client, server, lst = connected_pair(a, b)
    a.stop()
    assert client.closed
    assert server.recv(10) == b"", "the stopped stack closed its connection gracefully"
    b.stop()
    assert server.closed and lst.closed


def test_default_stack_stream_socket(stacks):
    a, b = stacks
    lst = listener(b)
    stack.set_default_stack(a)
    try:
        with Socket(SocketType.STREAM) as s:
            s.set_timeout(WAIT)
            s.connect("10.0.0.2:7")
            conn, _ = lst.accept()
            s.sendall(b"via default")
            assert conn.recv(100) == b"via default"
    finally:
        stack.set_default_stack(None)
