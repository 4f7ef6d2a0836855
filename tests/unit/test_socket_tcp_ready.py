"""STREAM sockets: options, readiness (select/selectors/poll/stack.poll), backlog, threads."""
import errno
import select
import selectors
import threading
import time

import pytest

from stack import Impairment, LoopbackNicPair, PollEvent, Shutdown, SocketOption, SocketType, Stack, VirtualClock
from stack.tcp import TcpConfig, TcpState
from support.tcp_sockets import WAIT, WAIT_MS, closing_sockets, connected_pair, listener, tcp_of
from support.waiting import wait_for

FAST = TcpConfig(initial_rto=0.2, syn_retries=3, time_wait=1.0)


@pytest.fixture
def nics():
    pair = LoopbackNicPair()
    yield pair
    pair.close()


@pytest.fixture
def stacks(nics):
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST).start()
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
    """The stacks of ``stacks`` on one virtual clock (``clock.flowing()`` lets time pass)."""
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST, clock=clock).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST, clock=clock).start()
    with closing_sockets(a, b):
        yield a, b
    a.stop()
    b.stop()


class Recorder:
    """An impairment hook that drops nothing and logs (time, direction, TCP segment)."""

    def __init__(self, log, name, drop=lambda frame: False):
        self.log, self.name, self.drop = log, name, drop

    def __call__(self, frame):
        parsed = tcp_of(frame)
        if parsed is not None:
            self.log.append((time.monotonic(), self.name, parsed))
        return self.drop(frame)


def select_state(sock):
    r, w, _ = select.select([sock], [sock], [], 0)
    return bool(r), bool(w)


# -- options ------------------------------------------------------------------------------------

def test_option_defaults_and_round_trips(stacks):
    a, _ = stacks
    s = a.socket(SocketType.STREAM)
    defaults = {
        SocketOption.REUSE_ADDR: False, SocketOption.TCP_NO_DELAY: False, SocketOption.KEEP_ALIVE: False,
        SocketOption.KEEP_IDLE: 7200.0, SocketOption.KEEP_INTERVAL: 75.0, SocketOption.KEEP_COUNT: 9,
        SocketOption.LINGER: None, SocketOption.RECEIVE_BUFFER_SIZE: 262144,
        SocketOption.SEND_BUFFER_SIZE: 262144, SocketOption.TTL: 64, SocketOption.CONGESTION: "cubic",
        SocketOption.ERROR: 0,
    }
    assert {opt: s.get_option(opt) for opt in defaults} == defaults
    values = {
        SocketOption.REUSE_ADDR: True, SocketOption.TCP_NO_DELAY: True, SocketOption.KEEP_ALIVE: True,
        SocketOption.KEEP_IDLE: 10.0, SocketOption.KEEP_INTERVAL: 2.0, SocketOption.KEEP_COUNT: 3,
        SocketOption.LINGER: 5.0, SocketOption.RECEIVE_BUFFER_SIZE: 50000,
        SocketOption.SEND_BUFFER_SIZE: 60000, SocketOption.TTL: 9, SocketOption.CONGESTION: "newreno",
    }
    for opt, value in values.items():
        s.set_option(opt, value)
    assert {opt: s.get_option(opt) for opt in values} == values
    s.set_option(SocketOption.LINGER, False)
    assert s.get_option(SocketOption.LINGER) is None


@pytest.mark.parametrize("option, value", [
    (SocketOption.TCP_NO_DELAY, "yes"), (SocketOption.KEEP_IDLE, 0), (SocketOption.KEEP_INTERVAL, -1),
    (SocketOption.KEEP_COUNT, 0), (SocketOption.LINGER, -1), (SocketOption.RECEIVE_BUFFER_SIZE, 0),
    (SocketOption.SEND_BUFFER_SIZE, True), (SocketOption.TTL, 256), (SocketOption.CONGESTION, "bbr"),
    (SocketOption.REUSE_ADDR, 2),
])
def test_bad_option_values_are_einval(stacks, option, value):
    a, _ = stacks
    with pytest.raises(OSError) as exc:
        a.socket(SocketType.STREAM).set_option(option, value)
    assert exc.value.errno == errno.EINVAL


def test_options_of_the_wrong_kind_are_enoprotoopt(stacks):
    a, _ = stacks
    tcp = a.socket(SocketType.STREAM)
    udp = a.socket(SocketType.DATAGRAM)
    for sock, opt in ((tcp, SocketOption.BROADCAST), (tcp, SocketOption.ERROR), (udp, SocketOption.TCP_NO_DELAY),
                      (udp, SocketOption.KEEP_ALIVE), (udp, SocketOption.LINGER)):
        with pytest.raises(OSError) as exc:
            sock.set_option(opt, 1)
        assert exc.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as exc:
        tcp.get_option(SocketOption.BROADCAST)
    assert exc.value.errno == errno.ENOPROTOOPT


def test_udp_sockets_have_the_error_option_too(stacks):
    a, _ = stacks
    udp = a.socket(SocketType.DATAGRAM)
    udp.connect("10.0.0.2:9")
    udp.send(b"x")  # port unreachable comes back
    wait_for(lambda: a.poll([udp], PollEvent.NONE, timeout=0), "the ICMP error")
    assert udp.get_option(SocketOption.ERROR) == errno.ECONNREFUSED
    assert udp.get_option(SocketOption.ERROR) == 0


def test_congestion_control_per_socket(stacks):
    a, b = stacks
    client, server, lst = connected_pair(a, b, CONGESTION="newreno")
    assert server.tcp_info().congestion == "newreno", "inherited from the listener"
    assert client.tcp_info().congestion == "cubic"
    client.set_option(SocketOption.CONGESTION, "newreno")  # on a live connection too
    assert client.tcp_info().congestion == "newreno"
    c2 = a.socket(SocketType.STREAM)
    c2.set_option(SocketOption.CONGESTION, "NewReno")
    c2.set_timeout(WAIT)
    c2.connect("10.0.0.2:7")
    assert c2.tcp_info().congestion == "newreno"


def test_accepted_sockets_inherit_the_listeners_options(stacks):
    a, b = stacks
    _, server, _ = connected_pair(a, b, TCP_NO_DELAY=True, LINGER=0, RECEIVE_BUFFER_SIZE=30000, KEEP_ALIVE=True)
    assert server.get_option(SocketOption.TCP_NO_DELAY) is True
    assert server.get_option(SocketOption.LINGER) == 0
    assert server.get_option(SocketOption.RECEIVE_BUFFER_SIZE) == 30000
    assert server.get_option(SocketOption.KEEP_ALIVE) is True
    assert server.tcp_info().rcv_wnd <= 30000


def test_receive_buffer_bounds_the_advertised_window(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b, RECEIVE_BUFFER_SIZE=20000)
    client.set_nonblocking(True)
    queued = 0
    try:
        while True:
            queued += client.send(bytes(65536))
    except BlockingIOError:
        pass
    wait_for(lambda: server.tcp_info().recv_queue > 0 and client.tcp_info().snd_wnd == 0, "a full window")
    assert server.tcp_info().recv_queue <= 20000
    assert client.tcp_info().send_queue > 0


def test_ttl_option_sets_the_ip_ttl(stacks, nics):
    a, b = stacks
    log = []
    nics.a.impairment = Impairment(loss=Recorder(log, "a"))
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.TTL, 7)
    client.send(b"ttl")
    assert server.recv(10) == b"ttl"
    data = [ip for _, _, (ip, seg, body) in log if body]
    assert data and data[-1].ttl == 7
    assert all(ip.ttl == 64 for _, _, (ip, seg, body) in log if not body and seg.flags & 0x02), "the SYN had 64"


def test_nagle_holds_a_small_segment_until_the_ack_and_tcp_no_delay_does_not(stacks, nics):
    a, b = stacks
    log = []
    nics.a.impairment = Impairment(loss=Recorder(log, "a"))
    nics.b.impairment = Impairment(loss=Recorder(log, "b"))
    client, server, _ = connected_pair(a, b)

    def two_small_sends():
        log.clear()
        client.send(b"1")
        client.send(b"2")
        got = b""
        while len(got) < 2:
            got += server.recv(10)
        return [(name, body) for _, name, (ip, seg, body) in log if name == "a" and body or name == "b"]

    order = two_small_sends()
    assert order[:3] == [("a", b"1"), ("b", b""), ("a", b"2")], "Nagle: the 2 waits for the ACK of the 1"
    client.set_option(SocketOption.TCP_NO_DELAY, True)
    order = two_small_sends()
    assert order[:2] == [("a", b"1"), ("a", b"2")], "TCP_NO_DELAY: both leave before any ACK"


def test_keepalive_probes_an_idle_connection_and_ends_a_dead_one(virtual_stacks, nics, clock):
    a, b = virtual_stacks
    client, server, _ = connected_pair(a, b)
    client.set_option(SocketOption.KEEP_IDLE, 0.2)
    client.set_option(SocketOption.KEEP_INTERVAL, 0.1)
    client.set_option(SocketOption.KEEP_COUNT, 2)
    client.set_option(SocketOption.KEEP_ALIVE, True)
    before = client.tcp_info().segs_out
    # Exactly 0.5 s, not "at least": the probe at 0.2 is answered, but the peer answers
    # out-of-window segments at most once per 0.5 s (oow_ack_interval), so the probes at
    # 0.4 and 0.5 are not and the connection ends at 0.6.
    clock.pass_time(0.5)
    assert client.tcp_info().segs_out >= before + 1, "probes went out"
    assert client.tcp_info().state is TcpState.ESTABLISHED, "and were answered"
    nics.b.impairment = Impairment(loss=lambda frame: tcp_of(frame) is not None)  # the peer goes silent
    t0 = clock.now()
    client.set_timeout(WAIT)
    with clock.flowing(), pytest.raises(TimeoutError) as exc:
        client.recv(10)
    assert exc.value.errno == errno.ETIMEDOUT and clock.now() - t0 < 2.0


# -- readiness -----------------------------------------------------------------------------------

def test_fresh_and_bound_sockets_are_not_ready(stacks):
    a, _ = stacks
    s = a.socket(SocketType.STREAM)
    assert select_state(s) == (False, False)
    assert a.poll([s], PollEvent.READ | PollEvent.WRITE, timeout=0) == []
    s.bind("0.0.0.0:0")
    assert select_state(s) == (False, False)


def test_listener_is_readable_while_a_connection_waits(stacks):
    a, b = stacks
    lst = listener(b)
    assert select_state(lst) == (False, False)
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect("10.0.0.2:7")
    r, _, _ = select.select([lst], [], [], WAIT)
    assert r == [lst] and select_state(lst) == (True, False)
    ((sock, ev),) = b.poll([lst], PollEvent.READ, timeout=WAIT_MS)
    assert ev == PollEvent.READ
    lst.accept()
    assert select_state(lst) == (False, False)
    lst.set_nonblocking(True)
    with pytest.raises(BlockingIOError) as exc:
        lst.accept()
    assert exc.value.errno == errno.EAGAIN
    lst.set_timeout(0.05)
    with pytest.raises(TimeoutError):
        lst.accept()


def test_connected_socket_readable_with_data_writable_with_room(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    assert select_state(client) == (False, True)
    client.send(b"data")
    r, _, _ = select.select([server], [], [], WAIT)
    assert r == [server]
    ((sock, ev),) = b.poll([server], PollEvent.READ | PollEvent.WRITE, timeout=0)
    assert ev == PollEvent.READ | PollEvent.WRITE
    assert server.recv(100) == b"data"
    assert select_state(server) == (False, True)


def test_writability_follows_the_send_buffer(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b, RECEIVE_BUFFER_SIZE=16384)
    client.set_option(SocketOption.SEND_BUFFER_SIZE, 16384)
    client.set_nonblocking(True)

    def fill():
        try:
            while True:
                client.send(bytes(4096))
        except BlockingIOError:
            pass

    fill()  # the send buffer, then the peer's window...
    wait_for(lambda: client.tcp_info().snd_wnd == 0, "the peer's window to close")
    fill()  # ... and the send buffer again
    assert select_state(client) == (False, False)
    assert a.poll([client], PollEvent.WRITE, timeout=50) == []

    def drain():
        while select.select([server], [], [], 0.2)[0]:
            server.recv(65536)

    t = threading.Thread(target=drain)
    t.start()
    with selectors.DefaultSelector() as sel:
        sel.register(client, selectors.EVENT_WRITE)
        assert sel.select(WAIT), "writable again once the peer reads"
    ((sock, ev),) = a.poll([client], PollEvent.WRITE, timeout=WAIT_MS)
    assert ev == PollEvent.WRITE
    t.join(WAIT)


def test_end_of_stream_is_readable_and_both_fins_are_a_hang_up(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    client.shutdown(Shutdown.WRITE)
    r, _, _ = select.select([server], [], [], WAIT)
    assert r == [server] and server.recv(10) == b""
    assert select_state(server) == (True, True)
    ((sock, ev),) = b.poll([server], PollEvent.READ, timeout=0)
    assert ev == PollEvent.READ, "half-closed is not hung up"
    server.shutdown(Shutdown.WRITE)
    ((sock, ev),) = b.poll([server], PollEvent.NONE, timeout=0)
    assert ev == PollEvent.HANGUP
    p = select.poll()
    p.register(server.fileno(), select.POLLIN | select.POLLOUT)
    ((fd, revents),) = p.poll(0)
    assert revents & select.POLLHUP and revents & select.POLLIN
    wait_for(lambda: client.recv(10) == b"", "EOF at the client")
    ((sock, ev),) = a.poll([client], PollEvent.NONE, timeout=WAIT_MS)
    assert PollEvent.HANGUP in ev


def test_a_reset_connection_is_readable_writable_error_and_hang_up(stacks):
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    server.set_option(SocketOption.LINGER, 0)
    server.close()
    r, _, _ = select.select([client], [], [], WAIT)
    assert r == [client] and select_state(client) == (True, True)
    ((sock, ev),) = a.poll([client], PollEvent.READ, timeout=WAIT_MS)
    assert ev == PollEvent.READ | PollEvent.ERROR | PollEvent.HANGUP
    p = select.poll()
    p.register(client.fileno(), select.POLLIN)
    ((fd, revents),) = p.poll(0)
    assert revents & select.POLLHUP
    assert client.get_option(SocketOption.ERROR) == errno.ECONNRESET
    ((sock, ev),) = a.poll([client], PollEvent.READ, timeout=0)
    assert ev == PollEvent.READ | PollEvent.HANGUP
    assert client.recv(10) == b""


def test_poll_reports_a_closed_socket_as_invalid_and_waits_on_many(stacks):
    a, b = stacks
    c1, s1, lst = connected_pair(a, b)
    c2 = a.socket(SocketType.STREAM)
    c2.set_timeout(WAIT)
    c2.connect("10.0.0.2:7")
    s2, _ = lst.accept()
    dead = a.socket(SocketType.STREAM)
    dead.close()
    assert a.poll([dead], PollEvent.READ, timeout=0) == [(dead, PollEvent.INVALID)]
    threading.Timer(0.05, lambda: s2.send(b"second")).start()
    ready = a.poll([c1, c2], [PollEvent.READ, PollEvent.READ], timeout=WAIT_MS)
    assert ready == [(c2, PollEvent.READ)]
    ready = a.poll([c1, c2, c1], [PollEvent.READ, PollEvent.READ, PollEvent.WRITE], timeout=WAIT_MS)
    assert (c2, PollEvent.READ) in ready and (c1, PollEvent.WRITE) in ready


def test_a_blocked_select_wakes_when_a_non_blocking_connect_completes(stacks, nics):
    a, b = stacks
    lst = listener(b)
    nics.a.impairment = Impairment(loss=lambda frame: tcp_of(frame) is not None and tcp_of(frame)[1].flags & 0x02)
    c = a.socket(SocketType.STREAM)
    c.set_nonblocking(True)
    with pytest.raises(BlockingIOError):
        c.connect("10.0.0.2:7")
    assert select.select([], [c], [], 0.05)[1] == [], "the SYN was lost: still connecting"
    nics.a.impairment = None
    _, w, _ = select.select([], [c], [], WAIT)  # the retransmitted SYN gets through
    assert w == [c] and c.take_error() is None


# -- backlog --------------------------------------------------------------------------------------

def test_backlog_bounds_the_accept_queue(stacks):
    a, b = stacks
    lst = listener(b, backlog=1)
    clients = []
    for n in range(3):
        c = a.socket(SocketType.STREAM)
        c.set_nonblocking(True)
        with pytest.raises(BlockingIOError):
            c.connect("10.0.0.2:7")
        clients.append(c)
        if n < 2:  # one at a time, so that the third SYN meets a full queue
            wait_for(lambda: b.tcp_listeners()[0].pending == n + 1, f"connection {n + 1} queued")
    # Like Linux, backlog 1 lets two connections wait; the third SYN is dropped.
    assert [s for s, ev in a.poll(clients, PollEvent.WRITE, timeout=0)] == clients[:2]
    (info,) = b.tcp_listeners()
    assert info.pending == 2 and info.backlog == 1
    assert a.poll([clients[2]], PollEvent.WRITE, timeout=100) == []
    lst.accept()
    ((sock, ev),) = a.poll([clients[2]], PollEvent.WRITE, timeout=WAIT_MS)  # its SYN is retransmitted
    assert ev == PollEvent.WRITE and clients[2].take_error() is None
    assert b.counters()["tcp"].get("drop.listen queue", 0) >= 1


def test_backlog_can_grow_with_a_second_listen(stacks):
    a, b = stacks
    lst = listener(b, backlog=0)
    lst.listen(10)
    assert b.tcp_listeners()[0].backlog == 10


# -- threads ------------------------------------------------------------------------------------

def test_many_clients_in_threads_against_a_threaded_echo_server(stacks):
    a, b = stacks
    lst = listener(b, backlog=16)
    stop = threading.Event()

    def echo(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def acceptor():
        lst.set_timeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = lst.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    accepting = threading.Thread(target=acceptor, daemon=True)
    accepting.start()
    results = {}

    def client(n):
        with a.socket(SocketType.STREAM) as c:
            c.set_timeout(WAIT)
            c.connect("10.0.0.2:7")
            message = bytes([n]) * (1000 * (n + 1))
            c.sendall(message)
            c.shutdown(Shutdown.WRITE)
            got = bytearray()
            while d := c.recv(65536):
                got += d
            results[n] = bytes(got) == message

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    stop.set()
    accepting.join(WAIT)
    assert results == {n: True for n in range(8)}


def test_one_socket_read_and_written_by_two_threads_at_once(stacks):
    # 2 MB each way, many times the buffers: each socket's reader and writer
    # block on it over and over, and every byte must arrive intact and in order.
    # What is bounded is progress (a recv or send call raises TimeoutError after
    # WAIT s with nothing moved), not the total time: on a loaded 2-core machine
    # the exchange has taken 4 to 34 s, and a sendall is bounded as a whole by
    # the socket's timeout. (A lost wake-up only costs a waiter its timeout here,
    # since it looks again before giving up: the next test is the one that
    # catches those.)
    a, b = stacks
    client, server, _ = connected_pair(a, b)
    size = 2_000_000
    out = bytes(range(251)) * (size // 251)
    got = {}
    errors = {}
    moved = {"client received": 0, "server received": 0, "client sent": 0, "server sent": 0}

    def reader(sock, key):
        buf = bytearray()
        try:
            while len(buf) < len(out):
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
                moved[f"{key} received"] = len(buf)
            got[key] = bytes(buf) == out
        except OSError as exc:
            errors[f"{key} recv"] = exc

    def writer(sock, key):
        view = memoryview(out)
        try:
            while view:  # send() returns what it queued when its timeout runs out
                n = sock.send(view)
                view = view[n:]
                moved[f"{key} sent"] += n
        except OSError as exc:
            errors[f"{key} send"] = exc

    threads = [threading.Thread(target=reader, args=(client, "client")),
               threading.Thread(target=reader, args=(server, "server")),
               threading.Thread(target=writer, args=(client, "client")),
               threading.Thread(target=writer, args=(server, "server"))]
    for t in threads:
        t.start()
    # Every thread ends by itself (done, or a TimeoutError after WAIT s without
    # progress); this bound only keeps a broken build from hanging the run.
    deadline = time.monotonic() + 30 * WAIT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"still running after {30 * WAIT} s; bytes moved {moved}"
    assert errors == {}, f"bytes moved {moved}"
    assert got == {"client": True, "server": True}, f"bytes moved {moved}"


class TracedCondition(threading.Condition):
    """A socket's condition variable that records which threads wait on it, in order."""

    def __init__(self, lock):
        super().__init__(lock)
        self.waiting = []

    def wait(self, timeout=None):
        name = threading.current_thread().name
        self.waiting.append(name)  # under the stack's lock, like the wait itself
        try:
            return super().wait(timeout)
        finally:
            self.waiting.remove(name)


@pytest.mark.parametrize("first", ["sender", "reader"])
def test_a_change_wakes_the_thread_queued_second_on_the_same_socket(stacks, first):
    """A recv and a send block on one socket (one condition variable); a change that
    only one of them waits for must wake that one even when it queued second.

    A lost wake-up here (notify() instead of notify_all(), or a readiness
    change recorded without waking anyone) leaves it blocked although its
    call could go on.
    """
    a, b = stacks
    # A 4 KB window against a 16 KB send buffer: acknowledgements never free the
    # half of the buffer that makes the socket writable, so the sender stays
    # blocked and no readiness change reorders the two waiters.
    client, server, _ = connected_pair(a, b, RECEIVE_BUFFER_SIZE=4096)
    client.set_option(SocketOption.SEND_BUFFER_SIZE, 16384)
    client.set_timeout(WAIT * 6)  # the blocked calls outlive this test's own bounded waits
    cond = client._cond = TracedCondition(a.lock)  # only to see who waits, in which order
    blob = bytes(range(256)) * 200  # 51200 bytes: more than the send buffer and the window
    result = {}

    def send():
        try:
            client.sendall(blob)
            result["sent"] = True
        except OSError as exc:
            result["sent"] = exc

    def recv():
        try:
            result["received"] = client.recv(100)
        except OSError as exc:
            result["received"] = exc

    sender = threading.Thread(target=send, name="sender")
    reader = threading.Thread(target=recv, name="reader")
    order = [sender, reader] if first == "sender" else [reader, sender]
    order[0].start()
    wait_for(lambda: cond.waiting == [order[0].name], f"the {order[0].name} to block")
    order[1].start()
    wait_for(lambda: cond.waiting == [t.name for t in order], f"the {order[1].name} to block behind it")
    wait_for(lambda: (lambda i: i.snd_wnd == 0 and i.in_flight == 0 and i.send_queue > 0)(client.tcp_info()),
             "the window to shut with data still queued")
    assert cond.waiting == [t.name for t in order], "nothing reordered the waiters"

    if first == "sender":
        server.send(b"reply")  # readable only: the window stays shut
        reader.join(WAIT)
        assert not reader.is_alive(), f"the reader was not woken by the data; waiting: {cond.waiting}"
        assert result["received"] == b"reply"
        assert sender.is_alive(), "the sender still waits for room"
    got = bytearray()
    try:
        while len(got) < len(blob):  # room only: the client's sendall must go on
            got += server.recv(65536)
    except TimeoutError:
        pytest.fail(f"the sender was not woken by the room; {len(got)} bytes arrived, waiting: {cond.waiting}")
    assert bytes(got) == blob
    sender.join(WAIT)
    assert not sender.is_alive() and result["sent"] is True
    if first == "reader":
        assert reader.is_alive(), "the reader still waits for data"
        server.send(b"reply")
        reader.join(WAIT)
        assert not reader.is_alive() and result["received"] == b"reply"
