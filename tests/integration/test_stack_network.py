"""The MultiOS stack as a host on the switch, with real peers.

One lab per module: a switch (in this process, on its own thread) with
  port "vm"    vhost-user -> a Linux guest under QEMU        10.0.0.1
  port "stack" vhost-user -> a MultiOS Stack on its own
                             VirtioNetNic (privileged: RAW)  10.0.0.9
  port "host"  TAP into a namespace this module creates      10.0.0.254
               (the host's Linux kernel as a peer)
The stack serves UDP echo on port 7 for the whole module. The guest is booted
by its own module-scoped fixture, so the kernel-only tests can run (and be
debugged) without QEMU: `pytest -k kernel tests/integration/test_stack_network.py`.
"""
from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import sys
import threading
import time

import pytest

from guest.wait import wait_in_guest
from support.guestlab import ping
from support.tcplab import HOST_IP, STACK_IP, VM_IP, WAIT, StackGuestLab

pytestmark = pytest.mark.integration

ECHO_PORT = 7
# The kernel's ping: iputils if installed, else busybox's (busybox-static is in
# the Makefile's DEB_PACKAGES); both print "N packets received, 0% packet loss".
PING = ["ping"] if shutil.which("ping") else ["busybox", "ping"]


# -- helpers -----------------------------------------------------------------------------------

class UdpEchoService:
    """A UDP echo server on a stack socket, on a thread, until stop()."""

    def __init__(self, stack, port: int) -> None:
        from stack import IpAddress, SocketType

        self.sock = stack.socket(SocketType.DATAGRAM)
        self.sock.bind(IpAddress.any(port))
        self.sock.set_timeout(0.2)
        self.echoed = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"udp-echo:{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, peer = self.sock.recv_from(65535)
            except TimeoutError:
                continue
            except OSError:
                return  # closed under us at stop()
            # Counted before the answer leaves: a test that has its echo reads the count.
            self.echoed += 1
            self.sock.send_to(data, peer)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.sock.close()


class KernelUdpEcho:
    """A python UDP echo server in the namespace (the kernel's UDP), until stop()."""

    CODE = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<20)\n"
            "s.bind((sys.argv[1],int(sys.argv[2])))\n"
            "print('ready',flush=True)\n"
            "while True:\n"
            "    d,a=s.recvfrom(65535)\n"
            "    s.sendto(d,a)\n")

    def __init__(self, netns: str, ip: str, port: int) -> None:
        from nicdev.net.netns import run_in_netns

        self.proc = run_in_netns(netns, [sys.executable, "-c", self.CODE, ip, str(port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.stop()
            pytest.fail(f"kernel echo server did not start within {WAIT:.0f} s: {self.proc.stderr.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def in_netns(netns: str, code: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a python snippet in the namespace (the kernel's sockets); bounded."""
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=timeout)


def stack_ping(stack, dst: str, count: int = 3, data: bytes = b"multios", timeout: float = WAIT) -> list[float]:
    """Echo requests from a RAW socket; the RTT of each reply in ms (fails on a missing reply)."""
    from stack import IpAddress, SocketType
    from stack.wire import EchoReply, EchoRequest, IpProtocol, Ipv4Repr, emit_icmpv4, parse_icmpv4

    rtts = []
    with stack.socket(SocketType.RAW, IpProtocol.ICMP) as sock:
        sock.set_timeout(timeout)
        for seq in range(1, count + 1):
            t0 = time.monotonic()
            sock.send_to(emit_icmpv4(EchoRequest(0x5354, seq, data)), IpAddress(dst, 0))
            while True:
                try:
                    packet, sender = sock.recv_from(65535)
                except TimeoutError:
                    pytest.fail(f"no echo reply from {dst} (seq {seq}) within {timeout:.0f} s; "
                                f"stack counters {stack.counters()}")
                ip, icmp = Ipv4Repr.parse(packet)
                msg = parse_icmpv4(icmp)
                if isinstance(msg, EchoReply) and str(ip.src) == dst and msg.seq == seq:
                    assert msg.data == data and msg.ident == 0x5354
                    rtts.append((time.monotonic() - t0) * 1000)
                    break
    return rtts


def stack_udp_exchange(stack, dst: str, port: int, payload: bytes, timeout: float = WAIT) -> bytes:
    """Send one datagram from a connected stack socket and return the reply."""
    from stack import IpAddress

    with stack.socket() as sock:
        sock.set_timeout(timeout)
        sock.connect(IpAddress(dst, port))
        sock.send(payload)
        try:
            return sock.recv(65535)
        except TimeoutError:
            pytest.fail(f"no UDP reply from {dst}:{port} within {timeout:.0f} s; stack counters {stack.counters()}")


def assert_no_internal_errors(stack) -> None:
    counters = stack.counters()
    assert counters.get("iface", {}).get("drop.internal error", 0) == 0, counters


# -- the lab -------------------------------------------------------------------------------------

class Lab(StackGuestLab):
    """The stack is privileged (RAW sockets) and serves UDP echo on ECHO_PORT."""

    def __init__(self, tmp, netns: str) -> None:
        self.echo = None
        super().__init__(tmp, netns, privileged=True)
        try:
            self.echo = UdpEchoService(self.stack, ECHO_PORT)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self.echo is not None:
                self.echo.stop()
        finally:
            super().close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-stk") as netns:
        lab = Lab(tmp_path_factory.mktemp("stacklab"), netns)
        try:
            yield lab
        finally:
            lab.close()


@pytest.fixture(scope="module")
def vm(lab, guest_image):
    return lab.boot_vm(guest_image)


@pytest.fixture
def kernel_echo(lab):
    server = KernelUdpEcho(lab.netns, HOST_IP, 9001)
    yield server
    server.stop()


@pytest.fixture
def guest_udp_echo(vm):
    """socat in the guest echoing every datagram on port 9000 (a child per datagram)."""
    r = vm.run("socat UDP-RECVFROM:9000,fork EXEC:cat >/dev/null 2>&1 & echo $! > /tmp/socat-echo.pid")
    assert r.status == 0, r.output
    wait_in_guest(vm, "netstat -lun | grep -q ':9000 '", 20, "socat listening on udp 9000")
    yield 9000
    vm.run("kill $(cat /tmp/socat-echo.pid)")


# -- the stack and a Linux guest -----------------------------------------------------------------

def test_guest_pings_the_stack(lab, vm):
    got, out = ping(vm, STACK_IP, count=3, deadline=15)
    assert got == 3, out
    assert lab.stack.counters()["icmpv4"]["tx_echo_reply"] >= 3


def test_stack_pings_the_guest(lab, vm):
    rtts = stack_ping(lab.stack, VM_IP, count=3)
    print(f"stack -> guest RTTs (ms): {', '.join(f'{r:.2f}' for r in rtts)}")
    assert len(rtts) == 3


def test_guest_sends_udp_to_the_stack_echo(lab, vm):
    before = lab.echo.echoed
    # -t2: after sending (stdin ends) socat waits 2 s for the reply, then exits
    r = vm.run(f"echo 'hello multios' | socat -t2 - UDP:{STACK_IP}:{ECHO_PORT}", timeout=30)
    assert r.status == 0 and r.output.strip() == "hello multios", r.output
    assert lab.echo.echoed == before + 1


def test_stack_sends_udp_to_socat_in_the_guest(lab, vm, guest_udp_echo):
    reply = stack_udp_exchange(lab.stack, VM_IP, guest_udp_echo, b"from the stack\n")
    assert reply == b"from the stack\n"


def test_8000_byte_datagram_from_the_guest_is_reassembled_and_echoed_fragmented(lab, vm):
    stats_before = lab.stack.counters()["ipv4"]
    r = vm.run("head -c 8000 /dev/urandom > /tmp/big && md5sum < /tmp/big && "
               f"socat -t2 -b 65536 - UDP:{STACK_IP}:{ECHO_PORT} < /tmp/big > /tmp/big.back && "
               "wc -c < /tmp/big.back && md5sum < /tmp/big.back", timeout=30)
    assert r.status == 0, r.output
    sent_md5, size, back_md5 = (line.split()[0] for line in r.output.strip().splitlines())
    assert size == "8000" and back_md5 == sent_md5, r.output
    stats = lab.stack.counters()["ipv4"]
    assert stats.get("reassembled", 0) > stats_before.get("reassembled", 0), stats
    assert stats.get("tx_fragments", 0) >= stats_before.get("tx_fragments", 0) + 6, stats


def test_8000_byte_datagram_from_the_stack_to_the_guest(lab, vm, guest_udp_echo):
    payload = os.urandom(8000)
    reply = stack_udp_exchange(lab.stack, VM_IP, guest_udp_echo, payload)
    assert len(reply) == 8000 and reply == payload


# -- the stack and the host kernel (TAP in a namespace) --------------------------------------------

def test_kernel_pings_the_stack(lab):
    r = subprocess.run(["ip", "netns", "exec", lab.netns, *PING, "-c", "3", "-i", "0.2", "-w", "10", STACK_IP],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout + r.stderr


def test_stack_pings_the_kernel(lab):
    rtts = stack_ping(lab.stack, HOST_IP, count=3, data=bytes(range(56)))
    print(f"stack -> kernel RTTs (ms): {', '.join(f'{r:.2f}' for r in rtts)}")
    assert len(rtts) == 3


def test_kernel_sends_udp_to_the_stack_echo(lab):
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\n"
            "s.connect((sys.argv[1],int(sys.argv[2])))\n"
            "for i in range(5):\n"
            "    m=b'kernel %d' % i; s.send(m); assert s.recv(100)==m\n"
            "print('ok')\n")
    r = in_netns(lab.netns, code, STACK_IP, str(ECHO_PORT))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_stack_sends_udp_to_a_kernel_echo_server(lab, kernel_echo):
    for i in range(5):
        message = f"stack {i}".encode()
        assert stack_udp_exchange(lab.stack, HOST_IP, 9001, message) == message


def test_8000_byte_datagram_between_the_stack_and_the_kernel(lab, kernel_echo):
    # stack -> kernel: fragmented by the stack, reassembled by Linux;
    # the echo comes back fragmented by Linux and reassembled by the stack.
    payload = os.urandom(8000)
    before = lab.stack.counters()["ipv4"].get("reassembled", 0)
    reply = stack_udp_exchange(lab.stack, HOST_IP, 9001, payload)
    assert hashlib.sha256(reply).hexdigest() == hashlib.sha256(payload).hexdigest() and len(reply) == 8000
    assert lab.stack.counters()["ipv4"]["reassembled"] == before + 1
    # kernel -> stack echo -> kernel
    code = ("import os,socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\n"
            "s.connect((sys.argv[1],int(sys.argv[2]))); m=os.urandom(8000); s.send(m)\n"
            "r=s.recv(65535); print(len(r), r==m)\n")
    r = in_netns(lab.netns, code, STACK_IP, str(ECHO_PORT))
    assert r.returncode == 0 and r.stdout.split() == ["8000", "True"], r.stdout + r.stderr


def test_closed_port_on_the_stack_refuses_the_kernel(lab):
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\n"
            "s.connect((sys.argv[1],9999)); s.send(b'anyone?')\n"
            "try:\n"
            "    s.recv(100); print('answered')\n"
            "except ConnectionRefusedError:\n"
            "    print('refused')\n"
            "except TimeoutError:\n"
            "    print('timeout')\n")
    before = lab.stack.counters()["icmpv4"].get("tx_error", 0)
    r = in_netns(lab.netns, code, STACK_IP)
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr
    counters = lab.stack.counters()
    assert counters["icmpv4"]["tx_error"] == before + 1 and counters["udp"]["drop.no socket"] >= 1, counters


def test_nothing_went_wrong_inside_the_stack(lab):
    # last in the module: every frame above was handled without a bug being hit
    assert_no_internal_errors(lab.stack)
    assert lab.nic.link_up and lab.nic.drops == {}, dict(lab.nic.counters)
    assert lab.stack.failure is None
