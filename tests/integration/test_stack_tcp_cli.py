"""`mnet stack --serve tcp-echo/tcp-discard/tcp-source` against the host kernel.

One lab per module: a switch in this process with a vhost-user port for
`mnet stack` and a TAP port into a namespace this module creates, where the
kernel (nc, python sockets, sha256sum) is the peer at 10.0.0.254.
"""
from __future__ import annotations

import hashlib
import random
import re
import signal
import subprocess
import sys

import pytest

from support.cli import start_mnet_stack

pytestmark = pytest.mark.integration

HOST_IP = "10.0.0.254"
STACK_IP = "10.0.0.9"
SOURCE_BYTES = 100_000_000
DISCARD_BYTES = 100_000_000
ECHO_BYTES = 2_000_000


class Lab:
    def __init__(self, tmp, netns: str) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort

        self.netns = netns
        self.tmp = tmp
        self.stack_sock = str(tmp / "stack.sock")
        self.bg = BackgroundSwitch()
        try:
            self.bg.add_port(VhostUserPort("stack", self.stack_sock))
            tap = self.bg.add_port(TapPort("host", "mnstcp%d", netns=netns))
            ns.set_address(tap.ifname, f"{HOST_IP}/24", netns=netns)
        except BaseException:
            self.bg.close()
            raise

    def run(self, *cmd: str, stdin=None, timeout: float = 120.0, shell: bool = False) -> subprocess.CompletedProcess:
        """A command in the namespace (argv, or one shell line)."""
        argv = ["ip", "netns", "exec", self.netns, *(["sh", "-c", cmd[0]] if shell else cmd)]
        return subprocess.run(argv, stdin=stdin, capture_output=True, timeout=timeout)

    def close(self) -> None:
        print(self.bg.summary())
        self.bg.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-tcp") as netns:
        lab = Lab(tmp_path_factory.mktemp("stacktcp"), netns)
        try:
            yield lab
        finally:
            lab.close()


@pytest.fixture(scope="module")
def served(lab):
    """`mnet stack` with all three TCP services; yields (process, output); stopped with SIGINT at the end."""
    proc, output = start_mnet_stack("--nic", f"vhost-user:{lab.stack_sock}", "--ip", f"{STACK_IP}/24",
                                    "--serve", "tcp-echo:7", "--serve", "tcp-discard:9",
                                    "--serve", f"tcp-source:19,bytes={SOURCE_BYTES}")
    try:
        banner = output.until(r"^stack up: ")
        assert "serving tcp-echo on port 7\n" in banner and "serving tcp-discard on port 9\n" in banner, banner
        assert f"serving tcp-source on port 19 ({SOURCE_BYTES} bytes)\n" in banner, banner
        yield proc, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        output.close()


def expected_source(size: int) -> bytes:
    """The documented stream: random.Random(0).randbytes(65536) again and again, cut to size."""
    r = random.Random(0)
    return b"".join(r.randbytes(65536) for _ in range(size // 65536 + 1))[:size]


def test_tcp_source_to_nc_matches_sha256sum(lab, served):
    proc, output = served
    r = lab.run(f"nc -d {STACK_IP} 19 | sha256sum", shell=True)
    assert r.returncode == 0, r.stderr
    digest = hashlib.sha256(expected_source(SOURCE_BYTES)).hexdigest()
    assert r.stdout.decode().split()[0] == digest
    line = output.until(r"^tcp-source:19 ")[-1]
    assert re.fullmatch(rf"tcp-source:19 {HOST_IP}:\d+ sent {SOURCE_BYTES} bytes sha256 {digest}\n", line), line


def test_tcp_discard_from_nc_reports_the_sha256(lab, served):
    proc, output = served
    payload = random.Random(9).randbytes(DISCARD_BYTES)
    path = lab.tmp / "discard.bin"
    path.write_bytes(payload)
    r = lab.run("sh", "-c", f"sha256sum {path} && nc -N {STACK_IP} 9 < {path}")
    assert r.returncode == 0, r.stderr
    digest = r.stdout.decode().split()[0]
    assert digest == hashlib.sha256(payload).hexdigest()
    line = output.until(r"^tcp-discard:9 ")[-1]
    assert re.fullmatch(rf"tcp-discard:9 {HOST_IP}:\d+ received {DISCARD_BYTES} bytes sha256 {digest}\n", line), line


def test_tcp_echo_with_python_sockets_several_at_once(lab, served):
    proc, output = served
    code = ("import hashlib,random,socket,sys,threading\n"
            "n=int(sys.argv[2]); ok=[]\n"
            "def one(k):\n"
            "    data=random.Random(k).randbytes(n)\n"
            "    s=socket.create_connection((sys.argv[1],7),timeout=30)\n"
            "    t=threading.Thread(target=lambda:(s.sendall(data),s.shutdown(socket.SHUT_WR))); t.start()\n"
            "    got=bytearray()\n"
            "    while (d:=s.recv(65536)): got+=d\n"
            "    t.join(); s.close(); ok.append(bytes(got)==data)\n"
            "ts=[threading.Thread(target=one,args=(k,)) for k in range(3)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "print(ok)\n")
    r = lab.run(sys.executable, "-c", code, STACK_IP, str(ECHO_BYTES))
    assert r.returncode == 0 and r.stdout.decode().strip() == "[True, True, True]", r.stdout + r.stderr
    lines = [output.until(r"^tcp-echo:7 ")[-1] for _ in range(3)]
    assert all(re.fullmatch(rf"tcp-echo:7 {HOST_IP}:\d+ echoed {ECHO_BYTES} bytes\n", line) for line in lines), lines


def test_a_port_without_a_service_refuses_the_kernel(lab, served):
    code = ("import socket,sys\n"
            "try:\n"
            "    socket.create_connection((sys.argv[1], 8), timeout=10)\n"
            "except ConnectionRefusedError:\n"
            "    print('refused')\n")
    r = lab.run(sys.executable, "-c", code, STACK_IP)
    assert r.stdout.decode().strip() == "refused", r.stdout + r.stderr


def test_sigusr1_prints_the_connection_table_while_a_connection_is_open(lab, served):
    proc, output = served
    # A kernel client that connects to the echo service and waits for stdin to close.
    holder = subprocess.Popen(["ip", "netns", "exec", lab.netns, "nc", "-N", STACK_IP, "7"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        holder.stdin.write(b"hello\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == b"hello\n"
        proc.send_signal(signal.SIGUSR1)
        seen = output.until(rf"^  ESTABLISHED .* {STACK_IP}:7 +{HOST_IP}:\d+ ")
        table = "".join(seen[max(i for i, line in enumerate(seen) if line == "connections:\n"):])
        for port in (7, 9, 19):
            assert re.search(rf"^  LISTEN +0 +4096 +0\.0\.0\.0:{port} ", table, re.M), table
        assert re.search(r"cwnd:\d+ .*retrans:\d+", table), table
    finally:
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()
        holder.stderr.close()


def test_sigint_prints_the_table_and_tcp_counters_and_exits_0(lab, served):
    proc, output = served
    proc.send_signal(signal.SIGINT)
    out, err = output.finish(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    tail = out[out.rindex("connections:"):]
    assert "counters:" in tail and re.search(r"^\s*tcp\s+.*rx_segments \d+.*tx_segments \d+", tail, re.M), tail
