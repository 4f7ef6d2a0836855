"""The services' event loop (mnet.services.service_loop): one thread per service, however many
connections; each connection a non-blocking handler. In-process on a LoopbackNicPair."""
import queue
import threading

import pytest

from mnet.services import tcp_handlers
from mnet.services.runner import start_service
from mnet.services.spec import Service
from stack import IpAddress, LoopbackNicPair, PollEvent, Shutdown, SocketOption, SocketType, Stack
from stack.socket_api import Poller

WAIT = 10.0


@pytest.fixture
def served():
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24").start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    stopping = threading.Event()
    lines = queue.Queue()
    threads = []

    def start(svc):
        threads.append(start_service(b, svc, stopping, lines.put))

    yield a, b, start, lines
    stopping.set()
    a.stop()
    b.stop()
    for t in threads:
        t.join(WAIT)
    pair.close()


def next_line(lines) -> str:
    try:
        return lines.get(timeout=WAIT)
    except queue.Empty:
        pytest.fail("the service printed nothing")


def test_many_echo_connections_on_one_thread(served):
    a, b, start, lines = served
    start(Service("tcp-echo", 7))
    threads_before = threading.active_count()
    n = 200
    clients = []
    for _ in range(n):
        c = a.socket(SocketType.STREAM)
        c.set_nonblocking(True)
        try:
            c.connect(("10.0.0.2", 7))
        except BlockingIOError:
            pass
        clients.append(c)
    # The client side is an event loop too: connect, send 16 bytes each, read them back.
    p = Poller()
    for c in clients:
        p.register(c, PollEvent.WRITE)
    want = {c: i.to_bytes(2, "big") * 8 for i, c in enumerate(clients)}
    got = {c: b"" for c in clients}
    sent = set()
    while len(sent) < n or any(len(got[c]) < 16 for c in clients):
        ready = p.poll(WAIT * 1000)  # (milliseconds)
        assert ready, f"stuck: {len(sent)} sent, {sum(len(g) == 16 for g in got.values())} answered"
        for c, ev in ready:
            if c not in sent and PollEvent.WRITE in ev:
                assert c.take_error() is None
                c.sendall(want[c])
                sent.add(c)
                p.modify(c, PollEvent.READ)
            elif PollEvent.READ in ev:
                got[c] += c.recv(100)
    assert got == want
    assert threading.active_count() == threads_before  # no thread per connection
    for c in clients:
        p.unregister(c)
        c.shutdown(Shutdown.WRITE)
    p.close()
    for _ in range(n):
        assert next_line(lines).endswith(" echoed 16 bytes")
    for c in clients:
        c.close()


def test_an_echo_larger_than_the_buffers_keeps_everything_in_order(served):
    a, b, start, lines = served
    start(Service("tcp-echo", 7))
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect(("10.0.0.2", 7))
    payload = bytes(range(256)) * 4000  # 1 MB: the echo must wait for room many times
    out = bytearray()
    writer = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(Shutdown.WRITE)))
    writer.start()
    while data := c.recv(65536):
        out += data
    writer.join(WAIT)
    c.close()
    assert bytes(out) == payload
    assert next_line(lines).endswith(f" echoed {len(payload)} bytes")


def test_a_reset_is_reported_and_the_service_goes_on(served):
    a, b, start, lines = served
    start(Service("tcp-discard", 9))
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect(("10.0.0.2", 9))
    c.sendall(b"x" * 500)
    c.set_option(SocketOption.LINGER, 0)
    c.close()
    assert "then error: Connection reset by peer" in next_line(lines)
    d = a.socket(SocketType.STREAM)
    d.set_timeout(WAIT)
    d.connect(("10.0.0.2", 9))
    d.sendall(b"y" * 10)
    d.close()
    assert " received 10 bytes sha256 " in next_line(lines)


def test_tcp_source_gives_up_waiting_for_a_peer_that_never_closes(served, monkeypatch):
    monkeypatch.setattr(tcp_handlers, "DRAIN_TIMEOUT", 0.2)
    a, b, start, lines = served
    start(Service("tcp-source", 19, 1000))
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect(("10.0.0.2", 19))
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    assert len(data) == 1000  # then our FIN came; we never close
    assert " sent 1000 bytes sha256 " in next_line(lines)
    c.close()                 # (only now, the service having given up)


def test_udp_echo_answers_several_peers(served):
    a, b, start, lines = served
    start(Service("udp-echo", 7))
    socks = []
    for i in range(5):
        s = a.socket(SocketType.DATAGRAM)
        s.set_timeout(WAIT)
        s.send_to(bytes([i]) * 10, IpAddress.parse("10.0.0.2:7"))
        socks.append(s)
    for i, s in enumerate(socks):
        data, peer = s.recv_from(100)
        s.close()
        assert data == bytes([i]) * 10 and peer == IpAddress.parse("10.0.0.2:7")
