"""The HTTP server (`--serve http:`/`https:`) in process: started as `mnet stack` starts it, on one
stack of a LoopbackNicPair, with clients on the other stack's sockets."""
from __future__ import annotations

import hashlib
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
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
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
    assert queued.request("GET", "/status").status == 200


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
