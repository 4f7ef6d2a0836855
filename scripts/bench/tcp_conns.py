"""Many concurrent TCP connections to one MultiOS stack, with the kernel <-> kernel
anchor measured in the same run.

Cases:

  anchor  the client in namespace A -- veth -- namespace B: an echo server on
          the kernel's TCP (this program's `--server`, one epoll loop, the same
          listen backlog as the stack's services: SOMAXCONN, 4096)
  stack   the client in a namespace -- TAP -- `mnet switch` -- vhost-user --
          `mnet stack --serve tcp-echo:7`, each its own process started as a
          user starts them (`python -m mnet.cli.main switch|stack ...`, default
          options: --port s=vhost-user:PATH --port h=tap:IF,netns=NS)

The client (this program's `--client`, one epoll loop on the kernel's
sockets) opens --conns connections with non-blocking connects, at most
--window attempts in flight at a time (0: all at once), then sends 16 bytes on
every one of them (each connection its own bytes) and reads them back.
Figures per case: the time to open them all, the time until every echo came
back, how many came back (and how many came back wrong), connection
attempts that failed, and the client kernel's TCP counters (`nstat` names:
SYN retransmissions, retransmitted segments, resets) after the opening and
after the echoes. For the stack: its process's peak resident memory
(VmHWM from /proc/PID/status), thread count and open descriptors while all
connections are open.

Descriptors: this program raises its own limit (soft and hard,
resource.setrlimit; root may raise the hard one) to 4 x --conns + 1024
before it starts anything, so the client, `mnet switch` and `mnet stack`
inherit it (the client takes one per connection; the stack's service none).

Prints one JSON line per case (the stack's with the anchor's figures and the
ratios). Root only (namespaces, TAP, veth). Progress goes to stderr.

    .venv/bin/python scripts/bench/tcp_conns.py [--conns 10000] [--window 1000] [--cases anchor,stack]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
THIS = str(Path(__file__).resolve())
MNET = [sys.executable, "-m", "mnet.cli.main"]

PREFIX = 24
A_IP, B_IP = "10.3.0.1", "10.3.0.2"          # the anchor's two namespaces
STACK_IP, HOST_IP = "10.0.0.9", "10.0.0.254"
STACK_MAC = "02:00:00:00:00:09"
PORT = 7
MESSAGE = 16
BACKLOG = socket.SOMAXCONN                    # what the stack's services listen with (4096)


def log(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


def raise_fd_limit(wanted: int) -> int:
    """Soft and hard RLIMIT_NOFILE to at least `wanted` (the hard one only as root); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    new_soft = max(soft, wanted) if new_hard == resource.RLIM_INFINITY else min(max(soft, wanted), new_hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted), hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# =====================================================================================================
# The kernel side: the client, and the anchor's echo server. Each an epoll loop; run in a namespace.
# =====================================================================================================

def message_for(i: int) -> bytes:
    return i.to_bytes(4, "big") * (MESSAGE // 4)


def open_all(ip: str, port: int, count: int, window: int, deadline: float, ep) -> tuple[dict, int]:
    """Non-blocking connects, at most `window` in flight: ({fd: (socket, index)} of the connected, failures)."""
    pending: dict[int, tuple[socket.socket, int]] = {}
    connected: dict[int, tuple[socket.socket, int]] = {}
    failed = 0
    started = 0
    while len(connected) + failed < count and time.monotonic() < deadline:
        while started < count and (not window or len(pending) < window):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((ip, port))
            pending[s.fileno()] = (s, started)
            ep.register(s.fileno(), select.EPOLLOUT)
            started += 1
        for fd, _ in ep.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
            s, i = pending.pop(fd)
            ep.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
                s.close()
            else:
                connected[fd] = (s, i)
    for s, _ in pending.values():
        s.close()
    return connected, failed + len(pending) + (count - started)


def echo_all(connected: dict, deadline: float, ep) -> tuple[int, int]:
    """16 bytes on every connection, read back: (answered right, answered wrong)."""
    got: dict[int, bytes] = {}
    right = wrong = 0
    for fd, (s, i) in connected.items():
        try:
            s.send(message_for(i))
        except OSError:              # reset: counted as a wrong answer
            wrong += 1
            continue
        got[fd] = b""
        ep.register(fd, select.EPOLLIN)
    while right + wrong < len(connected) and time.monotonic() < deadline:
        for fd, _ in ep.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
            s, i = connected[fd]
            try:
                data = s.recv(MESSAGE)
            except OSError:
                data = b""
            got[fd] += data
            if not data or len(got[fd]) >= MESSAGE:
                ep.unregister(fd)
                if got[fd] == message_for(i):
                    right += 1
                else:
                    wrong += 1
    if right + wrong < len(connected):
        log_unanswered([connected[fd][0] for fd in got if len(got[fd]) < MESSAGE])
    return right, wrong


def log_unanswered(socks: list) -> None:
    """The kernel's view (TCP_INFO) of the connections still waiting for their echo, in short."""
    seen: dict[str, int] = {}
    for s in socks:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        state, _, retransmits, _, backoff = info[:5]
        unacked = int.from_bytes(info[24:28], "little")
        key = f"state {state} unacked {unacked} retransmits {retransmits} backoff {backoff}"
        seen[key] = seen.get(key, 0) + 1
    log(f"{len(socks)} unanswered (kernel TCP_INFO): {seen}")


KERNEL_COUNTERS = ("Tcp:RetransSegs", "Tcp:AttemptFails", "Tcp:EstabResets", "Tcp:InErrs", "Tcp:OutRsts",
                   "TcpExt:TCPSynRetrans", "TcpExt:TCPTimeouts", "TcpExt:TCPAbortOnTimeout",
                   "TcpExt:ListenOverflows", "TcpExt:ListenDrops", "TcpExt:SyncookiesSent")


def kernel_tcp_counters() -> dict:
    """The kernel's TCP counters of this process's namespace, as `nstat` names them (non-zero ones
    of KERNEL_COUNTERS): /proc/net/snmp and /proc/net/netstat hold a header and a value line per group."""
    values: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            group, _, names = head.partition(": ")
            for name, value in zip(names.split(), vals.partition(": ")[2].split()):
                values[f"{group}:{name}"] = int(value)
    return {name: values[name] for name in KERNEL_COUNTERS if values.get(name)}


def client_main(ip: str, port: int, count: int, window: int, timeout: float) -> dict:
    raise_fd_limit(count + 1024)
    ep = select.epoll()
    t0 = time.monotonic()
    connected, failed = open_all(ip, port, count, window, t0 + timeout, ep)
    t1 = time.monotonic()
    opened = kernel_tcp_counters()
    print("connected", flush=True)                 # the driver measures the server now, all connections open
    sys.stdin.readline()
    t2 = time.monotonic()
    right, wrong = echo_all(connected, t2 + timeout, ep)
    t3 = time.monotonic()
    for s, _ in connected.values():
        s.close()
    ep.close()
    return {"connections": count, "connected": len(connected), "connect_failed": failed,
            "connect_seconds": round(t1 - t0, 3), "answered": right, "answered_wrong": wrong,
            "echo_seconds": round(t3 - t2, 3), "window": window,
            "client_kernel": {"after_open": opened, "after_echo": kernel_tcp_counters()}}


def server_main(port: int) -> None:
    """The anchor: echo on the kernel's TCP, one epoll loop (what the stack's service does on ours)."""
    raise_fd_limit(65536)
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", port))
    lst.listen(BACKLOG)
    lst.setblocking(False)
    ep = select.epoll()
    ep.register(lst.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for fd, _ in ep.poll():
            if fd == lst.fileno():
                for _ in range(64):
                    try:
                        c, _ = lst.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            if data:
                c.sendall(data)   # 16 bytes: always fits
            else:
                ep.unregister(fd)
                del conns[fd]
                c.close()


# =====================================================================================================
# The driver: namespaces, processes, JSON lines.
# =====================================================================================================

class BenchError(Exception):
    """A step failed; the message says which."""


class Program:
    """A subprocess whose stdout lines are collected on a thread (bounded waits)."""

    def __init__(self, argv: list[str], what: str) -> None:
        self.what = what
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=str(ROOT))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)
            self._cond.notify_all()

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line is None:
                        raise BenchError(f"{self.what} ended: {self.p.stderr.read()[-2000:]}")
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.what}: no {prefix!r} within {timeout:.0f} s")
                self._cond.wait(left)

    def say(self, text: str) -> None:
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(2)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)


def process_status(pid: int) -> dict:
    """VmHWM (peak resident set, MB), VmRSS (MB), Threads and open descriptors of a process."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[f"{key}_mb"] = round(int(value.split()[0]) / 1024, 1)
            elif key == "Threads":
                out["threads"] = int(value)
    return out


def log_exit_table(lines: list) -> None:
    """What `mnet stack` printed at exit, in short: its listener, how many connections in each
    state, its TCP counters (drops, resets)."""
    states: dict[str, int] = {}
    for line in lines:
        if not line or not line.startswith("  "):
            continue
        word = line.split()[0]
        if word in ("LISTEN", "tcp", "nic", "ipv4", "eth", "arp"):
            log(f"mnet stack at exit: {line.strip()}")
        elif word.isupper() and word != "STATE":
            states[word] = states.get(word, 0) + 1
    log(f"mnet stack at exit: connections by state {states}")


def run_client(netns: str, ip: str, args, server_pid: int | None) -> dict:
    cl = Program(["ip", "netns", "exec", netns, sys.executable, THIS, "--client", ip, str(PORT), str(args.conns),
                  str(args.window), str(args.timeout)], f"client in {netns}")
    try:
        cl.expect("connected", args.timeout + 60)
        server = process_status(server_pid) if server_pid else {}
        cl.say("go")
        result = json.loads(cl.expect("{", args.timeout + 60))
        cl.p.wait(30)
    finally:
        cl.stop()
        for line in cl.p.stderr.read().splitlines():
            log(f"client: {line}")
    if server_pid:
        result["stack_process"] = {**server, **{k: v for k, v in process_status(server_pid).items() if k == "VmHWM_mb"}}
    return result


def anchor_case(args) -> dict:
    from nicdev.net import netns as ns

    with ns.temporary_netns("mntc-a") as na, ns.temporary_netns("mntc-b") as nb:
        with ns.iproute(na) as ipr:
            ipr.link("add", ifname="tca", kind="veth", peer={"ifname": "tcb", "net_ns_fd": nb})
        ns.set_address("tca", f"{A_IP}/{PREFIX}", netns=na)
        ns.set_address("tcb", f"{B_IP}/{PREFIX}", netns=nb)
        for name, where in (("tca", na), ("tcb", nb), ("lo", na), ("lo", nb)):
            ns.link_up(name, netns=where)
        srv = Program(["ip", "netns", "exec", nb, sys.executable, THIS, "--server", str(PORT)], "kernel echo server")
        try:
            srv.expect("ready", 30)
            return run_client(na, B_IP, args, None)
        finally:
            srv.stop()


def stack_case(args, workdir: Path) -> dict:
    from nicdev.net import netns as ns

    sock = str(workdir / "stack.sock")
    with ns.temporary_netns("mntc-k") as nk:
        switch = Program([*MNET, "switch", "--port", f"s=vhost-user:{sock}", "--port", f"h=tap:mntc0,netns={nk}"],
                         "mnet switch")
        stack = None
        try:
            switch.expect("switch running", 30)
            ns.set_address("mntc0", f"{HOST_IP}/{PREFIX}", netns=nk)
            ns.link_up("lo", netns=nk)
            stack = Program([*MNET, "stack", "--nic", f"vhost-user:{sock}", "--ip", f"{STACK_IP}/{PREFIX}",
                             "--mac", STACK_MAC, "--serve", f"tcp-echo:{PORT}"], "mnet stack")
            stack.expect("stack up", 60)
            result = run_client(nk, STACK_IP, args, stack.p.pid)
            result["switch_process"] = process_status(switch.p.pid)
            return result
        finally:
            t0 = time.monotonic()
            if stack is not None:
                stack.stop()
            log(f"mnet stack stopped in {time.monotonic() - t0:.1f} s")
            switch.stop()
            for line in switch.lines[-12:]:
                if line:
                    log(f"mnet switch at exit: {line}")
            if stack is not None:
                log_exit_table(stack.lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--client"]:
        ip, port, count, window, timeout = argv[1:6]
        print(json.dumps(client_main(ip, int(port), int(count), int(window), float(timeout))), flush=True)
        return 0
    if argv[:1] == ["--server"]:
        server_main(int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=10000, help="connections to open (default 10000)")
    parser.add_argument("--window", type=int, default=1000,
                        help="connection attempts in flight at most (default 1000; 0: all at once)")
    parser.add_argument("--cases", default="anchor,stack", help="comma-separated subset of anchor,stack")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds the opening, and then the echoes, may take each (default 300)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or set(cases) - {"anchor", "stack"}:
        parser.error(f"--cases: choose from anchor,stack (got {args.cases!r})")
    if os.geteuid() != 0:
        print("tcp_conns.py needs root (network namespaces, TAP, veth)", file=sys.stderr)
        return 2
    if "anchor" not in cases:
        cases.insert(0, "anchor")                 # every line carries the anchor of the same run
    limit = raise_fd_limit(4 * args.conns + 1024)
    log(f"descriptor limit raised to {limit} (inherited by the client, mnet switch and mnet stack)")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mnet-tcpc-") as workdir:
        for case in cases:
            log(f"{case}: {args.conns} connections")
            try:
                results[case] = anchor_case(args) if case == "anchor" else stack_case(args, Path(workdir))
            except BenchError as exc:
                results[case] = {"error": str(exc)}
            log(f"  {results[case]}")
    common = {"source": source_version(), "cpu": f"{cpu_model()} x{os.cpu_count()}", "fd_limit": limit}
    anchor = results.get("anchor", {})
    for case in cases:
        line = {"case": case, **common, **results[case]}
        if case != "anchor" and "error" not in results[case] and "error" not in anchor:
            line["anchor_connect_seconds"] = anchor["connect_seconds"]
            line["anchor_echo_seconds"] = anchor["echo_seconds"]
            line["connect_time_ratio_to_anchor"] = round(line["connect_seconds"] / max(anchor["connect_seconds"], 1e-3), 2)
            line["echo_time_ratio_to_anchor"] = round(line["echo_seconds"] / max(anchor["echo_seconds"], 1e-3), 2)
        print(json.dumps(line), flush=True)
    return 0 if all("error" not in r and r["answered"] == args.conns for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
