"""Reachability and the echo services (UDP and TCP), from the host kernel and from the guest."""
from __future__ import annotations

import hashlib
import os
import re
import time

from .lab import STACK_IP
from .report import CheckFailed, detail

ECHO_PORT = 7
HOST_TCP_BYTES = 1_000_000
GUEST_TCP_BYTES = 200_000      # the guest's CPU is emulated (TCG): a smaller load
UDP_LINE = "hello MultiOS, from {who}"


def _timed(run):
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


def _ping_figure(output: str) -> str:
    found = re.search(r"(\d+) packets received", output)
    if not found or found[1] != "3":
        raise CheckFailed(f"{found[1] if found else 'no'} of 3 replies")
    rtt = re.search(r"= [\d.]+/([\d.]+)/", output)
    return f"3 of 3 replies, rtt avg {rtt[1]} ms" if rtt else "3 of 3 replies"


def host_ping(lab) -> str:
    # busybox's ping: make setup installs busybox-static, and no other ping may be there
    output = lab.host(f"busybox ping -c 3 -i 0.2 -W 5 {STACK_IP}", timeout=30).stdout.decode(errors="replace")
    detail("\n".join(output.strip().splitlines()[-2:]) or "(no output)")
    return _ping_figure(output)


def host_udp_echo(lab) -> str:
    line = UDP_LINE.format(who="the host kernel")
    r = lab.host(f"socat -t 5 -T 1 - UDP:{STACK_IP}:{ECHO_PORT}", timeout=30,
                 stdin=(line + "\n").encode())
    got = r.stdout.decode(errors="replace").strip()
    detail(got or "(nothing came back)")
    if got != line:
        raise CheckFailed(f"sent {line!r}, got back {got!r}")
    return f"{len(line) + 1} bytes back"


def host_tcp_echo(lab) -> str:
    """netcat-openbsd sends a file, shuts its side down (-N) and prints what came back."""
    payload = lab.workdir / "echo.bin"
    payload.write_bytes(os.urandom(HOST_TCP_BYTES))
    r, took = _timed(lambda: lab.host(f"nc -N -w 20 {STACK_IP} {ECHO_PORT} < {payload}", timeout=120))
    want = hashlib.sha256(payload.read_bytes()).hexdigest()
    got = hashlib.sha256(r.stdout).hexdigest()
    if (len(r.stdout), got) != (HOST_TCP_BYTES, want):
        raise CheckFailed(f"{len(r.stdout)} of {HOST_TCP_BYTES} bytes back, sha256 {got[:12]} "
                          f"(sent {want[:12]}) {r.stderr.decode(errors='replace').strip()}")
    return f"{HOST_TCP_BYTES} bytes back in {took:.2f} s, sha256 matches"


def guest_ping(lab) -> str:
    r = lab.vm.run(f"ping -c 3 -i 0.2 -W 5 {STACK_IP}", timeout=60)
    detail("\n".join(r.output.strip().splitlines()[-2:]) or "(no output)")
    return _ping_figure(r.output)


def guest_udp_echo(lab) -> str:
    line = UDP_LINE.format(who="the guest")
    r = lab.vm.run(f"echo '{line}' | socat -t 5 -T 1 - UDP:{STACK_IP}:{ECHO_PORT}", timeout=60)
    got = r.output.strip()
    detail(got or "(nothing came back)")
    if got != line:
        raise CheckFailed(f"sent {line!r}, got back {got!r}")
    return f"{len(line) + 1} bytes back"


def guest_tcp_echo(lab) -> str:
    """socat in the guest sends a file of random bytes; what came back has the same length and SHA-256."""
    script = (f"head -c {GUEST_TCP_BYTES} /dev/urandom > /tmp/echo.bin"
              f" && socat -t 30 -T 30 - TCP:{STACK_IP}:{ECHO_PORT} < /tmp/echo.bin > /tmp/back.bin"
              " && wc -c < /tmp/back.bin && sha256sum < /tmp/back.bin && sha256sum < /tmp/echo.bin")
    r, took = _timed(lambda: lab.vm.run(script, timeout=180))
    lines = r.output.split()
    if r.status != 0 or len(lines) < 5:
        raise CheckFailed(f"exit status {r.status}: {r.output.strip()[-200:]}")
    back, got, want = int(lines[0]), lines[1], lines[3]
    if (back, got) != (GUEST_TCP_BYTES, want):
        raise CheckFailed(f"{back} of {GUEST_TCP_BYTES} bytes back, sha256 {got[:12]} (sent {want[:12]})")
    return f"{GUEST_TCP_BYTES} bytes back in {took:.2f} s, sha256 matches"
