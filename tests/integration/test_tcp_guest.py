"""The MultiOS stack's TCP against a Linux guest's (busybox nc, wget, httpd).

One lab for the module: a switch on a thread of this process with
  port "stack"  vhost-user -> a MultiOS Stack on its VirtioNetNic   10.0.0.9
  port "vm"     vhost-user -> a Linux guest under QEMU (TCG)        10.0.0.1
Both ends negotiate checksum and segmentation offloads with our device, so
the guest's TSO frames reach the stack whole (GUEST_TSO4) and the stack's
checksums are left to the receiver (DATA_VALID). Each transfer moves a few
MB of random data and compares SHA-256 sums taken at both ends.
"""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from guest.wait import wait_in_guest
from support.tcplab import STACK_IP, VM_IP, WAIT, StackGuestLab, StackHttpServer, assert_stack_healthy, stack_http_get, \
    stack_receive, stack_send

pytestmark = pytest.mark.integration

SIZE_MB = 4


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = StackGuestLab(tmp_path_factory.mktemp("tcpg"), None)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def vm(lab, guest_image):
    return lab.boot_vm(guest_image)


def guest_sha256(vm, path: str) -> tuple[int, str]:
    r = vm.run(f"wc -c < {path} && sha256sum {path}", timeout=60)
    assert r.status == 0, r.output
    size, digest = r.output.split()[:2]
    return int(size), digest


def make_guest_file(vm, path: str, size_mb: int) -> str:
    r = vm.run(f"dd if=/dev/urandom of={path} bs=1M count={size_mb} 2>/dev/null && sha256sum {path}", timeout=60)
    assert r.status == 0, r.output
    return r.output.split()[0]


class StackSink:
    """Accepts one connection on a stack port and hashes what arrives, on a thread."""

    def __init__(self, stack, port: int, timeout: float = 120.0) -> None:
        from stack import IpAddress, SocketType

        self.sock = stack.socket(SocketType.STREAM)
        self.sock.bind(IpAddress.any(port))
        self.sock.listen(1)
        self.sock.set_timeout(timeout)
        self.timeout = timeout
        self.result = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, peer = self.sock.accept()
            with conn:
                conn.set_timeout(self.timeout)
                self.result = (*stack_receive(conn), conn.tcp_info(), str(peer.ip))
        except BaseException as exc:     # reported by join()
            self.error = exc

    def join(self):
        self._thread.join(self.timeout + 5)
        self.sock.close()
        assert not self._thread.is_alive(), "the stack's receiver did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def test_guest_nc_sends_to_the_stack(lab, vm):
    digest = make_guest_file(vm, "/tmp/tx.bin", SIZE_MB)
    sink = StackSink(lab.stack, 6001)
    r = vm.run(f"nc {STACK_IP} 6001 < /tmp/tx.bin", timeout=120)
    assert r.status == 0, r.output
    got, got_digest, info, peer = sink.join()
    vm.run("rm -f /tmp/tx.bin")
    print(f"guest -> stack: {info}")
    assert peer == VM_IP and got == SIZE_MB << 20 and got_digest == digest


def test_stack_sends_to_guest_nc(lab, vm):
    from stack import IpAddress, Shutdown, SocketType

    # busybox nc ends when either input ends: its stdin is a fifo that a
    # background sleep holds open, so it stops at the stack's FIN.
    r = vm.run("rm -f /tmp/rx.bin /tmp/rx.done /tmp/rx.fifo; mkfifo /tmp/rx.fifo; "
               "(sleep 120 > /tmp/rx.fifo & s=$!; nc -l -p 6002 < /tmp/rx.fifo > /tmp/rx.bin; "
               "kill $s; touch /tmp/rx.done) >/dev/null 2>&1 &")
    assert r.status == 0, r.output
    wait_in_guest(vm, "netstat -ltn | grep -q ':6002 '", 20, "nc listening")
    size = SIZE_MB << 20
    with lab.stack.socket(SocketType.STREAM) as sock:
        sock.set_timeout(120)
        sock.connect(IpAddress(VM_IP, 6002))
        digest = stack_send(sock, size)
        sock.shutdown(Shutdown.WRITE)
        wait_in_guest(vm, "[ -e /tmp/rx.done ]", 120, "nc in the guest finishing")
        print(f"stack -> guest: {sock.tcp_info()}")
    assert guest_sha256(vm, "/tmp/rx.bin") == (size, digest)
    vm.run("rm -f /tmp/rx.bin")


def test_guest_wget_fetches_from_a_stack_http_server(lab, vm):
    blob = os.urandom(SIZE_MB << 20)
    server = StackHttpServer(lab.stack, 8080, {"/blob": blob, "/": b"multios\n"})
    try:
        r = vm.run(f"wget -q -O - http://{STACK_IP}:8080/", timeout=60)
        assert r.status == 0 and r.output.strip() == "multios", r.output
        r = vm.run(f"wget -q -O /tmp/page.bin http://{STACK_IP}:8080/blob", timeout=120)
        assert r.status == 0, r.output
        assert guest_sha256(vm, "/tmp/page.bin") == (len(blob), hashlib.sha256(blob).hexdigest())
        r = vm.run(f"wget -q -O /dev/null http://{STACK_IP}:8080/missing; echo rc=$?", timeout=60)
        assert "rc=1" in r.output, r.output                 # busybox wget fails on a 404
    finally:
        server.stop()
        vm.run("rm -f /tmp/page.bin")
    assert server.errors == [] and ("/blob", 200) in server.served


def test_stack_fetches_from_busybox_httpd_in_the_guest(lab, vm):
    assert vm.run("mkdir -p /tmp/www").status == 0
    digest = make_guest_file(vm, "/tmp/www/file.bin", SIZE_MB)
    r = vm.run("httpd -p 8000 -h /tmp/www && echo started")
    assert r.status == 0 and "started" in r.output, r.output
    try:
        wait_in_guest(vm, "netstat -ltn | grep -q ':8000 '", 20, "httpd listening")
        status, headers, body = stack_http_get(lab.stack, VM_IP, 8000, "/file.bin", timeout=120)
        assert status == 200 and len(body) == SIZE_MB << 20
        assert hashlib.sha256(body).hexdigest() == digest
        status, _, _ = stack_http_get(lab.stack, VM_IP, 8000, "/missing", timeout=WAIT)
        assert status == 404
    finally:
        vm.run("killall httpd; rm -rf /tmp/www")


def test_offloads_were_used_and_nothing_went_wrong(lab, vm):
    from nicdev.virtio.features import VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, has

    assert has(lab.nic.features, VIRTIO_NET_F_GUEST_TSO4) and has(lab.nic.features, VIRTIO_NET_F_HOST_TSO4)
    assert lab.nic.counters["rx_gso"] > 0, dict(lab.nic.counters)   # the guest's TSO frames came whole
    assert_stack_healthy(lab.stack)
    assert lab.nic.link_up
