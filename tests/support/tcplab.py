"""Shared pieces for the TCP integration tests (test_tcp_*.py): a switch with
a MultiOS stack on it, the Linux kernel behind an impairable TAP port in a
namespace the test makes, python programs on the kernel's sockets, an HTTP
server and client on the stack's STREAM sockets, and bulk transfers that
hash what they move.

Not a test module. Every wait is bounded; every failure says what it was
waiting for.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import select
import subprocess
import sys
import threading
from typing import Iterator

import pytest

STACK_IP = "10.0.0.9"
HOST_IP = "10.0.0.254"
VM_IP = "10.0.0.1"
WAIT = 10.0
CHUNK = 1 << 16


# -- data ------------------------------------------------------------------------------------------

def pattern(total: int, seed: bytes = b"") -> Iterator[bytes]:
    """`total` bytes in 64 KiB chunks: a random block with the chunk's number
    in front, so a misplaced or repeated chunk changes the hash."""
    block = os.urandom(CHUNK)
    sent, i = 0, 0
    while sent < total:
        chunk = (seed + i.to_bytes(8, "big") + block[8 + len(seed):])[:total - sent]
        yield chunk
        sent += len(chunk)
        i += 1


def stack_send(sock, total: int) -> str:
    """Send `total` pattern bytes on a stack socket; the SHA-256 of what was sent."""
    h = hashlib.sha256()
    for chunk in pattern(total):
        sock.sendall(chunk)
        h.update(chunk)
    return h.hexdigest()


def stack_receive(sock, limit: int | None = None) -> tuple[int, str]:
    """Read a stack socket to its end (or `limit` bytes): (bytes, SHA-256)."""
    h = hashlib.sha256()
    n = 0
    while limit is None or n < limit:
        data = sock.recv(1 << 20 if limit is None else min(1 << 20, limit - n))
        if not data:
            break
        h.update(data)
        n += len(data)
    return n, h.hexdigest()


# -- the kernel's side: python on Linux sockets in the namespace -------------------------------------

# Each program prints one line when it is ready (a listener) and one result
# line "BYTES SHA256 SECONDS" at the end.
KERNEL_SENDER = """
import hashlib, os, socket, sys, time
ip, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((ip, port), timeout=float(sys.argv[4]))
block = os.urandom(65536); h = hashlib.sha256(); sent = i = 0; t = time.monotonic()
while sent < total:
    c = (i.to_bytes(8, 'big') + block[8:])[:total - sent]
    s.sendall(c); h.update(c); sent += len(c); i += 1
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
print(sent, h.hexdigest(), round(time.monotonic() - t, 3), flush=True)
"""

KERNEL_RECEIVER = """
import hashlib, socket, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(); l.settimeout(float(sys.argv[3]))
print('ready', flush=True)
s, _ = l.accept(); s.settimeout(float(sys.argv[3])); h = hashlib.sha256(); n = 0; t = time.monotonic()
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    h.update(d); n += len(d)
print(n, h.hexdigest(), round(time.monotonic() - t, 3), flush=True)
"""


class KernelProgram:
    """A python program in the namespace (the kernel's TCP), with bounded reads of its output."""

    def __init__(self, netns: str, code: str, *args, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code, *map(str, args)],
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self, timeout: float = WAIT, what: str = "a line") -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        text = self.proc.stdout.readline() if ready else ""
        if not text:
            self.stop()
            pytest.fail(f"kernel-side program gave no {what} within {timeout:.0f} s: {self.proc.stderr.read()}")
        return text.strip()

    def tell(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> tuple[int, str, float]:
        """The "BYTES SHA256 SECONDS" line, after the program ended."""
        fields = self.line(timeout, "result").split()
        self.proc.wait(WAIT)
        assert self.proc.returncode == 0, self.proc.stderr.read()
        return int(fields[0]), fields[1], float(fields[2])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)


def kernel_run(netns: str, code: str, *args, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a python snippet in the namespace to its end (bounded)."""
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# -- HTTP on the stack ---------------------------------------------------------------------------------

class StackHttpServer:
    """A tiny HTTP/1.1 server on the stack's STREAM sockets: GET of fixed
    pages, one thread per connection, `Connection: close`."""

    def __init__(self, stack, port: int, pages: dict[str, bytes]) -> None:
        from stack import IpAddress, SocketOption, SocketType

        self.pages = pages
        self.served: list[tuple[str, int]] = []     # (path, status) once answered in full
        self.errors: list[BaseException] = []
        self.sock = stack.socket(SocketType.STREAM)
        self.sock.set_option(SocketOption.REUSE_ADDR, True)
        self.sock.bind(IpAddress.any(port))
        self.sock.listen(16)
        self.sock.set_timeout(0.2)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept_loop, name=f"http:{port}", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return                      # closed at stop()
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn) -> None:
        from stack import Shutdown

        try:
            conn.set_timeout(60.0)
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            method, path, _ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            body = self.pages.get(path)
            status = 200
            if method != "GET" or body is None:
                head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                body, status = b"", 404
            else:
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            conn.sendall(head)
            view = memoryview(body)
            for i in range(0, len(body), 1 << 20):
                conn.sendall(view[i:i + (1 << 20)])
            conn.shutdown(Shutdown.WRITE)
            while conn.recv(65536):        # until the client closes: nothing is cut off
                pass
            self.served.append((path, status))
        except BaseException as exc:        # reported by the test through .errors
            self.errors.append(exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.sock.close()
        self._thread.join(5)
        for t in self._threads:
            t.join(5)


def stack_http_get(stack, ip: str, port: int, path: str, timeout: float = 60.0) -> tuple[int, dict, bytes]:
    """GET http://ip:port/path from a stack socket: (status, headers, body); HTTP/1.0 style, read to EOF."""
    from stack import IpAddress, SocketType

    with stack.socket(SocketType.STREAM) as sock:
        sock.set_timeout(timeout)
        sock.connect(IpAddress(ip, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: multios\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


# -- the lab -----------------------------------------------------------------------------------------------

class StackLab:
    """A switch on a background thread with a MultiOS stack on a vhost-user
    port ("stack", STACK_IP) and, if `netns` is given, a TAP port ("host")
    into it with the kernel at HOST_IP. The TAP port is an `ImpairedPort`
    (unimpaired until `impair()`), so tests can make the link bad."""

    def __init__(self, tmp, netns: str | None, *, tap_offloads: bool = True, nic_options: dict | None = None,
                 **stack_options) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.impair import ImpairedPort
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort
        from stack import Stack
        from stack.arp_cache import ArpCache
        from stack.drivers import VirtioNetNic

        self.tmp, self.netns = tmp, netns
        self.stack = self.nic = self.host = None
        self.ports: dict = {}       # the vhost-user ports by name
        self.bg = BackgroundSwitch()
        try:
            self.ports["stack"] = self.bg.add_port(VhostUserPort("stack", str(tmp / "stack.sock")))
            if netns is not None:
                tap = TapPort("host", "mntcp%d", netns=netns, vnet_hdr=tap_offloads)
                self.host = self.bg.add_port(ImpairedPort(tap))
                ns.set_address(tap.ifname, f"{HOST_IP}/24", netns=netns)
                ns.link_up("lo", netns=netns)
            self.nic = VirtioNetNic(str(tmp / "stack.sock"), **{"timeout": WAIT, **(nic_options or {})})
            stack_options.setdefault("arp_cache", ArpCache(retry_interval=0.5))
            self.stack = Stack(self.nic, f"{STACK_IP}/24", **stack_options).start()
        except BaseException:
            self.close()
            raise

    def impair(self, out=None, in_=None) -> None:
        """Impair the TAP port: `out` = frames to the kernel, `in_` = from it."""
        self.bg.call(lambda: self.host.set_impairments(out, in_))

    def impairment_stats(self) -> dict:
        return self.bg.call(self.host.impairment_stats)

    def close(self) -> None:
        try:
            if self.stack is not None:
                print("stack counters:", self.stack.counters())
                self.stack.stop()
            if self.nic is not None:
                self.nic.close()
        finally:
            print(self.bg.summary())
            self.bg.close()


class StackGuestLab(StackLab):
    """StackLab with a third port, "vm", for a Linux guest at VM_IP (booted
    by `boot_vm`, stopped first by `close`)."""

    def __init__(self, tmp, netns: str | None, **options) -> None:
        from nicdev.net.vhost_user_port import VhostUserPort

        self.vm = None
        self._guest = contextlib.ExitStack()
        super().__init__(tmp, netns, **options)
        try:
            self.ports["vm"] = self.bg.add_port(VhostUserPort("vm", str(tmp / "vm.sock")))
        except BaseException:
            self.close()
            raise

    def boot_vm(self, image, timeout: float = 240.0):
        from support.guestlab import booted_guest

        self.vm = self._guest.enter_context(booted_guest("vm", image, self.ports["vm"].socket_path,
                                                         f"{VM_IP}/24", self.tmp / "work-vm", timeout))
        return self.vm

    def set_fault(self, port: str, mode: str | None) -> None:
        """A device mode on vhost-user port `port` (None: behave)."""
        self.bg.call(lambda: self.ports[port].set_fault(mode))

    def device_counters(self, port: str) -> dict:
        return self.bg.call(self.ports[port].device.counters.as_dict)

    def close(self) -> None:
        try:
            self._guest.close()
        finally:
            super().close()


def assert_stack_healthy(stack) -> None:
    counters = stack.counters()
    assert counters.get("iface", {}).get("drop.internal error", 0) == 0, counters
    assert stack.failure is None, stack.failure
