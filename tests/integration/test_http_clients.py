"""`mnet stack --serve http:...` and `https:...` against clients nobody here wrote.

One set-up for the module: `mnet switch` as a process with a vhost-user port
for `mnet stack` (10.0.0.9, a process too), one for a guest, and a TAP port
into a namespace this module creates, where the kernel (10.0.0.254) runs
curl, nc, socat and `openssl s_client`. One QEMU guest (10.0.0.1, booted once,
only for the tests that need it) runs busybox wget, over HTTP and HTTPS.

  http:80    root=WWW, workers=4, timeout=2 (the slow-client test waits that long)
  https:443  root=WWW, a certificate for 10.0.0.9 and www.test from the test's CA
  https:8443 the same with sha1_signatures=yes, for busybox's TLS (docs/http.md)
  https:8444 the same certificate, workers=1, queue=1, timeout=30 (a full queue is easy to make)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess

import pytest

from support.cli import Output, start_mnet_stack
from support.guestlab import booted_guest
from support.kernel_peer import KernelPeerSwitchProcessLab

pytestmark = pytest.mark.integration

STACK_IP = "10.0.0.9"
HOST_IP = "10.0.0.254"
GUEST_IP = "10.0.0.1"
NAME = "www.test"
WAIT = 20.0
INDEX = "<h1>MultiOS stack, served over HTTP</h1>\n"
SECRET = "the namespace's secret"
GUEST_FILE_BYTES = 512 * 1024  # 32 full TLS records


class Lab(KernelPeerSwitchProcessLab):
    """An `mnet switch` process with the stack's and the guest's ports and the
    kernel's namespace, and an `mnet stack` process serving HTTP and HTTPS."""

    def __init__(self, tmp) -> None:
        from support.tls_certs import TestCa

        self.www = tmp / "www"
        (self.www / "docs").mkdir(parents=True)
        (self.www / "index.html").write_text(INDEX)
        (self.www / "docs" / "notes.txt").write_text("plain text notes\n")
        (self.www / "docs" / "random.bin").write_bytes(os.urandom(GUEST_FILE_BYTES))
        (tmp / "secret.txt").write_text(SECRET)
        (tmp / "pki").mkdir()
        self.ca = TestCa(tmp / "pki")
        self.cert = self.ca.issue(NAME, ip=STACK_IP)
        self.stack = self.output = None
        super().__init__(tmp, "http", host_ips=[HOST_IP], vhost_ports=("stack", "guest"))
        try:
            self.stack, self.output = start_mnet_stack(
                "--nic", f"vhost-user:{self.sockets['stack']}", "--ip", f"{STACK_IP}/24",
                "--serve", f"http:80,root={self.www},workers=4,timeout=2",
                "--serve", f"https:443,cert={self.cert.cert_file},key={self.cert.key_file},root={self.www}",
                "--serve", f"https:8443,cert={self.cert.cert_file},key={self.cert.key_file},root={self.www},"
                "sha1_signatures=yes",
                "--serve", f"https:8444,cert={self.cert.cert_file},key={self.cert.key_file},workers=1,queue=1,"
                           "timeout=30")
            self.own(self.stack, _kill)
            self.banner = "".join(self.output.until(r"^stack up: ", timeout=WAIT))
        except BaseException:
            self.close()
            raise

    def run(self, *argv: str, input: bytes | None = None, timeout: float = WAIT) -> subprocess.CompletedProcess:
        """A program in the namespace, to its end (bounded); output as text."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], input=input, capture_output=True,
                              timeout=timeout)

    def start(self, *argv: str) -> tuple[subprocess.Popen, Output]:
        """A program in the namespace, left running, with its stdin open; its stdout as lines."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, Output(proc)

    def sh(self, line: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", line, timeout=timeout)

    def log_line(self, pattern: str) -> str:
        """The next access-log line (or any output line) matching ``pattern``."""
        return self.output.until(pattern, timeout=WAIT)[-1]


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(tmp_path_factory.mktemp("http")) as lab:
        yield lab


def curl(lab, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return lab.run("curl", "--silent", "--show-error", "--max-time", str(int(timeout)), *args, timeout=timeout + 5)


def text(r: subprocess.CompletedProcess) -> str:
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def test_the_services_are_announced(lab):
    assert "serving http on port 80" in lab.banner and "serving https on port 443" in lab.banner, lab.banner
    assert "with 4 workers" in lab.banner, lab.banner


def test_curl_get_and_head(lab):
    r = curl(lab, "--include", f"http://{STACK_IP}/")
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith("HTTP/1.1 200 OK\r\n") and out.endswith(INDEX), text(r)
    assert re.search(r"^Content-Type: text/html; charset=utf-8\r$", out, re.M), out
    assert re.search(rf"^Content-Length: {len(INDEX)}\r$", out, re.M) and "\r\nServer: MultiOS-http/" in out, out
    line = lab.log_line(r'^http:80 ')
    assert re.fullmatch(rf'http:80 {HOST_IP} - - \[[^]]+\] "GET / HTTP/1.1" 200 {len(INDEX)}\n', line), line
    r = curl(lab, "--head", f"http://{STACK_IP}/docs/notes.txt")
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith("HTTP/1.1 200 OK"), text(r)
    assert "Content-Type: text/plain; charset=utf-8\r\n" in out and "Content-Length: 17\r\n" in out, out
    assert re.search(r'"HEAD /docs/notes.txt HTTP/1.1" 200 -$', lab.log_line(r"HEAD /docs")), "HEAD logged"


def test_curl_reuses_one_connection_for_two_urls(lab):
    r = curl(lab, "--verbose", f"http://{STACK_IP}/", f"http://{STACK_IP}/docs/notes.txt")
    assert r.returncode == 0 and r.stdout.decode() == INDEX + "plain text notes\n", text(r)
    err = r.stderr.decode()
    assert "Re-using existing connection" in err, err
    assert err.count("Connected to") == 1, err


@pytest.mark.parametrize("args, status, header", [
    (["/nope"], 404, None),
    (["-X", "POST", "--data", "x=1", "/"], 405, "Allow: GET, HEAD"),
    (["-X", "DELETE", "/"], 405, "Allow: GET, HEAD"),
    (["-X", "BREW", "/"], 501, None),
    (["/docs"], 301, "Location: /docs/"),
])
def test_curl_status_codes(lab, args, status, header):
    *options, path = args
    r = curl(lab, "--include", *options, f"http://{STACK_IP}{path}")
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith(f"HTTP/1.1 {status} "), text(r)
    assert header is None or f"\r\n{header}\r\n" in out, out


def test_curl_expecting_100_continue_gets_it_then_405(lab):
    body = lab.tmp / "form.bin"
    body.write_bytes(b"x" * 100_000)
    r = curl(lab, "--include", "--header", "Expect: 100-continue", "--data-binary", f"@{body}",
             f"http://{STACK_IP}/form")
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 "), text(r)


@pytest.mark.parametrize("path", ["/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt",
                                  "/docs/%2E%2E/%2e%2e/secret.txt", "//../secret.txt"])
def test_curl_path_traversal_is_refused(lab, path):
    r = curl(lab, "--path-as-is", "--write-out", "\n%{http_code}", f"http://{STACK_IP}{path}")
    body, _, code = r.stdout.decode().rpartition("\n")
    assert r.returncode == 0 and code in ("400", "404"), text(r)
    assert SECRET not in body


@pytest.mark.parametrize("request_text, status", [
    ("NOT HTTP AT ALL\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\n\r\n", 400),                                     # HTTP/1.1 without Host
    ("GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 20000 + "\r\n\r\n", 431),
    ("GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n", 413),
    ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + "f" * 17 + "\r\n", 400),
    ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"           # 1 MiB + 64 KiB, sent
     + ("10000\r\n" + "y" * 65536 + "\r\n") * 17 + "0\r\n\r\n", 413),
])
def test_nc_fed_malformed_and_oversized_requests(lab, request_text, status):
    # -N: shut down the write side at the end of input; the answer is read until the server closes.
    r = lab.run("nc", "-N", "-w", "10", STACK_IP, "80", input=request_text.encode())
    out = r.stdout.decode(errors="replace")
    assert out.startswith(f"HTTP/1.1 {status} "), text(r)
    assert "\r\nConnection: close\r\n" in out, out


def test_curl_sends_a_chunked_body_and_reuses_the_connection(lab):
    body = lab.tmp / "upload.bin"
    body.write_bytes(bytes(range(256)) * 1200)   # 300 KiB, sent in curl's own chunks
    r = curl(lab, "--verbose", "-X", "GET", "--header", "Transfer-Encoding: chunked", "--data-binary", f"@{body}",
             f"http://{STACK_IP}/", f"http://{STACK_IP}/docs/notes.txt")
    err = r.stderr.decode()
    assert r.returncode == 0 and r.stdout.decode() == INDEX + "plain text notes\n", text(r)
    assert "> Transfer-Encoding: chunked" in err and "Re-using existing connection" in err, err
    assert err.count("Connected to") == 1, err
    r = curl(lab, "--include", "--header", "Transfer-Encoding: chunked", "--data-binary", f"@{body}",
             f"http://{STACK_IP}/form")
    assert r.returncode == 0 and "HTTP/1.1 405 " in r.stdout.decode(), text(r)   # POST: read, then refused


def test_socat_fed_hand_written_chunks_then_a_second_request(lab):
    requests = (b"GET /docs/notes.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4;ext=1\r\nWiki\r\n0007\r\npedia i\r\n0\r\nX-Checksum: 12\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = lab.run("socat", "-t", "5", "-", f"TCP:{STACK_IP}:80", input=requests)
    out = r.stdout.decode(errors="replace")
    assert out.count("HTTP/1.1 200 OK\r\n") == 2 and out.endswith(INDEX), text(r)
    assert "plain text notes\n" in out, out


def test_https_with_a_full_queue_gives_curl_a_503(lab):
    url = f"https://{STACK_IP}:8444"
    holder, held = lab.start("openssl", "s_client", "-quiet", "-connect", f"{STACK_IP}:8444",
                             "-CAfile", str(lab.ca.cert_file), "-verify_hostname", NAME)
    holder.stdin.write("GET / HTTP/1.1\r\nHost: www.test\r\n\r\n")
    holder.stdin.flush()
    queued = waiting = None
    try:
        held.until(r"^HTTP/1.1 200 OK")      # the one worker now waits on this kept-alive connection
        queued, waiting = lab.start("sh", "-c", f"exec nc -v {STACK_IP} 8444 2>&1")
        waiting.until(r"succeeded")          # and this one waits in the queue, never handshaking
        r = curl(lab, "--include", "--cacert", str(lab.ca.cert_file), f"{url}/")
        out = r.stdout.decode()
        assert r.returncode == 0 and out.startswith("HTTP/1.1 503 Service Unavailable\r\n"), text(r)
        assert "\r\nRetry-After: 1\r\n" in out and "\r\nConnection: close\r\n" in out, out
        assert re.search(r'^https:8444 .* "-" 503 \d+$', lab.log_line(r'^https:8444 .*" 503 '))
    finally:
        for proc, output in ((holder, held), (queued, waiting)):
            if proc is None:
                continue
            proc.kill()
            output.close()
            proc.stdin.close()
    for _ in range(int(WAIT * 2)):           # until the worker is free again (503 meanwhile)
        r = curl(lab, "--cacert", str(lab.ca.cert_file), "--write-out", "\n%{http_code}", f"{url}/status")
        body, _, code = r.stdout.decode().rpartition("\n")
        if code == "200":
            break
    assert code == "200", text(r)
    server = json.loads(body)["server"]
    assert server["connections_rejected"] >= 1 and server["by_status"]["503"] >= 1, server


def test_nc_with_bare_lf_lines_is_served(lab):
    r = lab.run("nc", "-N", "-w", "10", STACK_IP, "80", input=b"GET /docs/notes.txt HTTP/1.0\n\n")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 200 OK") and out.endswith("plain text notes\n"), text(r)


def test_a_slow_client_gets_408_while_curl_is_served(lab):
    # socat feeds a header line every half second and never ends the request (slowloris);
    # the server's timeout=2 closes it with 408, and curl is served meanwhile.
    dribble = "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n'; for i in 1 2 3 4 5 6 7 8 9 10 11 12; " \
              "do sleep 0.5; printf 'X-Slow-%s: y\\r\\n' $i || exit 0; done"
    slow = subprocess.Popen(["ip", "netns", "exec", lab.netns, "sh", "-c",
                             f"({dribble}) | socat -t 2 - TCP:{STACK_IP}:80"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(3):
            r = curl(lab, f"http://{STACK_IP}/")
            assert r.returncode == 0 and r.stdout.decode() == INDEX, text(r)
        out, err = slow.communicate(timeout=WAIT)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait(5)
    assert out.decode().startswith("HTTP/1.1 408 Request Timeout\r\n"), (out, err)
    assert re.search(r'"-" 408 \d+$', lab.log_line(r'"-" 408 ')), "408 logged"


@pytest.mark.parametrize("flags, version", [(["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
                                            (["--tlsv1.3"], "TLSv1.3")])
def test_curl_over_https_with_each_tls_version(lab, flags, version):
    r = curl(lab, "--verbose", *flags, "--cacert", str(lab.ca.cert_file), f"https://{STACK_IP}/",
             f"https://{STACK_IP}/docs/notes.txt")
    err = r.stderr.decode()
    assert r.returncode == 0 and r.stdout.decode() == INDEX + "plain text notes\n", text(r)
    assert f"SSL connection using {version}" in err and "Re-using existing connection" in err, err
    assert re.search(rf'^https:443 {HOST_IP} - - \[[^]]+\] "GET /docs/notes.txt HTTP/1.1" 200 17$',
                     lab.log_line(r"^https:443 .*notes"), re.M)


def test_curl_refuses_the_server_for_another_name(lab):
    # curl checks the name itself once the handshake is done: the server sees a connection end.
    r = curl(lab, "--cacert", str(lab.ca.cert_file), "--resolve", f"other.test:443:{STACK_IP}",
             "https://other.test/")
    assert r.returncode == 60 and "other.test" in r.stderr.decode(), text(r)  # CURLE_PEER_FAILED_VERIFICATION


def test_curl_with_another_ca_fails_the_handshake_and_the_server_logs_it(lab, tmp_path):
    from support.tls_certs import TestCa

    stranger = TestCa(tmp_path, "stranger CA")
    r = curl(lab, "--cacert", str(stranger.cert_file), f"https://{STACK_IP}/")
    assert r.returncode == 60, text(r)
    line = lab.log_line(r"^https:443 .*TLS handshake failed")
    assert re.fullmatch(rf"https:443 {HOST_IP} TLS handshake failed: .*UNKNOWN_CA.*\n", line), line


def test_openssl_s_client_gets_a_page(lab):
    request = b"GET /docs/notes.txt HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n"
    r = lab.run("openssl", "s_client", "-connect", f"{STACK_IP}:443", "-CAfile", str(lab.ca.cert_file),
                "-verify_hostname", NAME, "-verify_return_error", "-brief", "-ign_eof", input=request)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert r.returncode == 0 and "Verification: OK" in err, err
    assert out.startswith("HTTP/1.1 200 OK\r\n") and out.endswith("plain text notes\n"), out


@pytest.fixture(scope="module")
def guest(lab, guest_image):
    with booted_guest("vm-http", guest_image, lab.sockets["guest"], f"{GUEST_IP}/24", lab.tmp / "vm-http") as vm:
        yield vm


def test_busybox_wget_in_a_guest_fetches_pages(lab, guest):
    # (busybox 1.35's wget crashes with -T: the guest's `timeout` bounds it instead, docs/guest.md)
    r = guest.run(f"timeout 30 wget -q -O - http://{STACK_IP}/", timeout=60)
    assert r.ok and r.output == INDEX, r
    line = lab.log_line(rf"^http:80 {GUEST_IP} ")
    assert re.search(r'"GET / HTTP/1.[01]" 200 \d+$', line), line
    r = guest.run(f"timeout 30 wget -q -O - http://{STACK_IP}/nope; echo status=$?", timeout=60)
    assert "status=1" in r.output, r


def test_busybox_wget_in_a_guest_needs_sha1_signatures_for_https(lab, guest):
    # busybox's TLS offers no signature algorithms: refused by default (docs/http.md).
    r = guest.run(f"timeout 30 wget -q -O - https://{STACK_IP}/; echo status=$?", timeout=60)
    assert "status=1" in r.output and "handshake failure" in r.output, r
    line = lab.log_line(rf"^https:443 {GUEST_IP} TLS handshake failed")
    assert "NO_SHARED_CIPHER" in line, line


def test_busybox_wget_in_a_guest_fetches_a_file_over_https(lab, guest):
    want = hashlib.sha256((lab.www / "docs" / "random.bin").read_bytes()).hexdigest()
    r = guest.run(f"timeout 60 wget -q -O /tmp/random.bin https://{STACK_IP}:8443/docs/random.bin && "
                  "wc -c < /tmp/random.bin && sha256sum < /tmp/random.bin && rm /tmp/random.bin", timeout=90)
    assert r.ok, r
    assert re.search(rf"^{GUEST_FILE_BYTES}\n{want}  -$", r.output, re.M), r
    line = lab.log_line(rf"^https:8443 {GUEST_IP} ")
    assert re.search(rf'"GET /docs/random.bin HTTP/1.[01]" 200 {GUEST_FILE_BYTES}$', line), line


def test_sigint_stops_the_stack_cleanly(lab):
    lab.stack.send_signal(signal.SIGINT)
    out, err = lab.output.finish(timeout=30)
    assert lab.stack.returncode == 0 and "Traceback" not in err, err
    assert "counters:" in out
