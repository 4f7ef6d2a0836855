"""The set-up the namespace benchmarks share (udp_rr.py, tcp_bulk.py).

Which cases to run (always with the anchor), the root check, a veth pair
between two namespaces, `mnet switch` as its own process with its ports,
a TAP port on a switch of this process, and an endpoint subprocess whose
output is read with bounded waits. Root only, like the benchmarks.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nicdev.net import netns as ns  # noqa: E402


class BenchError(Exception):
    """A step failed; the message says which."""


def pick_cases(spec: str, known) -> list[str] | None:
    """The comma-separated cases of `spec`, the anchor first if it was not
    named (every line carries the anchor of the same run); None, after one
    line on stderr, if any is unknown or none is given."""
    wanted = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in known]
    if unknown or not wanted:
        print(f"unknown case(s) {unknown}; choose from {', '.join(known)}", file=sys.stderr)
        return None
    if "anchor" not in wanted:
        wanted.insert(0, "anchor")
    return wanted


def is_root(program: str) -> bool:
    """True as root; otherwise False, after one line on stderr saying `program` needs it."""
    if os.geteuid() == 0:
        return True
    print(f"{program} needs root (network namespaces, TAP, veth)", file=sys.stderr)
    return False


def veth_pair(a: tuple[str, str, str], b: tuple[str, str, str], prefix: int) -> None:
    """A veth pair between two namespaces, each side (netns, ifname, ip) with
    its address; both ends and both namespaces' loopbacks up."""
    (na, ifa, ipa), (nb, ifb, ipb) = a, b
    with ns.iproute(na) as ipr:
        ipr.link("add", ifname=ifa, kind="veth", peer={"ifname": ifb, "net_ns_fd": nb})
    ns.set_address(ifa, f"{ipa}/{prefix}", netns=na)
    ns.set_address(ifb, f"{ipb}/{prefix}", netns=nb)
    for name, where in ((ifa, na), (ifb, nb), ("lo", na), ("lo", nb)):
        ns.link_up(name, netns=where)


def add_tap(switch, name: str, ifname: str, netns: str, cidr: str, *, vnet_hdr: bool = True) -> str:
    """A TAP port `name` on a switch of this process (a `BackgroundSwitch`),
    its interface (`ifname`, may hold %d) in `netns` with address `cidr`;
    returns the interface's name."""
    from nicdev.net.tap_port import TapPort

    tap = switch.add_port(TapPort(name, ifname, netns=netns, vnet_hdr=vnet_hdr))
    ns.set_address(tap.ifname, cidr, netns=netns)
    return tap.ifname


@contextlib.contextmanager
def switch_process(ports: list[str], vhost_paths: list[str], tap: tuple[str, str] | None,
                   timeout: float = 30.0) -> Iterator[subprocess.Popen]:
    """`mnet switch` in its own process with these `--port` specs, as a user
    runs it; yields once its vhost-user sockets (`vhost_paths`) and its TAP
    (ifname, netns) are there, and stops it at the end."""
    argv = [sys.executable, "-m", "mnet.cli.main", "switch"]
    for spec in ports:
        argv += ["--port", spec]
    proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not _switch_ports_there(proc, vhost_paths, tap):
            if time.monotonic() > deadline:
                raise BenchError(f"mnet switch: its ports did not appear within {timeout:.0f} s")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()


def _switch_ports_there(proc: subprocess.Popen, vhost_paths: list[str], tap: tuple[str, str] | None) -> bool:
    if proc.poll() is not None:
        raise BenchError(f"mnet switch exited: {proc.stderr.read().strip()[-2000:]}")
    if not all(os.path.exists(path) for path in vhost_paths):
        return False
    if tap is None:
        return True
    with ns.iproute(tap[1]) as ipr:
        return bool(ipr.link_lookup(ifname=tap[0]))


class Proc:
    """An endpoint (or any) subprocess with bounded reads of its output.

    Its stdout is read unbuffered into our own buffer: a buffered readline
    would take in every line already written, and select() would then wait
    for more while the next line sits in that buffer (two lines printed at
    once, as `mnet stack`'s "serving ..." and "stack up: ...")."""

    def __init__(self, argv: list[str], what: str, cwd: Path = ROOT) -> None:
        self.what = what
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  bufsize=0, cwd=str(cwd))
        self._out = b""

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._out:
            ready, _, _ = select.select([self.p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = self.p.stdout.read(65536) if ready else b""
            if not chunk:
                self.kill()
                raise BenchError(f"{self.what}: no output within {timeout:.0f} s: {self._stderr()}")
            self._out += chunk
        text, _, self._out = self._out.partition(b"\n")
        return text.decode().strip()

    def _stderr(self) -> str:
        return self.p.stderr.read().decode(errors="replace").strip()[-2000:]

    def ready(self, timeout: float = 30.0) -> None:
        text = self.line(timeout)
        if text != "ready":
            raise BenchError(f"{self.what}: expected 'ready', got {text!r}")

    def result(self, timeout: float) -> dict:
        text = self.line(timeout)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.p.returncode:
            raise BenchError(f"{self.what}: exit status {self.p.returncode}: {self._stderr()}")
        return json.loads(text)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
