"""The TCP load balancer (`--serve lb:...`, mnet.apps.loadbalancer) in process, on a LoopbackNicPair.

Stack A (10.0.0.1) holds the clients and the backends: small servers on
ports 7001.. that send their tag, echo what they get and say "bye" after the
client's FIN. Stack B (10.0.0.2) runs the load balancer on port 8080.
"""
from __future__ import annotations

import queue
import re
import threading
import time

import pytest

from mnet.apps.loadbalancer import relay
from mnet.services.runner import start_service
from mnet.services.service_loop import ServiceLoop
from mnet.services.spec import parse_service
from stack import LoopbackNicPair, PollEvent, Shutdown, SocketOption, SocketType, Stack
from support.waiting import wait_for

WAIT = 10.0
LB = ("10.0.0.2", 8080)


def echo_with_bye(conn, tag: bytes) -> None:
    """The backends' default: the tag, an echo of every byte, and "bye" once the client ended its stream."""
    conn.sendall(tag + b"\n")
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.sendall(b"bye\n")
    conn.shutdown(Shutdown.WRITE)
    while conn.recv(65536):
        pass


class Backend:
    """A server on stack A: `kill()` closes its listener and resets its connections, `start()` brings it back."""

    def __init__(self, stack, port: int, tag: bytes, serve=echo_with_bye) -> None:
        self.stack, self.port, self.tag, self.serve = stack, port, tag, serve
        self.conns = []
        self.listener = None
        self.start()

    @property
    def address(self) -> str:
        return f"10.0.0.1:{self.port}"

    def start(self) -> None:
        self.listener = self.stack.socket(SocketType.STREAM)
        self.listener.set_option(SocketOption.REUSE_ADDR, True)
        self.listener.bind(("10.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the backend is dead
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        conn.set_timeout(WAIT)
        try:
            self.serve(conn, self.tag)
        except OSError:
            pass  # reset or killed: the test looks at the client's side
        finally:
            conn.close()

    def kill(self) -> None:
        self.listener.close()
        for conn in self.conns:
            try:
                conn.set_option(SocketOption.LINGER, 0)
            except OSError:
                continue  # its thread closed it already
            conn.close()
        self.conns.clear()


class Lab:
    def __init__(self) -> None:
        self.pair = LoopbackNicPair()
        self.a = Stack(self.pair.a, "10.0.0.1/24").start()
        self.b = Stack(self.pair.b, "10.0.0.2/24").start()
        self.stopping = threading.Event()
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.backends: list[Backend] = []
        self.threads = []

    def add_backends(self, n: int, serve=echo_with_bye) -> list[Backend]:
        self.backends = [Backend(self.a, 7001 + k, b"b%d" % (k + 1), serve) for k in range(n)]
        return self.backends

    def serve(self, options: str = ""):
        """Start `lb:8080` on stack B with the backends (and `options`); its thread (with .status())."""
        spec = "lb:8080," + ",".join(f"backend={b.address}" for b in self.backends) + options
        t = start_service(self.b, parse_service(spec), self.stopping, self.lines.put)
        self.threads.append(t)
        return t

    def client(self):
        c = self.a.socket(SocketType.STREAM)
        c.set_timeout(WAIT)
        c.connect(LB)
        return c

    def expect(self, pattern: str) -> str:
        """The next report line matching `pattern` (bounded wait)."""
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {WAIT:g} s; seen:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(WAIT)
        for b in self.backends:
            b.kill()
        self.a.stop()
        self.b.stop()
        self.pair.close()


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


def read_until(c, end: bytes) -> bytes:
    got = b""
    while not got.endswith(end):
        data = c.recv(65536)
        assert data, f"the stream ended after {got!r}, before {end!r}"
        got += data
    return got


def read_all(c) -> bytes:
    got = b""
    while data := c.recv(65536):
        got += data
    return got


def ask(lab) -> bytes:
    """One short connection: the tag of the backend that answered."""
    with lab.client() as c:
        tag = read_until(c, b"\n").strip()
        c.shutdown(Shutdown.WRITE)
        assert read_all(c) == b"bye\n"
    return tag


def test_round_robin_takes_the_backends_in_turn_and_relays_both_ways(lab):
    lab.add_backends(3)
    lab.serve()
    assert [ask(lab) for _ in range(9)] == [b"b1", b"b2", b"b3"] * 3
    with lab.client() as c:
        assert read_until(c, b"\n") == b"b1\n"
        c.sendall(b"hello")
        assert read_until(c, b"hello") == b"hello"
        c.shutdown(Shutdown.WRITE)  # the backend answers after our FIN: half-close is passed on
        assert read_all(c) == b"bye\n"
    lab.expect(r"^lb:8080 10\.0\.0\.1:\d+ -> 10\.0\.0\.1:7001 closed: 5 bytes to the backend, 12 back$")


@pytest.mark.parametrize("policy, tags", [("least-conn", [b"b3"] * 4), ("round-robin", [b"b3", b"b1", b"b2", b"b3"])])
def test_least_conn_sends_new_connections_where_fewest_are_open(lab, policy, tags):
    lab.add_backends(3)
    lab.serve(f",policy={policy}")
    held = [lab.client(), lab.client()]  # one on b1, one on b2, both left open
    assert [read_until(c, b"\n") for c in held] == [b"b1\n", b"b2\n"]
    assert [ask(lab) for _ in range(4)] == tags
    for c in held:
        c.close()


def test_a_dead_backend_loses_no_new_connection(lab):
    b1, b2, b3 = lab.add_backends(3)
    t = lab.serve(",check=3600")  # no check will notice: the connection attempt itself does
    assert [ask(lab) for _ in range(3)] == [b"b1", b"b2", b"b3"]
    b2.kill()
    assert [ask(lab) for _ in range(6)] == [b"b1", b"b3"] * 3
    lab.expect(r"^lb:8080 backend 10\.0\.0\.1:7002 is down: Connection refused \(connecting a client\)$")
    status = t.status()
    assert re.search(r"10\.0\.0\.1:7002 +down +0 +1 +1 ", status), status
    assert re.search(r"10\.0\.0\.1:7001 +up +0 +4 +0 +0 +28$", status, re.M), status


def test_a_backend_comes_back_when_its_check_passes(lab):
    b1, b2 = lab.add_backends(2)
    lab.serve(",check=0.05")
    b2.kill()
    lab.expect(r"^lb:8080 backend 10\.0\.0\.1:7002 is down: .* \(health check\)$")  # refused, or reset mid-check
    assert [ask(lab) for _ in range(3)] == [b"b1"] * 3
    b2.start()
    lab.expect(r"^lb:8080 backend 10\.0\.0\.1:7002 is up$")
    assert sorted(ask(lab) for _ in range(2)) == [b"b1", b"b2"]


def test_connections_relayed_to_a_backend_that_goes_down_are_reset(lab):
    b1, b2 = lab.add_backends(2)
    lab.serve(",check=0.05")
    c = lab.client()
    assert read_until(c, b"\n") == b"b1\n"
    b1.listener.close()  # new connections are refused; the one we hold would live on, but is cut
    lab.expect(r"^lb:8080 backend 10\.0\.0\.1:7001 is down")
    with pytest.raises(ConnectionResetError):
        read_all(c)
    lab.expect(r"^lb:8080 10\.0\.0\.1:\d+ -> 10\.0\.0\.1:7001 reset: the backend is down$")
    c.close()
    assert ask(lab) == b"b2"


def test_with_no_backend_up_the_client_is_reset(lab):
    (b1,) = lab.add_backends(1)
    b1.kill()
    lab.serve(",check=3600")
    with lab.client() as c:
        with pytest.raises(ConnectionResetError):
            read_all(c)
    lab.expect(r"^lb:8080 10\.0\.0\.1:\d+: no backend is up, connection reset$")


def test_a_reset_from_either_side_is_passed_on(lab):
    (b1,) = lab.add_backends(1)
    lab.serve(",check=3600")  # (no health check after the first: only the relay sees the resets)
    c = lab.client()
    assert read_until(c, b"\n") == b"b1\n"
    b1.kill()  # resets its connection
    with pytest.raises(ConnectionResetError):
        read_all(c)
    c.close()
    lab.expect(r"-> 10\.0\.0\.1:7001 reset by the backend$")

    outcome = []

    def wait_for_reset(conn, tag):
        conn.sendall(tag + b"\n")
        try:
            conn.recv(100)
        except ConnectionResetError:
            outcome.append("reset")

    b1.serve = wait_for_reset
    b1.start()
    c = lab.client()
    assert read_until(c, b"\n") == b"b1\n"
    c.set_option(SocketOption.LINGER, 0)
    c.close()
    lab.expect(r"-> 10\.0\.0\.1:7001 reset by the client$")
    wait_for(lambda: outcome == ["reset"], "the backend to see the client's reset", WAIT)


def test_a_backend_that_does_not_read_stops_the_client_with_bounded_buffers(lab):
    go = threading.Event()

    def count_later(conn, tag):
        go.wait(WAIT)
        n = 0
        while data := conn.recv(65536):
            n += len(data)
        conn.sendall(b"%d" % n)

    lab.add_backends(1, count_later)
    t = lab.serve()
    c = lab.client()
    c.set_timeout(0.5)
    block = bytes(range(256)) * 256
    sent = 0
    bound = 4 * 262144 + relay.PIPE_LIMIT  # four TCP buffers on the way and one pipe
    while sent <= 2 * bound:
        try:
            sent += c.send(block)
        except TimeoutError:
            break  # nothing more fits: the balancer stopped reading us
    assert sent <= bound, f"{sent} bytes queued: the balancer buffers without bound"
    go.set()
    c.set_timeout(WAIT)
    c.shutdown(Shutdown.WRITE)
    assert read_all(c) == b"%d" % sent
    c.close()
    lab.expect(rf"closed: {sent} bytes to the backend, {len(str(sent))} back$")
    assert re.search(rf"10\.0\.0\.1:7001 +up +0 +1 +0 +{sent} +{len(str(sent))}$", t.status()), t.status()


def test_a_megabyte_each_way_at_once(lab):
    lab.add_backends(1)
    lab.serve()
    c = lab.client()
    payload = bytes(range(256)) * 4096
    writer = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(Shutdown.WRITE)))
    writer.start()
    got = read_all(c)
    writer.join(WAIT)
    c.close()
    assert got == b"b1\n" + payload + b"bye\n"


def test_the_table_is_reported_when_the_service_stops(lab):
    lab.add_backends(2)
    t = lab.serve(",policy=least-conn")
    ask(lab)
    lab.stopping.set()
    t.join(WAIT)
    table = lab.expect(r"^lb:8080 backends \(least-conn\):\n")
    assert re.search(r"^  backend +state +active +connections +failures +sent +received$", table, re.M), table
    assert re.search(r"^  10\.0\.0\.1:7001 +up +0 +1 +0 +0 +7$", table, re.M), table
    assert re.search(r"^  10\.0\.0\.1:7002 +up +0 +0 +0 +0 +0$", table, re.M), table


def test_a_socket_that_wants_nothing_is_not_watched_even_for_a_hangup(lab):
    # The relay parks a socket while its pipe is full: a level-triggered hang-up must not spin the loop.
    server = lab.b.socket(SocketType.STREAM)
    server.bind(("10.0.0.2", 9000))
    server.listen()
    c = lab.a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect(("10.0.0.2", 9000))
    conn, _ = server.accept()
    conn.set_timeout(WAIT)
    c.close()
    conn.shutdown(Shutdown.WRITE)
    assert conn.recv(10) == b""  # the peer's FIN: from now on the socket is hung up for good
    loop = ServiceLoop(lambda line: None, lab.b.clock)
    handler = relay.End(None, conn, "client")
    loop.add(handler, PollEvent.READ)
    wait_for(lambda: loop.poller.poll(0), "the hang-up to be reported")
    loop.want(handler, PollEvent.NONE)
    assert loop.poller.poll(0) == []
    loop.want(handler, PollEvent.READ)
    wait_for(lambda: loop.poller.poll(0), "the hang-up to be reported again once watched")
    loop.remove(handler)
    loop.poller.close()
    server.close()


def test_a_backend_that_never_answers_costs_the_client_only_the_timeout(lab):
    (b1,) = lab.add_backends(1)
    # Nobody has .77. The timeout bounds b1's connects and its one health check too, which
    # must succeed: 1 s, not less, so a slow thread on a loaded machine does not fail them.
    spec = f"lb:8080,backend=10.0.0.77:7001,backend={b1.address},timeout=1,check=3600"
    lab.threads.append(start_service(lab.b, parse_service(spec), lab.stopping, lab.lines.put))
    assert [ask(lab) for _ in range(3)] == [b"b1"] * 3
    lab.expect(r"^lb:8080 backend 10\.0\.0\.77:7001 is down: ")


def test_many_clients_at_once_each_get_their_own_bytes_back(lab):
    lab.add_backends(3)
    t = lab.serve(",policy=least-conn")
    results = {}

    def one(k: int) -> None:
        payload = bytes([k]) * 20000
        with lab.client() as c:
            c.sendall(payload)
            c.shutdown(Shutdown.WRITE)
            results[k] = read_all(c)

    clients = [threading.Thread(target=one, args=(k,)) for k in range(30)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(WAIT * 3)
    assert sorted(results) == list(range(30))
    for k, got in results.items():
        assert got[3:] == bytes([k]) * 20000 + b"bye\n" and got[:3] in (b"b1\n", b"b2\n", b"b3\n")

    def rows():  # (active, connections, sent) of each backend
        return [re.search(rf"10\.0\.0\.1:700{i} +up +(\d+) +(\d+) +0 +(\d+) ", t.status()).groups() for i in (1, 2, 3)]

    # (a client may see the end of its stream a moment before the balancer counts the connection closed)
    wait_for(lambda: all(r[0] == "0" for r in rows()), "no connection left active")
    rows = rows()
    assert sum(int(r[1]) for r in rows) == 30 and sum(int(r[2]) for r in rows) == 30 * 20000


def test_both_sockets_of_a_relayed_connection_send_without_nagles_wait(lab, monkeypatch):
    # A relay passes small writes on as they come: with Nagle on either side, a reply the backend sends in
    # two writes would wait for the client's delayed ACK (and the other way round).
    from mnet.apps.loadbalancer import service

    sessions = []

    class Recorded(relay.Session):
        def __init__(self, *args):
            super().__init__(*args)
            sessions.append(self)

    monkeypatch.setattr(service, "Session", Recorded)
    lab.add_backends(1)
    lab.serve(",check=3600")
    with lab.client() as c:
        assert read_until(c, b"\n") == b"b1\n"
        (s,) = sessions
        assert s.client.sock.get_option(SocketOption.TCP_NO_DELAY) is True
        assert s.backend.sock.get_option(SocketOption.TCP_NO_DELAY) is True


def test_an_idle_relayed_connection_is_closed_on_both_sides_and_counted(lab):
    ends = []

    def echo_once_then_wait(conn, tag):
        hello = conn.recv(100)  # (the health check's connection ends at once: b"")
        if hello:
            conn.sendall(hello)
            try:
                ends.append(conn.recv(100))  # b"": the balancer's FIN
            except OSError as exc:
                ends.append(exc)

    lab.add_backends(1, echo_once_then_wait)
    t = lab.serve(",idle=0.2,check=3600")
    with lab.client() as c:
        c.sendall(b"hi")
        assert read_until(c, b"hi") == b"hi"
        assert read_all(c) == b""  # nothing moved for 0.2 s: a FIN, as nothing was waiting to be passed on
    lab.expect(r"^lb:8080 10\.0\.0\.1:\d+ -> 10\.0\.0\.1:7001 closed: idle for 0\.2 s, 2 bytes to the backend, 2 back$")
    wait_for(lambda: ends, "the backend to see the end of its connection", WAIT)
    assert ends == [b""]
    assert t.status().endswith("\n  closed after 0.2 s idle: 1"), t.status()
    assert re.search(r"10\.0\.0\.1:7001 +up +0 +1 +0 +2 +2$", t.status(), re.M), t.status()


def test_bytes_moving_either_way_keep_a_connection_from_being_idle(lab):
    lab.add_backends(1)
    # idle=2: a byte each way every 50 ms leaves room for a loaded machine's stalls.
    lab.serve(",idle=2,check=3600")
    with lab.client() as c:
        assert read_until(c, b"\n") == b"b1\n"
        start = lab.b.clock.now()
        while lab.b.clock.now() < start + 4.5:  # more than twice the idle time, a byte each way every 50 ms
            c.sendall(b"x")
            assert read_until(c, b"x") == b"x"
            time.sleep(0.05)  # (the pace of the exchange, not a wait for anything)
        assert read_all(c) == b""  # then quiet: closed once idle
    line = lab.expect(r"-> 10\.0\.0\.1:7001 closed: idle for 2 s, ")
    sent, back = map(int, re.search(r"(\d+) bytes to the backend, (\d+) back$", line).groups())
    assert back == sent + 3 and sent >= 10, line  # (the tag, then every byte echoed)


def test_an_idle_connection_with_bytes_stuck_in_the_balancer_is_reset(lab):
    go = threading.Event()
    lab.add_backends(1, lambda conn, tag: go.wait(WAIT))  # it reads nothing until the test is done
    t = lab.serve(",idle=0.3,check=3600")
    c = lab.client()
    block = bytes(256) * 256
    with pytest.raises((ConnectionResetError, BrokenPipeError)):  # (the reset, or the write after it)
        while True:
            c.send(block)  # fills the buffers on the way and the balancer's pipe, then blocks: idle from there
    c.close()
    go.set()
    lab.expect(r"-> 10\.0\.0\.1:7001 closed: idle for 0\.3 s, \d+ bytes to the backend, 0 back, [1-9]\d* stuck \(reset\)$")
    assert t.status().endswith("closed after 0.3 s idle: 1")
