"""The programs of examples/ with --nic, against real peers: the host kernel's TCP (a
python echo server), dnsmasq and `openssl s_server`, in a namespace this module
creates behind a TAP port of a switch in this process.

  port "ex"   vhost-user -> each example, run as a process                       10.0.0.8
  port "host" TAP into the namespace: TCP and UDP echo on :7 (python on the kernel's
              sockets), dnsmasq on :5353, openssl s_server on :4433                  10.0.0.254
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.dnsmasq import Dnsmasq
from support.kernel_peer import WAIT, KernelPeerLab, require_programs
from support.tcplab import KernelProgram
from support.waiting import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_IP = "10.0.0.8"
HOST_IP = "10.0.0.254"
ECHO_PORT, DNS_PORT, TLS_PORT = 7, 5353, 4433
RUN_TIMEOUT = 60.0
RECORDS = ["--local=/test/", "--address=/plain.test/10.1.2.3", "--host-record=v6.test,10.1.2.4,2001:db8::4",
           "--cname=alias.test,v6.test"]

KERNEL_ECHO = """
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], int(sys.argv[2])))
def udp_echo():
    while True:
        d, peer = u.recvfrom(65535)
        u.sendto(d, peer)
threading.Thread(target=udp_echo, daemon=True).start()
print('ready', flush=True)
def echo(c):
    with c:
        while d := c.recv(65536):
            c.sendall(d)
while True:
    c, _ = l.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""


class ExamplesLab(KernelPeerLab):
    """The kernel-side servers run in the lab's namespace; each example runs on the "ex" port."""

    def run(self, example: str, *args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-X", "dev", str(EXAMPLES / example), "--nic", f"vhost-user:{self.sockets['ex']}",
                "--ip", f"{EXAMPLE_IP}/24", "--server", HOST_IP, *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{example} {' '.join(args)}: still running after {RUN_TIMEOUT:.0f} s")
        assert done.returncode == 0, f"{example} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
        assert "ResourceWarning" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
        return done


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_programs("dnsmasq", "openssl")
    with ExamplesLab(tmp_path_factory.mktemp("examples"), "ex", host_ips=(HOST_IP,), vhost_ports=("ex",)) as lab:
        echo = lab.own(KernelProgram(lab.netns, KERNEL_ECHO, HOST_IP, ECHO_PORT))
        assert echo.line(WAIT, "the kernel echo server's ready line") == "ready"
        lab.dnsmasq = lab.own(Dnsmasq(lab.netns, HOST_IP, DNS_PORT, RECORDS, lab.tmp / "dnsmasq.log", WAIT))
        yield lab


def test_echo_client_against_the_kernel(lab):
    out = lab.run("echo_client.py", "--port", str(ECHO_PORT), "first line", "second line").stdout
    assert f"-> {HOST_IP}:{ECHO_PORT}" in out.splitlines()[0]
    assert "sent 'first line', got back 'first line'" in out
    assert "sent 'second line', got back 'second line'" in out
    assert "end of stream from the server" in out
    assert f"echo client: 2 lines echoed by {HOST_IP}:{ECHO_PORT}" in out


def test_udp_echo_against_the_kernel(lab):
    out = lab.run("udp_echo.py", "--port", str(ECHO_PORT)).stdout
    for i, size in ((1, 5), (2, 1400), (3, 8000)):  # 8000 bytes: fragments both ways, reassembled by each side
        assert f"datagram {i}: {size} bytes sent, {size} bytes echoed by {HOST_IP}:{ECHO_PORT}" in out


def test_nonblocking_connect_and_errors_against_the_kernel(lab):
    out = lab.run("nonblocking_connect.py", "--port", str(ECHO_PORT), "--closed-port", "9").stdout
    assert f"{HOST_IP}:9: failed with ECONNREFUSED" in out  # the kernel's RST
    assert "echo 1: b'ping 1'" in out and "non-blocking connect: 2 of 3 connected" in out
    out = lab.run("error_handling.py", "--closed-port", "9").stdout
    assert f"connect to closed port {HOST_IP}:9: ConnectionRefusedError errno=ECONNREFUSED" in out
    assert "TimeoutError errno=ETIMEDOUT" in out and "error handling: done" in out


def test_connection_pool_against_the_kernel(lab):
    out = lab.run("connection_pool.py", "--port", str(ECHO_PORT)).stdout
    assert "18 requests from 6 threads:" in out and "connection pool: done" in out


def test_dns_client_against_dnsmasq(lab):
    out = lab.run("dns_client.py", "--port", str(DNS_PORT), "plain.test", "alias.test", "missing.test").stdout
    lines = out.splitlines()
    assert lines[0].startswith("plain.test has address 10.1.2.3 (ttl ")
    assert lines[1] == "alias.test is an alias for v6.test."
    assert lines[2].startswith("v6.test has address 10.1.2.4")
    assert lines[3] == "missing.test: no such name (NXDOMAIN)"
    assert "dns client: 3 lookups, 3 queries sent" in out
    assert "query[A] plain.test" in lab.dnsmasq.log.read_text()  # dnsmasq's own log: it was really asked


def test_tls_client_against_openssl_s_server(lab, tmp_path):
    from support.tls_certs import TestCa

    ca = TestCa(tmp_path)
    issued = ca.issue("server.test", ip=HOST_IP)
    argv = ["ip", "netns", "exec", lab.netns, "openssl", "s_server", "-accept", f"{HOST_IP}:{TLS_PORT}",
            "-cert", str(issued.cert_file), "-key", str(issued.key_file), "-naccept", "1", "-rev"]
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        def listening() -> bool:
            ss = subprocess.run(["ip", "netns", "exec", lab.netns, "ss", "-Hltn", f"sport = :{TLS_PORT}"],
                                capture_output=True, text=True, timeout=WAIT)
            return server.poll() is None and bool(ss.stdout.strip())

        wait_for(listening, f"openssl s_server listening on port {TLS_PORT}", timeout=WAIT)
        out = lab.run("tls_client.py", "--port", str(TLS_PORT), "--hostname", "server.test",
                      "--ca", str(ca.cert_file)).stdout
    finally:
        if server.poll() is None:
            server.kill()
        print(server.communicate(timeout=WAIT)[0][-2000:])
    assert f"connected to {HOST_IP}:{TLS_PORT} as 'server.test': TLSv1.3" in out
    assert "got back 'SLT revo olleh'" in out  # s_server -rev reversed our line
