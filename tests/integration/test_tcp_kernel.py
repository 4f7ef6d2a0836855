"""The MultiOS stack's TCP against the host's Linux kernel.

One lab for the module (support.tcplab.StackLab): a switch on a thread of this
process with
  port "stack"  vhost-user -> a MultiOS Stack on its VirtioNetNic   10.0.0.9
  port "host"   TAP (vnet header, the kernel's offloads) into a
                namespace this module creates, wrapped in an
                ImpairedPort                                         10.0.0.254
This kernel has no sch_netem, so where the TCP issue says "tc netem on the
kernel side", the impairments are applied by our switch to the TAP port, to
frames going both ways (nicdev.net.impair).
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time

import pytest

from support.tcplab import (HOST_IP, KERNEL_RECEIVER, KERNEL_SENDER, STACK_IP, WAIT, KernelProgram, StackHttpServer,
                    StackLab, assert_stack_healthy, kernel_run, stack_http_get, stack_receive, stack_send)
from support.waiting import wait_for

pytestmark = pytest.mark.integration

MB = 1_000_000
HTTP_PORT = 8080
BAD_LINK = dict(loss=0.02, reorder=0.01, duplicate=0.01, corrupt=0.005, delay=0.005)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-tcpk") as netns:
        lab = StackLab(tmp_path_factory.mktemp("tcpk"), netns)
        try:
            yield lab
        finally:
            lab.close()


@pytest.fixture
def bad_link(lab):
    """The TAP port impaired both ways for one test, with fixed seeds."""
    from nicdev.virtio.impairment import Impairment

    lab.impair(out=Impairment(**BAD_LINK, seed=1), in_=Impairment(**BAD_LINK, seed=2))
    try:
        yield
    finally:
        print("impairments:", lab.impairment_stats())
        lab.impair(None, None)


def listen(stack, port: int):
    from stack import IpAddress, SocketType

    sock = stack.socket(SocketType.STREAM)
    sock.bind(IpAddress.any(port))
    sock.listen(4)
    sock.set_timeout(WAIT)
    return sock


def kernel_to_stack(lab, port: int, size: int, timeout: float):
    """The kernel sends `size` bytes to a stack listener; both hashes and the stack's connection info."""
    server = listen(lab.stack, port)
    sender = KernelProgram(lab.netns, KERNEL_SENDER, STACK_IP, port, size, timeout)
    try:
        conn, peer = server.accept()
        conn.set_timeout(timeout)
        t0 = time.monotonic()
        got, digest = stack_receive(conn)
        seconds = time.monotonic() - t0
        info = conn.tcp_info()
        conn.close()                          # the sender waits for this EOF before it reports
        sent, sent_digest, _ = sender.result(timeout)
    finally:
        sender.stop()
        server.close()
    print(f"kernel -> stack: {got} bytes in {seconds:.2f} s, {got * 8 / seconds / 1e6:.0f} Mbit/s; {info}")
    assert str(peer.ip) == HOST_IP
    return sent, sent_digest, got, digest, info


def stack_to_kernel(lab, port: int, size: int, timeout: float):
    """The stack sends `size` bytes to a kernel listener; both hashes and the stack's connection info."""
    from stack import IpAddress, Shutdown, SocketType

    receiver = KernelProgram(lab.netns, KERNEL_RECEIVER, HOST_IP, port, timeout)
    try:
        assert receiver.line(WAIT, "ready line") == "ready"
        with lab.stack.socket(SocketType.STREAM) as sock:
            sock.set_timeout(timeout)
            sock.connect(IpAddress(HOST_IP, port))
            t0 = time.monotonic()
            sent_digest = stack_send(sock, size)
            sock.shutdown(Shutdown.WRITE)
            got, digest, _ = receiver.result(timeout)
            seconds = time.monotonic() - t0
            info = sock.tcp_info()
    finally:
        receiver.stop()
    print(f"stack -> kernel: {got} bytes in {seconds:.2f} s, {got * 8 / seconds / 1e6:.0f} Mbit/s; {info}")
    return size, sent_digest, got, digest, info


# -- HTTP both ways ------------------------------------------------------------------------------------

def test_curl_fetches_pages_from_a_stack_http_server(lab):
    blob = os.urandom(8 * MB)
    server = StackHttpServer(lab.stack, HTTP_PORT, {"/": b"hello from multios\n", "/blob": blob})
    try:
        base = f"http://{STACK_IP}:{HTTP_PORT}"
        r = subprocess.run(["ip", "netns", "exec", lab.netns, "curl", "-sS", "--max-time", "30", base + "/"],
                           capture_output=True, text=True, timeout=40)
        assert r.returncode == 0 and r.stdout == "hello from multios\n", r.stdout + r.stderr
        r = subprocess.run(["ip", "netns", "exec", lab.netns, "sh", "-c",
                            f"curl -sS --max-time 60 {base}/blob | sha256sum"],
                           capture_output=True, text=True, timeout=70)
        assert r.returncode == 0 and r.stdout.split()[0] == hashlib.sha256(blob).hexdigest(), r.stdout + r.stderr
        r = subprocess.run(["ip", "netns", "exec", lab.netns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--max-time", "30", base + "/missing"], capture_output=True, text=True, timeout=40)
        assert r.stdout == "404", r.stdout + r.stderr
        wait_for(lambda: len(server.served) == 3, timeout=WAIT, what="server threads finishing")
    finally:
        server.stop()
    assert server.errors == [] and server.served == [("/", 200), ("/blob", 200), ("/missing", 404)]


def test_stack_fetches_pages_from_python_http_server(lab, tmp_path):
    page = os.urandom(5 * MB)
    (tmp_path / "page.bin").write_bytes(page)
    (tmp_path / "index.html").write_text("<h1>kernel</h1>\n")
    server = subprocess.Popen(["ip", "netns", "exec", lab.netns, "python3", "-m", "http.server", "--bind", HOST_IP,
                               "--directory", str(tmp_path), "8000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            try:
                return stack_http_get(lab.stack, HOST_IP, 8000, "/index.html", timeout=WAIT)
            except ConnectionRefusedError:
                return None                   # not listening yet
        status, headers, body = wait_for(up, timeout=WAIT, what="python http.server answering")
        assert status == 200 and body == b"<h1>kernel</h1>\n"
        status, headers, body = stack_http_get(lab.stack, HOST_IP, 8000, "/page.bin")
        assert status == 200 and int(headers["content-length"]) == len(body) == len(page)
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(page).hexdigest()
        status, _, _ = stack_http_get(lab.stack, HOST_IP, 8000, "/missing")
        assert status == 404
    finally:
        server.terminate()
        server.wait(WAIT)


# -- bulk, clean -----------------------------------------------------------------------------------------

def test_100_mb_kernel_to_stack(lab):
    sent, sent_digest, got, digest, info = kernel_to_stack(lab, 5001, 100 * MB, timeout=60)
    assert got == sent == 100 * MB and digest == sent_digest


def test_100_mb_stack_to_kernel(lab):
    sent, sent_digest, got, digest, info = stack_to_kernel(lab, 5002, 100 * MB, timeout=60)
    assert got == sent == 100 * MB and digest == sent_digest
    assert info.bytes_acked >= 100 * MB


# -- bulk over a bad link ------------------------------------------------------------------------------------

def test_kernel_to_stack_over_a_bad_link(lab, bad_link):
    """2 % loss, 1 % reordering, 1 % duplication, 0.5 % corruption and 5 ms
    delay each way. Linux sends at about 50 Mbit/s through this with BBR,
    this host's default (with CUBIC it manages about 5 Mbit/s), so 100 MB
    takes about 16 s."""
    sent, sent_digest, got, digest, info = kernel_to_stack(lab, 5003, 100 * MB, timeout=300)
    assert got == sent == 100 * MB and digest == sent_digest
    stats = lab.impairment_stats()
    assert stats["in"]["impaired_dropped"] > 100 and stats["in"]["reordered"] > 50
    assert stats["in"]["duplicated"] > 50 and stats["in"]["corrupted"] > 20, stats
    assert lab.stack.counters()["tcp"].get("drop.bad checksum", 0) + \
        lab.stack.counters()["ipv4"].get("drop.bad checksum", 0) > 0


def test_stack_to_kernel_over_a_bad_link(lab, bad_link):
    """The same link. The stack sends at 7-8 Mbit/s through it (2.5 % of
    its segments lost or corrupted and a 10 ms round trip: near what the
    Mathis formula gives a Reno-like sender, 1.22 * MSS / (RTT * sqrt(p)),
    and above Linux CUBIC's 5-6 Mbit/s here), so 100 MB takes about 110 s;
    the timeout leaves room for a loaded machine."""
    sent, sent_digest, got, digest, info = stack_to_kernel(lab, 5004, 100 * MB, timeout=300)
    assert got == sent == 100 * MB and digest == sent_digest
    assert info.retransmits > 0 and info.fast_retransmits > 0, info
    stats = lab.impairment_stats()
    assert stats["out"]["impaired_dropped"] > 100 and stats["out"]["corrupted"] > 20, stats


# -- Diffserv (MUST-48) ---------------------------------------------------------------------------------------

def test_the_kernel_sees_the_tos_a_stack_socket_sets(lab):
    """tcpdump in the namespace catches our SYN and data with TOS 0xb8 (EF)
    on the wire the kernel receives from."""
    import select

    from stack import IpAddress, SocketOption, SocketType

    ifname = lab.host.inner.ifname
    dump = subprocess.Popen(["ip", "netns", "exec", lab.netns, "timeout", "30", "tcpdump", "-i", ifname, "-n", "-v",
                             "-l", "-c", "3", "tcp dst port 5010 and ip[1] = 0xb8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    receiver = KernelProgram(lab.netns, KERNEL_RECEIVER, HOST_IP, 5010, 30)
    try:
        ready, _, _ = select.select([dump.stderr], [], [], WAIT)
        assert ready and "listening" in dump.stderr.readline(), "tcpdump did not start"
        assert receiver.line(WAIT, "ready line") == "ready"
        with lab.stack.socket(SocketType.STREAM) as sock:
            sock.set_option(SocketOption.TOS, 0xB8)
            sock.set_timeout(WAIT)
            sock.connect(IpAddress(HOST_IP, 5010))
            sock.sendall(b"diffserv" * 1000)
            sock.close()
        got, _, _ = receiver.result(WAIT)
        out, err = dump.communicate(timeout=30)
    finally:
        receiver.stop()
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert got == 8000
    assert dump.returncode == 0 and out.count("tos 0xb8") == 3, out + err


# -- errors ---------------------------------------------------------------------------------------------------

def test_connecting_to_a_closed_kernel_port_is_refused(lab):
    from stack import IpAddress, SocketType

    with lab.stack.socket(SocketType.STREAM) as sock:
        sock.set_timeout(WAIT)
        with pytest.raises(ConnectionRefusedError):
            sock.connect(IpAddress(HOST_IP, 9))


def test_connecting_to_an_address_nobody_has_is_unreachable(lab):
    from stack import IpAddress, SocketType

    with lab.stack.socket(SocketType.STREAM) as sock:
        sock.set_timeout(WAIT)
        t0 = time.monotonic()
        with pytest.raises(OSError) as info:
            sock.connect(IpAddress("10.0.0.77", 80))      # nobody answers ARP for it
        assert info.value.errno == errno.EHOSTUNREACH
        assert time.monotonic() - t0 < 5.0                 # three ARP requests 0.5 s apart


def test_connecting_over_a_dead_link_times_out(lab):
    from nicdev.virtio.impairment import Impairment
    from stack import IpAddress, SocketType

    with lab.stack.socket(SocketType.STREAM) as sock:        # the kernel's MAC is known: ARP is not the issue
        sock.set_timeout(WAIT)
        with pytest.raises(ConnectionRefusedError):
            sock.connect(IpAddress(HOST_IP, 9))
    dead = Impairment(loss=1.0)
    lab.impair(out=dead, in_=dead)
    try:
        before = lab.impairment_stats()["out"]["impaired_dropped"]
        with lab.stack.socket(SocketType.STREAM) as sock:
            sock.set_timeout(1.5)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                sock.connect(IpAddress(HOST_IP, 9))
            assert 1.4 < time.monotonic() - t0 < 5.0
            # The SYN and its retransmission (RTO 1 s) went into the void. (Waited for:
            # the retransmission is due 0.5 s before the timeout above, and a loaded
            # machine may run the stack's timer later than that.)
            wait_for(lambda: lab.impairment_stats()["out"]["impaired_dropped"] >= before + 2,
                     "the SYN's retransmission dropped by the dead link", timeout=WAIT)
            assert sock.tcp_info().state.name == "SYN_SENT"   # the attempt goes on, as on Linux
    finally:
        lab.impair(None, None)


def test_kernel_connecting_to_a_closed_stack_port_is_refused(lab):
    code = ("import socket,sys\n"
            "try:\n"
            "    socket.create_connection((sys.argv[1], 4321), timeout=5); print('connected')\n"
            "except ConnectionRefusedError:\n"
            "    print('refused')\n"
            "except OSError as e:\n"
            "    print('error', e)\n")
    before = lab.stack.counters()["tcp"].get("tx_rst", 0)
    r = kernel_run(lab.netns, code, STACK_IP)
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout + r.stderr
    assert lab.stack.counters()["tcp"]["tx_rst"] == before + 1


def test_nothing_went_wrong_inside_the_stack(lab):
    assert_stack_healthy(lab.stack)
    assert lab.nic.link_up
