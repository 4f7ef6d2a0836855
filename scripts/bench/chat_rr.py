"""Lock-step chat lines through `mnet stack --serve chat:PORT`, against a kernel chat server in the same run.

Three clients join the chat: alice and bob take turns to send a line, and
carol only listens. The next line is sent once both others have received the
one before, so each line costs one trip through the server to two clients.
A server that leaves Nagle on makes the line for carol, who acknowledges
late (her delayed ACK), wait for that ACK: up to 40 ms a line, depending on
how the clients' TCP delays its ACKs.

The clients are a MultiOS stack in this process on a vhost-user port of
`mnet switch` (10.0.0.20), or the kernel's sockets in a namespace behind the
switch's TAP port (10.0.0.254). Cases (the figure is milliseconds per line,
the median of --rounds; cases alternate within a round):

- `anchor`: stack clients and a small kernel chat server in the namespace
  (Python sockets, TCP_NODELAY set, as a chat server should);
- `kernel-nagle`: stack clients and that server with Nagle left on;
- `chat`: stack clients and `mnet stack --serve chat:7000` of this checkout,
  a process on another vhost-user port (10.0.0.9);
- `chat-compare`: the same with the checkout given as --compare DIR (another
  worktree with its own .venv, e.g. main before a change; 10.0.0.10);
- `kernel-clients-chat`, `kernel-clients-chat-compare`: the kernel's
  clients in the namespace and those two chat servers.

Root only (namespace, TAP).

    sudo .venv/bin/python scripts/bench/chat_rr.py --seconds 2 --rounds 3 [--compare /tmp/before]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from lab import ROOT, BenchError, Proc, is_root, switch_process
from machine import cpu_model, source_version
from tcp_endpoint import StackNet

from nicdev.net import netns as ns

HOST_IP, CHAT_PORT, KERNEL_PORT, NAGLE_PORT = "10.0.0.254", 7000, 7100, 7101
STACK_IPS = {"chat": "10.0.0.9", "chat-compare": "10.0.0.10"}
CLIENTS_IP = "10.0.0.20"
WAIT = 20.0


# -- in the namespace: the clients --------------------------------------------------------------------------
class Client:
    """One chat client on a connected socket (the kernel's or a stack's: both have sendall and recv)."""

    def __init__(self, sock, nick: str) -> None:
        self.sock = sock
        self.buf = b""
        self.line()  # the welcome
        self.sock.sendall(nick.encode() + b"\n")
        if not self.line().startswith(f"* hello {nick}"):
            raise BenchError(f"{nick} was not let in")

    def line(self) -> str:
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise BenchError(f"the server closed the connection after {self.buf!r}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def expect(self, text: str) -> None:
        """Read up to the line ``text``; the server's notices (``* bob joined``) pass."""
        while (line := self.line()) != text:
            if not line.startswith("*"):
                raise BenchError(f"expected {text!r}, got {line!r}")


def lock_step(connect, seconds: float) -> dict:
    """Lock-step lines for ``seconds`` through the server ``connect()`` reaches: lines sent, time taken."""
    socks = [connect() for _ in range(3)]
    try:
        alice, bob, carol = (Client(sock, nick) for sock, nick in zip(socks, ("alice", "bob", "carol")))
        people = {"alice": (alice, bob), "bob": (bob, alice)}
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            speaker = "alice" if n % 2 == 0 else "bob"
            me, other = people[speaker]
            me.sock.sendall(f"line {n}\n".encode())
            other.expect(f"<{speaker}> line {n}")
            carol.expect(f"<{speaker}> line {n}")
            n += 1
        return {"lines": n, "seconds": time.perf_counter() - start}
    finally:
        for sock in socks:
            sock.close()


def kernel_clients_main(ip: str, port: int, seconds: float) -> None:
    """In the namespace: the kernel's clients; one JSON line."""
    print(json.dumps(lock_step(lambda: socket.create_connection((ip, port), timeout=WAIT), seconds)), flush=True)


# -- in the namespace: the kernel chat server (the anchor) ------------------------------------------------
def kernel_server_main(ip: str, port: int, nodelay: bool) -> None:
    """The chat's protocol in brief: a welcome, a nickname, then each line to the others as ``<nick> text``."""
    listener = socket.create_server((ip, port))
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    nicks: dict[socket.socket, str | None] = {}
    bufs: dict[socket.socket, bytes] = {}
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
                nicks[conn], bufs[conn] = None, b""
                sel.register(conn, selectors.EVENT_READ)
                conn.sendall(b"* welcome\n")
                continue
            conn = key.fileobj
            data = conn.recv(4096)
            if not data:
                sel.unregister(conn)
                del nicks[conn], bufs[conn]
                conn.close()
                continue
            bufs[conn] += data
            while b"\n" in bufs[conn]:
                line, _, bufs[conn] = bufs[conn].partition(b"\n")
                if nicks[conn] is None:
                    nicks[conn] = line.decode()
                    conn.sendall(b"* hello " + line + b"\n")
                    continue
                for other, nick in nicks.items():
                    if other is not conn and nick is not None:
                        other.sendall(b"<" + nicks[conn].encode() + b"> " + line + b"\n")


# -- the lab -------------------------------------------------------------------------------------------------
def in_netns(netns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, str(Path(__file__).resolve()), *args]


def measure(where: tuple, seconds: float) -> float:
    """Milliseconds per lock-step line: ``where`` is ("stack", StackNet, ip, port) or ("kernel", netns, ip, port)."""
    kind, how, ip, port = where
    if kind == "stack":
        result = lock_step(lambda: how.connect(ip, port, WAIT), seconds)
    else:
        out = subprocess.run(in_netns(how, "--clients", ip, str(port), str(seconds)), capture_output=True,
                             text=True, timeout=seconds + 60)
        if out.returncode:
            raise BenchError(f"the kernel's clients failed: {out.stderr.strip()[-2000:]}")
        result = json.loads(out.stdout)
    return result["seconds"] / result["lines"] * 1000


@contextlib.contextmanager
def chat_lab(checkouts: dict[str, Path]) -> Iterator[dict[str, tuple]]:
    """`mnet switch` with a TAP port into a namespace, a vhost-user port per checkout and one for the stack
    clients; the kernel servers in the namespace, an `mnet stack` per checkout and the clients' stack.
    Yields each case's clients and server, as :func:`measure` takes them."""
    with tempfile.TemporaryDirectory(prefix="chat-rr-") as tmp, ns.temporary_netns("chat-rr") as netns:
        ifname = f"chrr{os.getpid() % 10000}"
        socks = {name: f"{tmp}/{name}.sock" for name in [*checkouts, "clients"]}
        ports = [f"{name}=vhost-user:{path}" for name, path in socks.items()] + [f"host=tap:{ifname},netns={netns}"]
        with switch_process(ports, list(socks.values()), (ifname, netns)):
            ns.set_address(ifname, f"{HOST_IP}/24", netns=netns)
            ns.link_up("lo", netns=netns)
            procs = [Proc(in_netns(netns, "--kernel-server", HOST_IP, str(port), nodelay), what)
                     for port, nodelay, what in ((KERNEL_PORT, "1", "kernel server"),
                                                 (NAGLE_PORT, "0", "kernel server, Nagle on"))]
            clients = None
            try:
                for proc in procs:
                    proc.ready()
                for case, checkout in checkouts.items():
                    procs.append(Proc(stack_argv(checkout, socks[case], STACK_IPS[case]), f"mnet stack ({checkout})",
                                      cwd=checkout))
                    while not procs[-1].line(WAIT).startswith("stack up:"):
                        pass  # (its "serving ..." lines)
                clients = StackNet(socks["clients"], f"{CLIENTS_IP}/24", None, offloads=True)
                where = {"anchor": ("stack", clients, HOST_IP, KERNEL_PORT),
                         "kernel-nagle": ("stack", clients, HOST_IP, NAGLE_PORT)}
                for case in checkouts:
                    where[case] = ("stack", clients, STACK_IPS[case], CHAT_PORT)
                    where[f"kernel-clients-{case}"] = ("kernel", netns, STACK_IPS[case], CHAT_PORT)
                yield where
            finally:
                if clients is not None:
                    clients.close()
                for proc in procs:
                    proc.kill()


def run(args) -> int:
    checkouts = {"chat": ROOT} | ({"chat-compare": Path(args.compare).resolve()} if args.compare else {})
    figures: dict[str, list[float]] = {}
    with chat_lab(checkouts) as where:
        for _ in range(args.rounds):
            for case in where:
                figures.setdefault(case, []).append(measure(where[case], args.seconds))
    anchor = statistics.median(figures["anchor"])
    for case, rounds in figures.items():
        figure = statistics.median(rounds)
        line = {"case": case, "unit": "ms/line", "figure": round(figure, 3), "anchor": round(anchor, 3),
                "ratio": round(figure / anchor, 2), "rounds": [round(f, 3) for f in rounds],
                "seconds": args.seconds, "cpu": cpu_model(), "source": source_version()}
        checkout = checkouts.get(case.removeprefix("kernel-clients-"))
        if checkout is not None:
            line["checkout"] = str(checkout)
        print(json.dumps(line), flush=True)
    return 0


def stack_argv(checkout: Path, sock: str, ip: str) -> list[str]:
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise BenchError(f"{python} is missing (run `make setup` in {checkout})")
    return [str(python), "-m", "mnet.cli.main", "stack", "--nic", f"vhost-user:{sock}", "--ip", f"{ip}/24",
            "--control", "off", "--serve", f"chat:{CHAT_PORT}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, cases alternating; figures are medians")
    parser.add_argument("--compare", metavar="DIR", help="another checkout (with its .venv) to run as chat-compare")
    parser.add_argument("--clients", nargs=3, metavar=("IP", "PORT", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--kernel-server", nargs=3, metavar=("IP", "PORT", "NODELAY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.clients:
            kernel_clients_main(args.clients[0], int(args.clients[1]), float(args.clients[2]))
            return 0
        if args.kernel_server:
            kernel_server_main(args.kernel_server[0], int(args.kernel_server[1]), args.kernel_server[2] == "1")
            return 0
        if not is_root("chat_rr.py"):
            return 1
        return run(args)
    except (BenchError, OSError) as exc:
        print(f"chat_rr.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
