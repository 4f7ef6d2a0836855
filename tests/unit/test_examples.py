"""Every program in examples/ runs by itself (its in-process lab, no network set-up) and says
what it should: each one is run as a reader of the guide would run it, in a fresh
interpreter under -X dev (a ResourceWarning fails it), and its output is checked
line by line for what the example is there to show. A new example without an
entry in EXPECTED fails, so nothing in examples/ goes unrun."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_TIMEOUT = 120.0  # seconds; a bound, not a measurement

# example -> patterns (regular expressions) its output must contain, each on some line.
EXPECTED = {
    "echo_server.py": [r"listening on 10\.0\.0\.1:7", r"client 1 got b'hello 1'", r"client 3 got b'hello 3'",
                       r"10\.0\.0\.2:\d+ closed, 7 bytes echoed", r"echo server: done"],
    "echo_client.py": [r"connected 10\.0\.0\.1:\d+ -> 10\.0\.0\.2:7", r"sent 'hello', got back 'hello'",
                       r"sent 'MultiOS', got back 'MultiOS'", r"end of stream from the server",
                       r"echo client: 3 lines echoed by 10\.0\.0\.2:7"],
    "http_server.py": [r"'GET / HTTP/1\.0' -> HTTP/1\.0 200 OK \(64 bytes of body\)",
                       r"'HEAD /hello\.txt HTTP/1\.0' -> HTTP/1\.0 200 OK \(0 bytes of body\)",
                       r"'GET /missing HTTP/1\.0' -> HTTP/1\.0 404 Not Found",
                       r"'DELETE / HTTP/1\.0' -> HTTP/1\.0 501 Not Implemented",
                       r"'nonsense' -> HTTP/1\.0 400 Bad Request"],
    "udp_echo.py": [r"datagram 1: 5 bytes sent, 5 bytes echoed", r"datagram 2: 1400 bytes sent, 1400 bytes echoed",
                    r"datagram 3: 8000 bytes sent, 8000 bytes echoed", r"udp echo: done"],
    "dns_client.py": [r"^www\.example\.test has address 192\.0\.2\.10 \(ttl 300\)",
                      r"^www\.example\.test has IPv6 address 2001:db8::10",
                      r"^alias\.example\.test is an alias for www\.example\.test\.",
                      r"^missing\.example\.test: no such name \(NXDOMAIN\)",
                      r"^www\.example\.test has address 192\.0\.2\.10 \(no query: from the cache, ttl \d+ left\)",
                      r"^alias\.example\.test is an alias for www\.example\.test\.\n"
                      r"www\.example\.test has address 192\.0\.2\.10 \(no query: from the cache, ttl \d+ left\)",
                      r"^missing\.example\.test: no such name \(NXDOMAIN\) \(no query: from the cache\)",
                      r"^printer\.lan has address 10\.0\.0\.50 \(no query: hosts table\)",
                      r"dns client: 9 lookups, 5 queries sent"],
    "socket_options.py": [r"DATAGRAM TTL +64 -> 16", r"STREAM +TCP_NO_DELAY +False -> True",
                          r"STREAM +CONGESTION +'cubic' -> 'newreno'", r"TTL 0: OSError EINVAL",
                          r"TCP_NO_DELAY on a DATAGRAM socket: OSError ENOPROTOOPT",
                          r"accepted connection inherits \{'TCP_NO_DELAY': True, 'KEEP_ALIVE': True, "
                          r"'KEEP_IDLE': 30\.0, 'CONGESTION': 'newreno'\}"],
    "nonblocking_connect.py": [r"connect to 10\.0\.0\.2:7: EINPROGRESS", r"10\.0\.0\.2:7: connected",
                               r"10\.0\.0\.2:9: failed with ECONNREFUSED", r"echo 0: b'ping 0'",
                               r"echo 1: b'ping 1'", r"non-blocking connect: 2 of 3 connected"],
    "shutdown.py": [r"a send after shutdown\(WRITE\) fails: EPIPE",
                    r"server: end of stream from 10\.0\.0\.1:\d+ after 42 bytes",
                    r"client: the server says 42 bytes arrived", r"after shutdown\(READ\) recv returns b''"],
    "error_handling.py": [r"closed port 10\.0\.0\.2:9: ConnectionRefusedError errno=ECONNREFUSED",
                          r"silent 10\.0\.0\.77:80 .*: TimeoutError errno=ETIMEDOUT",
                          r"recv with nothing coming.*: TimeoutError errno=ETIMEDOUT",
                          r"peer reset the connection: ConnectionResetError errno=ECONNRESET",
                          r"send on the reset connection: BrokenPipeError errno=EPIPE",
                          r"send on a closed socket: OSError errno=EBADF"],
    "tls_client.py": [r"connected to 10\.0\.0\.2:4433 as 'server\.test': TLSv1\.3",
                      r"got back 'SLT revo olleh'", r"hostname 'other\.test': refused, reason 'wrong hostname'",
                      r"hostname 'server\.test': refused, reason 'untrusted CA'", r"tls client: done"],
    "connection_pool.py": [r"18 requests from 6 threads: \d+ connections opened",
                           r"after the server closed its idle connections: 'hello again'",
                           r"the pool opened a new connection: True", r"connection pool: done"],
}


def programs() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def run(name: str, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-X", "dev", str(EXAMPLES / name), *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} {' '.join(args)}: still running after {timeout:.0f} s")


def test_every_example_is_run_and_checked():
    assert programs() == sorted(EXPECTED), "an example in examples/ needs its expected output in EXPECTED"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_example_runs_and_shows_what_it_should(name):
    done = run(name)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{name}:\n{done.stderr[-3000:]}"
    assert "ResourceWarning" not in done.stderr, f"{name} leaves something unclosed:\n{done.stderr[-3000:]}"
    missing = [p for p in EXPECTED[name] if not re.search(p, done.stdout, re.MULTILINE)]
    assert not missing, f"{name} did not print {missing}; it printed:\n{done.stdout}"


@pytest.mark.parametrize("name", programs())
def test_the_example_says_what_it_shows_and_how_to_run_it(name):
    import ast

    doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text())) or ""
    assert "What it shows:" in doc and "Run it:" in doc and f"python examples/{name}" in doc, name
    assert f"`{name}`" in (EXAMPLES / "README.md").read_text(), f"examples/README.md does not list {name}"


@pytest.mark.parametrize("args, message", [
    (["--nic", "tap:x"], "bad --nic 'tap:x': expected vhost-user:PATH"),
    (["--nic", "vhost-user:/nonexistent.sock"], "--nic needs --ip ADDR/LEN"),
    (["--nic", "vhost-user:/nonexistent.sock", "--ip", "10.0.0.8"], "bad --ip '10.0.0.8'"),
])
def test_a_bad_lab_option_is_one_line(args, message):
    done = run("echo_client.py", *args, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"echo_client.py: {message}"), done.stderr


def test_a_nic_that_cannot_be_opened_is_one_line():
    done = run("dns_client.py", "--nic", "vhost-user:/nonexistent.sock", "--ip", "10.0.0.8/24", timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dns_client.py: cannot open vhost-user:/nonexistent.sock"), lines
