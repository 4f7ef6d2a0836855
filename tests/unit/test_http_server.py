"""The HTTP server (`--serve http:`/`https:`) in process: started as `mnet stack` starts it, on one
stack of a LoopbackNicPair, with clients on the other stack's sockets."""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading

import pytest

from mnet.services.runner import start_service
from mnet.services.spec import parse_service
from stack import LoopbackNicPair, SocketType, Stack
from support.cli import assert_one_line_error, mnet
from support.http_client import HttpClientConnection
from support.waiting import wait_for

WAIT = 10.0
SERVER_IP = "10.0.0.1"
LOG_LINE = re.compile(r'(https?:\d+) (\d+\.\d+\.\d+\.\d+) - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                      r'"([^"]*)" (\d{3}) (\d+|-)')


class Lab:
    """A server stack and a client stack; ``serve("http:80,...")`` starts a service on the server."""

    def __init__(self) -> None:
        nic_a, nic_b = LoopbackNicPair()
        self.server = Stack(nic_a, f"{SERVER_IP}/24").start()
        self.client = Stack(nic_b, "10.0.0.2/24").start()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.log: list[str] = []
        self.clients: list = []     # the client sockets, closed with the lab

    def serve(self, spec: str) -> None:
        self.threads.append(start_service(self.server, parse_service(spec), self.stopping, self.log.append))

    def connect(self, port: int = 80) -> HttpClientConnection:
        sock = self.client.socket(SocketType.STREAM)
        sock.set_timeout(WAIT)
        self.clients.append(sock)
        sock.connect((SERVER_IP, port))
        return HttpClientConnection(sock)

    def access_log(self) -> list[tuple[str, ...]]:
        return [m.groups() for line in self.log if (m := LOG_LINE.fullmatch(line))]

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(WAIT)
        alive = [t.name for t in self.threads if t.is_alive()]
        for sock in self.clients:
            sock.close()
        self.server.stop()
        self.client.stop()
        assert not alive, f"server threads still running after stopping: {alive}"


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>MultiOS</h1>\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "secret.txt").write_text("top secret")
    return root


def test_keep_alive_two_requests_on_one_connection_then_close(lab, root):
    lab.serve(f"http:80,root={root}")
    c = lab.connect()
    first = c.request("GET", "/")
    assert first.status == 200 and first.body == b"<h1>MultiOS</h1>\n"
    assert first.headers["connection"] == "keep-alive" and first.headers["content-type"].startswith("text/html")
    assert first.headers["server"].startswith("MultiOS-http/") and first.headers["date"].endswith(" GMT")
    big = c.request("GET", "/sub/big.bin", "Connection: close")
    assert big.status == 200 and big.headers["connection"] == "close"
    assert hashlib.sha256(big.body).digest() == hashlib.sha256((root / "sub" / "big.bin").read_bytes()).digest()
    assert big.headers["content-type"] == "application/octet-stream"
    assert c.at_end()
    wait_for(lambda: len(lab.access_log()) == 2, "two access-log lines")
    assert lab.access_log() == [("http:80", "10.0.0.2", "GET / HTTP/1.1", "200", "17"),
                                ("http:80", "10.0.0.2", "GET /sub/big.bin HTTP/1.1", "200", "300000")]


def test_served_connections_have_tcp_nodelay(lab, root):
    # Without it, a response's tail waits for the client's delayed ACK of what went before.
    lab.serve(f"http:80,root={root}")
    c = lab.connect()
    assert c.request("GET", "/").status == 200
    served = [i for i in lab.server.connections() if i.local[1] == 80]
    assert len(served) == 1 and "nodelay" in served[0].options, served
    assert not any("nodelay" in i.options for i in lab.client.connections())


class RecordingSocket:
    """A stack socket whose sendall calls are kept, to see how a response is written."""

    def __init__(self, sock) -> None:
        self.sock, self.writes = sock, []

    def sendall(self, data) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_a_response_head_goes_out_with_its_body_in_one_write(lab, root):
    from mnet.apps.http.connection import HttpConnection, ServerSettings
    from mnet.apps.http.files import DirectorySite

    (root / "empty.txt").write_bytes(b"")
    listener = lab.server.socket(SocketType.STREAM)
    listener.bind((SERVER_IP, 81))
    listener.listen(1)
    c = lab.connect(81)
    sock, peer = listener.accept()
    listener.close()
    recorder = RecordingSocket(sock)
    settings = ServerSettings("http:81", DirectorySite(str(root)), lab.log.append, lab.server.now, lab.stopping)
    server = threading.Thread(target=HttpConnection(recorder, str(peer.ip), settings).serve, daemon=True)
    server.start()
    answers = []
    for target in ("/", "/empty.txt", "/nothing-here", "/sub/big.bin"):
        before = len(recorder.writes)
        answers.append(c.request("GET", target))
        answers[-1].writes = recorder.writes[before:]
    small, empty, missing, big = answers
    assert [r.status for r in answers] == [200, 200, 404, 200]
    assert len(small.writes) == 1 and small.writes[0].endswith(b"<h1>MultiOS</h1>\n")
    assert len(empty.writes) == 1 and b"\r\nContent-Length: 0\r\n" in empty.writes[0]
    assert len(missing.writes) == 1 and missing.writes[0].endswith(missing.body)
    assert big.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and len(big.writes[0]) > 65536
    assert b"".join(big.writes).endswith(big.body) and len(big.body) == 300_000
    c.sock.close()
    server.join(WAIT)
    assert not server.is_alive()


def test_http_1_0_closes_unless_asked_to_keep_alive(lab):
    lab.serve("http:80")
    c = lab.connect()
    r = c.request("GET", "/", version="HTTP/1.0")
    assert r.status == 200 and r.headers["connection"] == "close" and c.at_end()
    c = lab.connect()
    r = c.request("GET", "/", "Connection: keep-alive", version="HTTP/1.0")
    assert r.headers["connection"] == "keep-alive"
    assert c.request("GET", "/status", version="HTTP/1.0").status == 200 and c.at_end()


def test_head_has_the_headers_of_get_and_no_body(lab, root):
    lab.serve(f"http:80,root={root}")
    c = lab.connect()
    head = c.request("HEAD", "/sub/big.bin")
    get = c.request("GET", "/sub/big.bin")   # would be misread if HEAD had sent a body
    assert head.status == get.status == 200 and len(get.body) == 300_000
    assert {k: v for k, v in head.headers.items() if k != "date"} == {k: v for k, v in get.headers.items() if k != "date"}
    wait_for(lambda: len(lab.access_log()) == 2, "two access-log lines")
    assert lab.access_log()[0][2:] == ("HEAD /sub/big.bin HTTP/1.1", "200", "-")


def test_pipelined_requests_are_answered_in_order(lab, root):
    lab.serve(f"http:80,root={root}")
    c = lab.connect()
    c.send("GET /index.html HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
           "DELETE / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcBREW / HTTP/1.1\r\nHost: h\r\n\r\n"
           "GET /sub HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    replies = [c.reply() for _ in range(5)]
    assert [r.status for r in replies] == [200, 404, 405, 501, 301]
    assert replies[2].headers["allow"] == "GET, HEAD" and replies[4].headers["location"] == "/sub/"
    assert c.at_end()


def test_quotes_in_a_target_are_escaped_in_the_access_log(lab):
    lab.serve("http:80")
    c = lab.connect()
    assert c.request("GET", '/a"b\\c', "Connection: close").status == 404
    line = wait_for(lambda: next((line for line in lab.log if "GET" in line), None), "the access-log line")
    assert ' "GET /a\\"b\\\\c HTTP/1.1" 404 ' in line, line


def test_traversal_attempts_do_not_leave_the_root(lab, root):
    lab.serve(f"http:80,root={root}")
    (root / "link").symlink_to(root.parent / "secret.txt")
    c = lab.connect()
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/sub/%2E%2E/%2e%2e/secret.txt", "/link",
                 "//../secret.txt", "http://h/../secret.txt"):
        r = c.request("GET", path)
        assert r.status in (400, 404) and b"top secret" not in r.body, (path, r.status)


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                  # no Host
    (b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"x" * 20_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),           # bad hex
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX", 400),        # no CRLF
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n", 413),  # 1 MiB + 1
])
def test_bad_requests_get_their_status_and_the_connection_is_closed(lab, request_bytes, status):
    lab.serve("http:80")
    c = lab.connect()
    c.send(request_bytes)
    r = c.reply()
    assert r.status == status and r.headers["connection"] == "close"
    assert c.at_end()
    wait_for(lambda: lab.access_log(), "an access-log line")
    assert lab.access_log()[0][2:4] == ("-", str(status))


def test_a_slow_client_gets_408_and_does_not_hold_up_the_others(lab):
    lab.serve("http:80,workers=2,timeout=3")
    slow = lab.connect()
    slow.send("GET / HTTP/1.1\r\nHost: h\r\n")
    stop_dribbling = threading.Event()

    def dribble():  # slowloris: one more header line now and then, never the end
        for i in range(100):
            if stop_dribbling.wait(0.2):
                return
            try:
                slow.send(f"X-Slow-{i}: y\r\n")
            except OSError:
                return

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        for _ in range(3):   # the other worker serves fresh clients while the slow one dribbles
            fast = lab.connect()
            assert fast.request("GET", "/", "Connection: close").status == 200
        slow.sock.set_timeout(0)
        with pytest.raises(BlockingIOError):  # ... and the slow one is still waiting, unanswered
            slow.sock.recv(1)
        slow.sock.set_timeout(WAIT)
        r = slow.reply()
        assert r.status == 408 and r.headers["connection"] == "close"
    finally:
        stop_dribbling.set()
        dribbler.join(WAIT)
    wait_for(lambda: any(entry[3] == "408" for entry in lab.access_log()), "the 408 in the access log")


def test_an_idle_keep_alive_connection_is_closed_without_a_response(lab):
    lab.serve("http:80,timeout=2")      # (the request must arrive within it, on a loaded machine too)
    c = lab.connect()
    assert c.request("GET", "/").status == 200
    assert c.at_end()  # nothing more came within the timeout: closed, no 408


def test_when_every_worker_is_busy_and_the_queue_is_full_the_next_client_gets_503(lab):
    lab.serve("http:80,workers=1,queue=1,timeout=5")
    holder = lab.connect()
    assert holder.request("GET", "/").status == 200   # the one worker now waits on this kept-alive connection
    queued = lab.connect()                              # waits in the queue
    turned_away = lab.connect()
    r = turned_away.reply()
    assert r.status == 503 and r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
    assert turned_away.at_end()
    holder.sock.close()                                 # the worker is free: the queued client is served
    status = queued.request("GET", "/status")
    assert status.status == 200
    assert json.loads(status.body)["server"]["by_status"]["503"] == 1


def test_expect_100_continue_is_answered_before_the_body(lab):
    lab.serve("http:80")
    c = lab.connect()
    c.send("POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = c.reply(head_only=True)
    assert interim.status == 100 and interim.headers == {}
    c.send("x=1&y")
    r = c.reply()
    assert r.status == 405 and r.headers["connection"] == "keep-alive"
    assert c.request("GET", "/").status == 200   # the body was read: the connection is in step


def chunked(body: bytes, size: int) -> bytes:
    return b"".join(b"%x;n=v\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\nX-Trailer: t\r\n\r\n"


def test_a_chunked_body_is_read_and_the_connection_stays_in_step(lab):
    lab.serve("http:80")
    c = lab.connect()
    body = os.urandom(200_000)
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 7000))
    r = c.reply()
    assert r.status == 200 and r.headers["connection"] == "keep-alive"
    c.send(b"POST /form HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"x=1", 1))
    assert c.reply().status == 405
    assert c.request("GET", "/status").status == 200   # a third request on the same connection


def test_a_chunked_body_over_1_mib_is_413_as_it_streams(lab):
    lab.serve("http:80")
    c = lab.connect()
    c.send(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
    for _ in range(16):               # exactly 1 MiB: still within the limit, no answer yet
        c.send(piece)
    c.send(b"1\r\n")                  # one byte more announced: refused before it comes
    r = c.reply()
    assert r.status == 413 and r.headers["connection"] == "close"
    assert c.at_end()


def test_expect_100_continue_with_a_chunked_body(lab):
    lab.serve("http:80")
    c = lab.connect()
    c.send("PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
    assert c.reply(head_only=True).status == 100
    c.send(chunked(b"payload", 3))
    assert c.reply().status == 405
    assert c.request("GET", "/").status == 200


def test_stopping_closes_idle_keep_alive_connections_at_once(lab):
    lab.serve("http:80,timeout=60")   # far longer than the client waits: only stopping can end it
    c = lab.connect()
    assert c.request("GET", "/").status == 200
    lab.stopping.set()
    assert c.at_end()


def test_status_counts_the_servers_responses(lab):
    import json

    lab.serve("http:80")
    c = lab.connect()
    assert c.request("GET", "/missing").status == 404
    status = json.loads(c.request("GET", "/status").body)
    assert status["server"]["by_status"] == {"404": 1} and status["server"]["connections_accepted"] == 1
    assert status["stack"]["tcp"]["rx_segments"] > 0


def test_stopping_ends_the_server_and_frees_its_port(lab):
    lab.serve("http:80,workers=3")
    c = lab.connect()
    assert c.request("GET", "/").status == 200
    lab.stopping.set()
    for t in lab.threads:
        t.join(WAIT)
        assert not t.is_alive()
    lab.stopping.clear()
    lab.serve("http:80")       # the port is free again
    assert lab.connect().request("GET", "/", "Connection: close").status == 200


def test_a_port_already_served_is_a_service_error(lab):
    from mnet.services.errors import ServiceError

    lab.serve("tcp-echo:80")
    with pytest.raises(ServiceError, match="--serve http:80: .*in use"):
        lab.serve("http:80")


# -- https ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from support.tls_certs import TestCa

    ca = TestCa(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("www.test", ip=SERVER_IP)


@pytest.mark.parametrize("version", ["TLS1_2", "TLS1_3"])
def test_https_with_each_tls_version(lab, pki, root, version):
    from stack.tls import Certificate, SecurityConfig, TlsVersion, connect_secure

    ca, issued = pki
    lab.serve(f"https:443,cert={issued.cert_file},key={issued.key_file},root={root}")
    pinned = TlsVersion[version]
    config = SecurityConfig(min_version=pinned, max_version=pinned)
    config.add_trusted_certificate(Certificate.from_pem_file(ca.cert_file))
    tls = connect_secure(f"{SERVER_IP}:443", "www.test", config, stack=lab.client, timeout=WAIT)
    assert tls.version == version.replace("TLS", "TLSv").replace("_", ".")
    c = HttpClientConnection(tls)
    assert c.request("GET", "/").body == b"<h1>MultiOS</h1>\n"
    big = c.request("GET", "/sub/big.bin", "Connection: close")
    assert big.body == (root / "sub" / "big.bin").read_bytes()
    assert c.at_end()
    tls.close()
    wait_for(lambda: len(lab.access_log()) == 2, "two access-log lines")
    assert [entry[0] for entry in lab.access_log()] == ["https:443", "https:443"]


def test_https_logs_a_failed_handshake_and_goes_on(lab, pki, tmp_path):
    from stack.tls import Certificate, SecurityConfig, TlsError, connect_secure
    from support.tls_certs import TestCa

    ca, issued = pki
    lab.serve(f"https:443,cert={issued.cert_file},key={issued.key_file}")
    stranger = SecurityConfig()
    stranger.add_trusted_certificate(Certificate.from_pem_file(TestCa(tmp_path, "other CA").cert_file))
    with pytest.raises(TlsError):
        connect_secure(f"{SERVER_IP}:443", "www.test", stranger, stack=lab.client, timeout=WAIT)
    wait_for(lambda: any("TLS handshake failed" in line for line in lab.log), "the handshake failure logged")
    good = SecurityConfig()
    good.add_trusted_certificate(Certificate.from_pem_file(ca.cert_file))
    with connect_secure(f"{SERVER_IP}:443", "www.test", good, stack=lab.client, timeout=WAIT) as tls:
        assert HttpClientConnection(tls).request("GET", "/status").status == 200


def _first_flight_over_stack_tcp(lab, port: int, hello: bytes) -> bytes:
    """The server's answer to a raw ClientHello sent over the client stack's TCP, up to ServerHelloDone
    or an alert."""
    from support.legacy_tls_hello import ALERT, handshake_messages, records

    sock = lab.client.socket(SocketType.STREAM)
    sock.set_timeout(WAIT)
    lab.clients.append(sock)
    sock.connect((SERVER_IP, port))
    sock.send(hello)
    answer = b""
    while 14 not in handshake_messages(answer) and not any(kind == ALERT for kind, _ in records(answer)):
        data = sock.recv(65536)
        assert data, f"the server closed after {answer!r}"
        answer += data
    return answer


def test_https_serves_a_client_without_signature_algorithms_only_when_asked(lab, pki):
    # busybox wget's ClientHello: refused by default, served with sha1_signatures=yes.
    from support.legacy_tls_hello import (ALERT, ECDHE_ECDSA_AES128_GCM_SHA256, SERVER_HELLO, chosen_suite,
                                          client_hello, handshake_messages, records)

    _, issued = pki
    lab.serve(f"https:443,cert={issued.cert_file},key={issued.key_file}")
    lab.serve(f"https:8443,cert={issued.cert_file},key={issued.key_file},sha1_signatures=yes")
    assert records(_first_flight_over_stack_tcp(lab, 443, client_hello(SERVER_IP))) == [(ALERT, bytes([2, 40]))]
    wait_for(lambda: any("NO_SHARED_CIPHER" in line for line in lab.log), "the refused handshake logged")
    messages = handshake_messages(_first_flight_over_stack_tcp(lab, 8443, client_hello(SERVER_IP)))
    assert chosen_suite(messages[SERVER_HELLO]) == ECDHE_ECDSA_AES128_GCM_SHA256
def tls_client(lab, ca):
    from stack.tls import Certificate, SecurityConfig, connect_secure

    config = SecurityConfig()
    config.add_trusted_certificate(Certificate.from_pem_file(ca.cert_file))
    return HttpClientConnection(connect_secure(f"{SERVER_IP}:443", "www.test", config, stack=lab.client,
                                               timeout=WAIT))


def https_status(lab, ca) -> dict:
    """/status over a new TLS connection, once a worker is free to answer it (503 until then)."""
    answers = []

    def served() -> bool:
        try:
            c = tls_client(lab, ca)
        except OSError:
            return False  # dropped: the overflow thread still works through the connections closed before
        try:
            answers.append(c.request("GET", "/status", "Connection: close"))
        finally:
            c.sock.close()
        return answers[-1].status == 200

    wait_for(served, "a worker free to answer /status")
    return json.loads(answers[-1].body)["server"]


def ended_unanswered(conn: HttpClientConnection) -> bool:
    """Whether the server closed ``conn`` (without sending a byte); False while it is still open."""
    conn.sock.set_timeout(0)
    try:
        data = conn.sock.recv(1)
    except BlockingIOError:
        return False
    assert data == b"", f"a connection that was never served got {data!r}"
    return True


def test_https_with_a_full_queue_answers_503_after_a_handshake_on_the_overflow_thread(lab, pki):
    ca, issued = pki
    lab.serve(f"https:443,cert={issued.cert_file},key={issued.key_file},workers=1,queue=1,timeout=30")
    holder = tls_client(lab, ca)
    assert holder.request("GET", "/").status == 200   # the one worker now waits on this kept-alive connection
    queued = lab.connect(443)                            # TCP only: it waits in the queue
    turned_away = tls_client(lab, ca)                    # the handshake is done by the overflow thread
    r = turned_away.reply()                              # answered before any request is sent
    assert r.status == 503 and r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
    assert turned_away.at_end()
    for conn in (turned_away, holder, queued):
        conn.sock.close()
    server = https_status(lab, ca)
    assert server["connections_rejected"] >= 1 and server["by_status"]["503"] >= 1
    assert server.get("connections_dropped", 0) == 0
    wait_for(lambda: any(e[0] == "https:443" and e[2:4] == ("-", "503") for e in lab.access_log()), "503 logged")


def test_https_when_the_overflow_is_full_too_the_connection_is_closed_and_counted(lab, pki):
    from mnet.apps.http.pool import OVERFLOW_SLOTS

    ca, issued = pki
    lab.serve(f"https:443,cert={issued.cert_file},key={issued.key_file},workers=1,queue=1,timeout=30")
    holder = tls_client(lab, ca)
    assert holder.request("GET", "/").status == 200
    # Silent TCP connections: one in the queue, one in the overflow thread's handshake (30 s), its slots
    # full, and one more: whatever the threads' timing, at least one finds no room anywhere.
    silent = [lab.connect(443) for _ in range(1 + 1 + OVERFLOW_SLOTS + 1)]
    wait_for(lambda: any(ended_unanswered(c) for c in silent), "a connection closed for want of room")
    dropped = sum(ended_unanswered(c) for c in silent)
    for conn in (holder, *silent):
        conn.sock.close()
    server = https_status(lab, ca)
    assert server["connections_dropped"] >= dropped >= 1   # (the tries at /status may have been dropped too)


# -- options and the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("spec, fragment", [
    ("http:80,root=/no/such/dir", "root=/no/such/dir does not exist"),
    ("http:80,root=/etc/hostname", "root=/etc/hostname is not a directory"),
    ("http:80,workers=0", "workers= must be a whole number in 1..256"),
    ("http:80,queue=x", "queue= must be a whole number"),
    ("http:80,timeout=-1", "timeout= must be seconds"),
    ("http:80,colour=red", "http takes root=, workers=, queue=, timeout="),
    ("https:443,root=/tmp", "https needs cert=CERT,key=KEY"),
    ("https:443,cert=/no/cert.pem,key=/no/key.pem", "cert=/no/cert.pem does not exist"),
    ("https:443,cert=/no/cert.pem,key=/no/key.pem,sha1_signatures=1", "sha1_signatures= must be yes or no"),
])
def test_bad_options_are_one_line_from_mnet_stack(tmp_path, spec, fragment):
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24", "--serve", spec)
    assert_one_line_error(r, "stack", fragment)


def test_a_certificate_that_does_not_load_is_one_line_from_mnet_stack(tmp_path, pki):
    ca, issued = pki
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("not a certificate\n")
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24",
             "--serve", f"https:443,cert={not_pem},key={issued.key_file}")
    assert_one_line_error(r, "stack", f"cert={not_pem} and key={issued.key_file} do not load")
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24",
             "--serve", f"https:443,cert={issued.cert_file},key={ca.files.key_file}")  # a key of another cert
    assert_one_line_error(r, "stack", "do not load as a PEM certificate and its key")
