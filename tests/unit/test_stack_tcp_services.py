"""The TCP services `mnet stack` runs (mnet.services: echo, discard, source) in-process on a LoopbackNicPair,
and their --serve syntax."""
import hashlib
import queue
import random
import re
import threading

import pytest

from mnet.services.connection_table import connection_table
from mnet.services.errors import ServiceError, ServiceSpecError
from mnet.services.runner import start_service
from mnet.services.source_stream import SOURCE_CHUNK, source_chunks
from mnet.services.spec import Service, parse_service
from stack import LoopbackNicPair, Shutdown, SocketType, Stack
from support.cli import assert_one_line_error, mnet

WAIT = 10.0


@pytest.mark.parametrize("text, service", [
    ("udp-echo:7", Service("udp-echo", 7)),
    ("tcp-echo:7", Service("tcp-echo", 7)),
    ("tcp-discard:9", Service("tcp-discard", 9)),
    ("tcp-source:19,bytes=1000", Service("tcp-source", 19, 1000)),
    ("tcp-source:19,bytes=0", Service("tcp-source", 19, 0)),
])
def test_parse_service(text, service):
    assert parse_service(text) == service


@pytest.mark.parametrize("text, fragment", [
    ("sctp-echo:7", "expected one of udp-echo:PORT, tcp-echo:PORT"),
    ("tcp-echo", "expected one of"),
    ("tcp-echo:0", "port must be 1..65535"),
    ("tcp-echo:x", "port must be 1..65535"),
    ("tcp-echo:7,bytes=5", "tcp-echo takes no parameters"),
    ("tcp-source:19", "tcp-source needs bytes=N"),
    ("tcp-source:19,size=5", "tcp-source needs bytes=N"),
    ("tcp-source:19,bytes=-1", "bytes must be a whole number >= 0"),
    ("tcp-source:19,bytes=1e6", "bytes must be a whole number >= 0"),
])
def test_bad_services_are_spec_errors(text, fragment):
    with pytest.raises(ServiceSpecError) as exc:
        parse_service(text)
    assert fragment in str(exc.value)


def test_a_bad_service_is_one_line_from_mnet(tmp_path):
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24",
             "--serve", "tcp-source:19")
    assert_one_line_error(r, "stack", "bad --serve 'tcp-source:19': tcp-source needs bytes=N")


def test_the_source_stream_is_documented_randbytes():
    size = 3 * SOURCE_CHUNK + 123
    data = b"".join(source_chunks(size))
    r = random.Random(0)
    expected = b"".join(r.randbytes(SOURCE_CHUNK) for _ in range(4))[:size]
    assert data == expected and len(data) == size
    assert b"".join(source_chunks(0)) == b""


@pytest.fixture
def served():
    """Stack b runs services; stack a is the client. Yields (a, b, start, lines)."""
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


def client(a, port):
    c = a.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    c.connect(("10.0.0.2", port))
    return c


def read_all(sock) -> bytes:
    out = bytearray()
    while data := sock.recv(65536):
        out += data
    return bytes(out)


def next_line(lines) -> str:
    try:
        return lines.get(timeout=WAIT)
    except queue.Empty:
        pytest.fail("the service printed nothing")


def test_tcp_echo_serves_several_connections_at_once(served):
    a, b, start, lines = served
    start(Service("tcp-echo", 7))
    clients = [client(a, 7) for _ in range(5)]
    for n, c in enumerate(clients):  # all open at once, answered in any order
        c.sendall(bytes([n]) * (20000 * (n + 1)))
    for n, c in reversed(list(enumerate(clients))):
        c.shutdown(Shutdown.WRITE)
        assert read_all(c) == bytes([n]) * (20000 * (n + 1))
        c.close()
    got = sorted(next_line(lines) for _ in clients)
    assert all(re.fullmatch(r"tcp-echo:7 10\.0\.0\.1:\d+ echoed \d+ bytes", line) for line in got), got
    assert sorted(int(line.split()[-2]) for line in got) == [20000 * (n + 1) for n in range(5)]


def test_tcp_discard_reports_bytes_and_sha256(served):
    a, b, start, lines = served
    start(Service("tcp-discard", 9))
    payload = random.Random(5).randbytes(300_000)
    c = client(a, 9)
    c.sendall(payload)
    c.close()
    line = next_line(lines)
    port = c and re.match(r"tcp-discard:9 10\.0\.0\.1:(\d+) ", line)
    assert port and line.endswith(f" received 300000 bytes sha256 {hashlib.sha256(payload).hexdigest()}"), line


def test_tcp_discard_reports_a_reset(served):
    from stack import SocketOption

    a, b, start, lines = served
    start(Service("tcp-discard", 9))
    c = client(a, 9)
    c.sendall(b"x" * 1000)
    c.set_option(SocketOption.LINGER, 0)
    c.close()
    line = next_line(lines)
    assert "received" in line and "then error: Connection reset by peer" in line, line


def test_tcp_source_sends_the_documented_stream_then_closes(served):
    a, b, start, lines = served
    size = 1_000_003
    start(Service("tcp-source", 19, size))
    expected = b"".join(source_chunks(size))
    c1, c2 = client(a, 19), client(a, 19)
    d2, d1 = read_all(c2), read_all(c1)
    assert d1 == expected and d2 == expected
    c1.close()
    c2.close()
    digest = hashlib.sha256(expected).hexdigest()
    for _ in range(2):
        line = next_line(lines)
        assert re.fullmatch(rf"tcp-source:19 10\.0\.0\.1:\d+ sent {size} bytes sha256 {digest}", line), line


def test_connection_table_lists_listeners_and_connections(served):
    a, b, start, lines = served
    start(Service("tcp-echo", 7))
    c = client(a, 7)
    c.sendall(b"hi")
    assert c.recv(10) == b"hi"
    table = connection_table(b)
    assert table.startswith("connections:\n  State")
    # The services ask for a backlog of SOMAXCONN (4096): a burst of clients waits in the queues.
    assert re.search(r"^  LISTEN +0 +4096 +0\.0\.0\.0:7 +\*:\* +syn-queue:0/4096 .*accepted:1", table, re.M), table
    assert re.search(r"^  ESTABLISHED +\d+ +\d+ +10\.0\.0\.2:7 +10\.0\.0\.1:\d+ .*cwnd:\d+.*retrans:0", table, re.M), table
    c.close()


def test_a_port_taken_twice_is_a_service_error(served):
    a, b, start, lines = served
    start(Service("tcp-echo", 7))
    with pytest.raises(ServiceError) as exc:
        start(Service("tcp-discard", 7))
    assert str(exc.value) == "--serve tcp-discard:7: address 0.0.0.0:7 is already in use"


@pytest.mark.parametrize("kind", ["udp-echo", "tcp-echo"])
def test_a_service_whose_socket_the_stopping_stack_closed_ends_quietly(served, kind):
    # `mnet stack --serve udp-echo:7 --serve udp-echo:7`: the second fails, the stack stops and
    # closes the first one's socket, maybe before its thread began: no traceback from that thread.
    from mnet.services.runner import open_service, serve

    a, b, start, lines = served
    svc = Service(kind, 7)
    sock = open_service(b, svc)
    sock.close()
    serve(b, sock, svc, threading.Event(), lines.put)  # returns; nothing raised
    assert lines.empty()


def test_the_stack_nic_rings_hold_a_burst_of_handshakes_as_large_as_the_listen_queues():
    # The services listen with SOMAXCONN; a burst that large must not find the RX ring
    # full before the stack's thread gets to it (the kernel would resend those SYNs 1 s later).
    from mnet.cli.stack_common import STACK_QUEUE_SIZE
    from stack.tcp import SOMAXCONN

    assert STACK_QUEUE_SIZE >= SOMAXCONN
