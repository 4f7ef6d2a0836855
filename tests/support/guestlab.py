"""Helpers for tests that run Linux guests on the switch: a booted guest,
random files, transfers between guests with busybox nc, ping."""
from __future__ import annotations

import re
import shlex
from contextlib import contextmanager

from guest.wait import wait_in_guest


def make_file(vm, path: str, size_mb: int) -> str:
    """Create a random file in the guest; return its md5."""
    r = vm.run(f"dd if=/dev/urandom of={path} bs=1M count={size_mb} 2>/dev/null && md5sum {path}", timeout=120)
    assert r.status == 0, r.output
    return r.output.split()[0]


def nc_transfer(src, dst, dst_ip: str, port: int, size_mb: int = 20, timeout: float = 300.0) -> tuple[str, str]:
    """Move a random file from guest `src` to guest `dst` with busybox nc.

    Busybox nc ends when *either* input ends, so the receiver reads its stdin
    from a fifo that a background sleep holds open; it stops at the sender's
    FIN. Returns (sent md5, received md5).
    """
    sent = make_file(src, "/tmp/xfer.src", size_mb)
    r = dst.run(f"rm -f /tmp/xfer.rx /tmp/xfer.done /tmp/xfer.fifo; mkfifo /tmp/xfer.fifo; "
                f"(sleep {int(timeout)} > /tmp/xfer.fifo & s=$!; nc -l -p {port} < /tmp/xfer.fifo > /tmp/xfer.rx; "
                f"kill $s; touch /tmp/xfer.done) >/dev/null 2>&1 &")
    assert r.status == 0, r.output
    wait_in_guest(dst, f"netstat -ltn | grep -q ':{port} '", 20, "nc listening")
    r = src.run(f"nc {shlex.quote(dst_ip)} {port} < /tmp/xfer.src", timeout=timeout)
    assert r.status == 0, f"sender nc failed: {r.output}"
    wait_in_guest(dst, "[ -e /tmp/xfer.done ]", timeout, "transfer end")
    r = dst.run("ls -l /tmp/xfer.rx; md5sum /tmp/xfer.rx")
    received = r.output.split()[-2] if r.status == 0 else f"(no file: {r.output})"
    src.run("rm -f /tmp/xfer.src")
    dst.run("rm -f /tmp/xfer.rx")
    return sent, received


def ping(vm, ip: str, count: int = 3, deadline: int = 10):
    """busybox ping; returns (received count, output)."""
    r = vm.run(f"ping -c {count} -w {deadline} {shlex.quote(ip)}", timeout=deadline + 15)
    m = re.search(r"(\d+) packets received", r.output)
    return (int(m.group(1)) if m else 0), r.output


@contextmanager
def booted_guest(name: str, image, socket_path: str, ip: str, workdir, timeout: float = 240.0, **vm_options):
    """A Linux guest whose NIC is the vhost-user socket `socket_path`, booted
    and ready (`vm_options`: VirtualMachine's); stopped on the way out."""
    from qemu.cmdline import NicConfig
    from qemu.vm import VirtualMachine

    vm = VirtualMachine(name, image, nic=NicConfig("vhost-user", socket_path), ip=ip, workdir=workdir,
                        progress=lambda line: print(line, flush=True), **vm_options)
    with vm:
        vm.wait_ready(timeout)
        yield vm
