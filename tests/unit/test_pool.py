"""stack.pool.ConnectionPool on two stacks joined by a LoopbackNicPair, with a real
echo server on the peer stack: reuse, the per-host maximum, liveness checks
(the stack's own and an application ping), a peer that closes or resets idle
connections, idle expiry on a virtual clock, closing, and many threads at once."""
from __future__ import annotations

import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack import ConnectionPool, IpAddress, LoopbackNicPair, SocketOption, SocketType, Stack, VirtualClock
from stack.pool import HostStats, PoolClosed, PoolTimeout
from stack.tcp import TcpConfig, TcpState
from support.tcp_sockets import WAIT
from support.waiting import wait_for

FAST = TcpConfig(initial_rto=0.2, syn_retries=2, time_wait=1.0)
PEER = "10.0.0.2"


class EchoServer:
    """TCP echo on the peer stack, one thread per connection; remembers its connections so a
    test can close (or reset) them as a server with an idle timeout would. A line b"quit\\n"
    makes it close that connection without answering."""

    def __init__(self, st, port: int) -> None:
        self.port = port
        self.conns: list = []
        self.accepted = 0
        self._lock = threading.Lock()
        self.listener = st.socket(SocketType.STREAM)
        self.listener.set_option(SocketOption.REUSE_ADDR, True)
        self.listener.bind(IpAddress.any(port))
        self.listener.listen(64)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn) -> None:
        try:
            while data := conn.recv(4096):
                if data == b"quit\n":
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def drop_all(self, reset: bool = False) -> None:
        """Close every connection from the server's side (a RST with reset=True)."""
        with self._lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            if reset and not conn.closed:
                conn.set_option(SocketOption.LINGER, 0)
            conn.close()

    def close(self) -> None:
        self.listener.close()
        self.drop_all()


@pytest.fixture
def stacks():
    nics = LoopbackNicPair()
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST).start()
    yield a, b
    a.stop()
    b.stop()
    nics.close()


@pytest.fixture
def echo(stacks):
    server = EchoServer(stacks[1], 7)
    yield server
    server.close()


def round_trip(sock, data: bytes = b"hello\n") -> bytes:
    sock.set_timeout(WAIT)
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(4096)
        assert chunk, "the echo server closed the connection"
        got += chunk
    return got


def state_of(sock) -> TcpState:
    return sock.tcp_info().state


# -- reuse and the maximum --------------------------------------------------------------------------

def test_a_returned_connection_is_reused(stacks, echo):
    with ConnectionPool(stacks[0], max_per_host=2) as pool:
        sock = pool.get_connection(f"{PEER}:7")
        assert round_trip(sock) == b"hello\n"
        pool.return_connection(sock)
        again = pool.get_connection((PEER, 7))
        assert again is sock and round_trip(again) == b"hello\n"
        pool.return_connection(again)
        s = pool.stats()
        assert (s.opened, s.reused, s.dead, s.in_use, s.idle) == (1, 1, 0, 0, 1)
        assert s.hosts == {f"{PEER}:7": HostStats(in_use=0, idle=1)}
        assert echo.accepted == 1


def test_a_second_caller_gets_a_second_connection_up_to_the_maximum(stacks, echo):
    with ConnectionPool(stacks[0], max_per_host=2, wait_timeout=0.3) as pool:
        one, two = pool.get_connection(f"{PEER}:7"), pool.get_connection(f"{PEER}:7")
        assert one is not two
        assert round_trip(one, b"1\n") == b"1\n" and round_trip(two, b"2\n") == b"2\n"
        with pytest.raises(PoolTimeout, match=f"all 2 connections to {PEER}:7 are in use") as err:
            pool.get_connection(f"{PEER}:7")
        assert isinstance(err.value, TimeoutError) and err.value.errno == 110
        s = pool.stats()
        assert (s.opened, s.in_use, s.waited, s.timed_out) == (2, 2, 1, 1)


def test_a_waiting_caller_gets_the_connection_given_back(stacks, echo):
    with ConnectionPool(stacks[0], max_per_host=1, wait_timeout=WAIT) as pool:
        first = pool.get_connection(f"{PEER}:7")
        got = []
        waiter = threading.Thread(target=lambda: got.append(pool.get_connection(f"{PEER}:7")))
        waiter.start()
        wait_for(lambda: pool.stats().waited == 1, "the second caller to wait")
        pool.return_connection(first)
        waiter.join(WAIT)
        assert got == [first]
        pool.return_connection(first)
        assert pool.stats().opened == 1


def test_hosts_are_counted_apart(stacks, echo):
    other = EchoServer(stacks[1], 8)
    try:
        with ConnectionPool(stacks[0], max_per_host=1, wait_timeout=0.2) as pool:
            a = pool.get_connection(f"{PEER}:7")
            b = pool.get_connection(f"{PEER}:8")  # a full host 7 does not hold up host 8
            assert a.peer_address().port == 7 and b.peer_address().port == 8
            assert {k: (v.in_use, v.idle) for k, v in pool.stats().hosts.items()} == {
                f"{PEER}:7": (1, 0), f"{PEER}:8": (1, 0)}
    finally:
        other.close()


# -- liveness -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_connection_the_peer_closed_while_idle_is_replaced(stacks, echo, reset):
    with ConnectionPool(stacks[0]) as pool:
        old = pool.get_connection(f"{PEER}:7")
        round_trip(old)
        pool.return_connection(old)
        echo.drop_all(reset=reset)
        gone = TcpState.CLOSED if reset else TcpState.CLOSE_WAIT
        wait_for(lambda: state_of(old) is gone, f"our side to see the server's {'RST' if reset else 'FIN'}")

        new = pool.get_connection(f"{PEER}:7")
        assert new is not old and round_trip(new) == b"hello\n"  # the caller never sees the dead one
        assert old.closed
        s = pool.stats()
        assert (s.opened, s.reused, s.dead) == (2, 0, 1)
        pool.return_connection(new)


def test_every_dead_idle_connection_is_dropped_before_a_live_one_is_handed_out(stacks, echo):
    with ConnectionPool(stacks[0], max_per_host=3) as pool:
        socks = [pool.get_connection(f"{PEER}:7") for _ in range(3)]
        for s in socks:
            round_trip(s)
            pool.return_connection(s)
        echo.drop_all()
        for s in socks:
            wait_for(lambda: state_of(s) is TcpState.CLOSE_WAIT, "the server's FIN")
        new = pool.get_connection(f"{PEER}:7")
        assert new not in socks and round_trip(new) == b"hello\n"
        assert pool.stats().dead == 3 and all(s.closed for s in socks)
        pool.return_connection(new)


def test_the_check_reads_nothing(stacks, echo):
    with ConnectionPool(stacks[0]) as pool:
        sock = pool.get_connection(f"{PEER}:7")
        sock.sendall(b"unread\n")
        wait_for(lambda: sock.tcp_info().recv_queue == 7, "the echo to arrive")
        from stack.pool import stack_says_alive
        assert not stack_says_alive(sock)          # data nobody read: not fit for the next caller
        assert sock.recv(100) == b"unread\n"       # ... and the check took none of it
        assert stack_says_alive(sock)
        pool.return_connection(sock)


def test_an_application_ping_decides_too(stacks, echo):
    calls = []

    def ping(sock) -> bool:
        calls.append(sock)
        if len(calls) == 1:
            return False                           # the application says: this one is no good
        return round_trip(sock, b"ping\n") == b"ping\n"

    with ConnectionPool(stacks[0], ping=ping) as pool:
        first = pool.get_connection(f"{PEER}:7")
        assert calls == []                         # a new connection is not pinged
        pool.return_connection(first)
        second = pool.get_connection(f"{PEER}:7")
        assert calls == [first] and second is not first and first.closed
        pool.return_connection(second)
        third = pool.get_connection(f"{PEER}:7")
        assert third is second and calls == [first, second]
        pool.return_connection(third)
        assert (pool.stats().dead, pool.stats().reused) == (1, 1)


def test_a_ping_that_raises_an_oserror_means_dead(stacks, echo):
    def ping(sock) -> bool:
        raise ConnectionResetError("the application's ping failed")

    with ConnectionPool(stacks[0], ping=ping) as pool:
        first = pool.get_connection(f"{PEER}:7")
        pool.return_connection(first)
        second = pool.get_connection(f"{PEER}:7")
        assert second is not first and pool.stats().dead == 1
        pool.return_connection(second)


# -- what comes back ------------------------------------------------------------------------------------

def test_a_connection_returned_with_unread_data_is_closed_not_kept(stacks, echo):
    with ConnectionPool(stacks[0]) as pool:
        sock = pool.get_connection(f"{PEER}:7")
        sock.sendall(b"reply nobody reads\n")
        wait_for(lambda: sock.tcp_info().recv_queue > 0, "the echo to arrive")
        pool.return_connection(sock)
        assert sock.closed
        s = pool.stats()
        assert (s.discarded, s.idle, s.in_use) == (1, 0, 0)


@pytest.mark.parametrize("how", ["READ", "WRITE"])
def test_a_connection_returned_shut_down_is_closed_not_kept(stacks, echo, how):
    from stack import Shutdown

    with ConnectionPool(stacks[0]) as pool:
        sock = pool.get_connection(f"{PEER}:7")
        sock.shutdown(Shutdown[how])               # (READ leaves the TCP state ESTABLISHED)
        pool.return_connection(sock)
        assert sock.closed and pool.stats().discarded == 1


def test_closing_a_connection_and_returning_it_frees_its_place(stacks, echo):
    with ConnectionPool(stacks[0], max_per_host=1, wait_timeout=WAIT) as pool:
        sock = pool.get_connection(f"{PEER}:7")
        sock.close()
        pool.return_connection(sock)
        new = pool.get_connection(f"{PEER}:7")
        assert new is not sock and round_trip(new) == b"hello\n"
        assert pool.stats().discarded == 1
        pool.return_connection(new)


def test_returning_what_the_pool_did_not_hand_out_is_an_error(stacks, echo):
    with ConnectionPool(stacks[0]) as pool:
        sock = pool.get_connection(f"{PEER}:7")
        pool.return_connection(sock)
        with pytest.raises(ValueError, match="not a connection handed out by this pool"):
            pool.return_connection(sock)
        with stacks[0].socket(SocketType.STREAM) as stranger:
            with pytest.raises(ValueError):
                pool.return_connection(stranger)


def test_the_connection_block_returns_it_or_closes_it_on_an_error(stacks, echo):
    with ConnectionPool(stacks[0]) as pool:
        with pool.connection(f"{PEER}:7") as sock:
            round_trip(sock)
        assert pool.stats().idle == 1 and not sock.closed
        with pytest.raises(RuntimeError):
            with pool.connection(f"{PEER}:7") as again:
                assert again is sock
                raise RuntimeError("the request failed half-way")
        assert sock.closed and pool.stats().idle == 0


def test_a_refused_connection_raises_and_frees_its_place(stacks, echo):
    with ConnectionPool(stacks[0], max_per_host=1) as pool:
        with pytest.raises(ConnectionRefusedError):
            pool.get_connection(f"{PEER}:9")
        with pytest.raises(ConnectionRefusedError):
            pool.get_connection(f"{PEER}:9")        # not "all 1 connections in use"
        assert pool.stats().in_use == 0 and pool.stats().hosts == {}


# -- idle expiry, closing, bad arguments -------------------------------------------------------------------

def test_idle_connections_are_closed_after_idle_timeout():
    clock = VirtualClock()
    nics = LoopbackNicPair()
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST, clock=clock).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST, clock=clock).start()
    server = EchoServer(b, 7)
    try:
        with ConnectionPool(a, idle_timeout=30.0) as pool:
            with clock.flowing():
                sock = pool.get_connection(f"{PEER}:7")
            pool.return_connection(sock)
            clock.advance(29.0)
            assert pool.stats().idle == 1 and not sock.closed
            clock.advance(1.0)
            s = pool.stats()
            assert (s.idle, s.expired) == (0, 1) and sock.closed
            with clock.flowing():
                new = pool.get_connection(f"{PEER}:7")
            assert new is not sock and pool.stats().opened == 2
            pool.return_connection(new)
    finally:
        server.close()
        a.stop()
        b.stop()
        nics.close()


def test_close_closes_everything_and_wakes_waiters(stacks, echo):
    pool = ConnectionPool(stacks[0], max_per_host=2, wait_timeout=WAIT)
    idle, out = pool.get_connection(f"{PEER}:7"), pool.get_connection(f"{PEER}:7")
    pool.return_connection(idle)
    out2 = pool.get_connection(f"{PEER}:7")
    errors = []

    def wait_for_one():
        try:
            pool.get_connection(f"{PEER}:7")
        except OSError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_one)
    waiter.start()
    wait_for(lambda: pool.stats().waited == 1, "a caller to wait")
    pool.close()
    waiter.join(WAIT)
    assert [type(e) for e in errors] == [PoolClosed]
    assert idle.closed and out.closed and out2.closed and pool.closed
    with pytest.raises(PoolClosed, match="closed"):
        pool.get_connection(f"{PEER}:7")
    pool.return_connection(out)                     # late returns are fine
    pool.close()                                    # and so is a second close


@pytest.mark.parametrize("kwargs, error", [
    ({"max_per_host": 0}, ValueError), ({"max_per_host": 1.5}, ValueError),
    ({"idle_timeout": 0}, ValueError), ({"connect_timeout": -1}, ValueError),
    ({"wait_timeout": "5"}, ValueError), ({"ping": "yes"}, TypeError)])
def test_bad_arguments_are_refused(stacks, kwargs, error):
    with pytest.raises(error):
        ConnectionPool(stacks[0], **kwargs)


def test_a_host_without_a_port_is_refused(stacks):
    with ConnectionPool(stacks[0]) as pool:
        with pytest.raises(ValueError, match="host and port"):
            pool.get_connection(f"{PEER}:0")


def test_the_default_stack_is_used(stacks, echo):
    import stack

    stack.set_default_stack(stacks[0])
    try:
        with ConnectionPool() as pool, pool.connection(f"{PEER}:7") as sock:
            assert round_trip(sock) == b"hello\n"
    finally:
        stack.set_default_stack(None)


# -- many threads ------------------------------------------------------------------------------------------

PORTS = (7, 8, 9)
MAX = 2
ACTIONS = st.sampled_from(["return", "return", "return", "close", "quit"])


@pytest.fixture(scope="module")
def busy_lab():
    nics = LoopbackNicPair()
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST).start()
    servers = [EchoServer(b, port) for port in PORTS]
    yield a, servers
    for s in servers:
        s.close()
    a.stop()
    b.stop()
    nics.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(st.lists(st.tuples(st.sampled_from(PORTS), ACTIONS), min_size=3, max_size=8),
                      min_size=12, max_size=12), seed=st.integers(0, 2**16))
def test_many_threads_never_exceed_the_maximum_or_share_a_connection(busy_lab, plans, seed):
    a, servers = busy_lab
    held: dict[int, int] = {}                       # id(sock) -> port, while a thread holds it
    per_port = {p: 0 for p in PORTS}
    book = threading.Lock()
    failures: list[str] = []
    rng = random.Random(seed)

    def worker(plan, pool):
        for port, action in plan:
            sock = pool.get_connection(f"{PEER}:{port}")
            with book:
                if id(sock) in held:
                    failures.append(f"{sock!r} handed to two threads")
                held[id(sock)] = port
                per_port[port] += 1
                if per_port[port] > MAX:
                    failures.append(f"{per_port[port]} connections to port {port} handed out")
                for host, hs in pool.stats().hosts.items():
                    if hs.in_use + hs.idle > MAX:
                        failures.append(f"{host}: {hs} over the maximum")
            payload = f"{threading.get_ident()}-{rng.random()}\n".encode()
            if round_trip(sock, payload) != payload:
                failures.append("a connection carried someone else's reply")
            with book:
                del held[id(sock)]
                per_port[port] -= 1
            if action == "close":
                sock.close()
            elif action == "quit":
                sock.sendall(b"quit\n")             # the server closes it: not fit to keep
                wait_for(lambda: state_of(sock) is not TcpState.ESTABLISHED, "the server's FIN")
            pool.return_connection(sock)

    with ConnectionPool(a, max_per_host=MAX, wait_timeout=30.0) as pool:
        errors = []

        def run(plan):
            try:
                worker(plan, pool)
            except BaseException as exc:            # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(plan,)) for plan in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a worker is stuck"
        assert errors == [] and failures == []
        s = pool.stats()
        assert s.in_use == 0 and s.idle <= MAX * len(PORTS)
        assert s.opened + s.reused == sum(len(p) for p in plans)


def test_a_ping_with_a_bug_raises_and_leaks_nothing(stacks, echo):
    def ping(sock) -> bool:
        raise ValueError("a bug in the application's ping")

    with ConnectionPool(stacks[0], max_per_host=1, ping=ping) as pool:
        first = pool.get_connection(f"{PEER}:7")
        pool.return_connection(first)
        with pytest.raises(ValueError, match="a bug"):
            pool.get_connection(f"{PEER}:7")
        assert first.closed
        s = pool.stats()
        assert (s.in_use, s.idle) == (0, 0)
