"""`mnet stack`: run a MultiOS stack with services until interrupted."""
from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import random
import signal
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from .stack_common import add_stack_arguments, format_counters, open_stack

log = logging.getLogger(__name__)

SOURCE_SEED = 0
SOURCE_CHUNK = 65536

DESCRIPTION = f"""\
Run the MultiOS network stack as a host on the virtual network. Its NIC is a
virtio-net device it drives itself through a vhost-user socket (a `mnet switch`
vhost-user port, or DPDK's net_vhost). Services (repeatable --serve):

  udp-echo:PORT              send every datagram back to its sender
  tcp-echo:PORT              send every byte of a TCP connection back
  tcp-discard:PORT           read and drop; when a connection ends, print
                             how many bytes came and their SHA-256
  tcp-source:PORT,bytes=N    send N pseudo-random bytes to each connection,
                             then close it; prints their SHA-256

tcp-source's bytes are the same for every connection, so anyone can check
them: in Python, `r = random.Random({SOURCE_SEED})` and the stream is
`r.randbytes({SOURCE_CHUNK})` called again and again, concatenated and cut to N.
Every TCP service serves many connections at once (a thread each).

The stack answers ARP and ping, and TCP connections to other ports get a
reset. SIGUSR1 prints the TCP connection table (like `ss -ti`: state,
queues, addresses, cwnd, srtt, retransmits). Runs until SIGINT/SIGTERM,
then prints the connection table and its counters and exits 0 (1 if the
stack's thread failed).
"""

SERVICES = ("udp-echo", "tcp-echo", "tcp-discard", "tcp-source")
SERVICE_FORMS = "udp-echo:PORT, tcp-echo:PORT, tcp-discard:PORT, tcp-source:PORT,bytes=N"
ACCEPT_POLL = 0.5  # how often an accept loop looks at the stop flag
DRAIN_TIMEOUT = 30.0  # tcp-source: how long to wait for the peer to close after our FIN


@dataclass(frozen=True)
class Service:
    """One --serve: its kind, port and (tcp-source) byte count."""

    kind: str
    port: int
    size: int = 0

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.port}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_stack_arguments(p)
    p.add_argument("--serve", action="append", default=[], metavar="SERVICE:PORT",
                   help="a service to run (repeatable): " + SERVICE_FORMS)


def parse_service(text: str) -> Service:
    """``kind:PORT`` (``tcp-source:PORT,bytes=N``) -> Service; CliError for anything else."""
    from mnet.cli.errors import CliError

    kind, sep, rest = text.partition(":")
    if kind not in SERVICES or not sep:
        raise CliError(f"bad --serve '{text}': expected one of {SERVICE_FORMS}")
    port_text, _, params = rest.partition(",")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise CliError(f"bad --serve '{text}': port must be 1..65535")
    size = 0
    if kind == "tcp-source":
        key, eq, value = params.partition("=")
        if key != "bytes" or not eq:
            raise CliError(f"bad --serve '{text}': tcp-source needs bytes=N, as in tcp-source:{port},bytes=1000000")
        try:
            size = int(value)
        except ValueError:
            size = -1
        if size < 0:
            raise CliError(f"bad --serve '{text}': bytes must be a whole number >= 0")
    elif params:
        raise CliError(f"bad --serve '{text}': {kind} takes no parameters")
    return Service(kind, port, size)


def source_chunks(size: int, seed: int = SOURCE_SEED) -> Iterator[bytes]:
    """tcp-source's stream: ``random.Random(seed).randbytes(SOURCE_CHUNK)`` repeated, cut to ``size``."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        chunk = rng.randbytes(SOURCE_CHUNK)
        yield chunk if left >= SOURCE_CHUNK else chunk[:left]
        left -= SOURCE_CHUNK


def open_service(stack, svc: Service):
    """The service's socket, bound (and listening) before the stack says it is up."""
    from mnet.cli.errors import CliError
    from stack import IpAddress, SocketType

    sock = stack.socket(SocketType.DATAGRAM if svc.kind == "udp-echo" else SocketType.STREAM)
    try:
        sock.bind(IpAddress.any(svc.port))
        if sock.type is SocketType.STREAM:
            sock.listen()
    except OSError as exc:
        sock.close()
        raise CliError(f"--serve {svc.label}: {exc.strerror or exc}", status=1) from None
    sock.set_timeout(ACCEPT_POLL)
    return sock


def udp_echo(sock, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> None:
    """Echo every datagram on `sock` until `stopping` is set or the stack goes down."""
    with sock:
        while not stopping.is_set():
            try:
                data, peer = sock.recv_from(65535)
                sock.send_to(data, peer)
            except TimeoutError:
                continue
            except OSError as exc:
                if stopping.is_set() or exc.errno in (errno.EBADF, errno.ENETDOWN):
                    return
                # One peer's trouble (its ARP failed: EHOSTUNREACH) must not end the service.
                log.warning("%s: %s", svc.label, exc)


def tcp_accept_loop(listener, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> None:
    """Accept connections until stopped; each gets a thread running the service."""
    handler = {"tcp-echo": _tcp_echo, "tcp-discard": _tcp_discard, "tcp-source": _tcp_source}[svc.kind]
    with listener:
        while not stopping.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if stopping.is_set() or exc.errno in (errno.EBADF, errno.ENETDOWN, errno.EINVAL):
                    return
                log.warning("%s: %s", svc.label, exc)
                continue
            t = threading.Thread(target=_tcp_connection, args=(handler, conn, peer, svc, report),
                                 name=f"{svc.label} {peer}", daemon=True)
            t.start()


def _tcp_connection(handler, conn, peer, svc: Service, report: Callable[[str], None]) -> None:
    with conn:
        try:
            line = handler(conn, svc)
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.ENETDOWN):
                return  # the stack is stopping
            line = f"error: {exc.strerror or exc}"
        report(f"{svc.label} {peer} {line}")


def _tcp_echo(conn, svc: Service) -> str:
    total = 0
    while data := conn.recv(SOURCE_CHUNK):
        conn.sendall(data)
        total += len(data)
    return f"echoed {total} bytes"


def _tcp_discard(conn, svc: Service) -> str:
    digest = hashlib.sha256()
    total = 0
    try:
        while data := conn.recv(SOURCE_CHUNK):
            digest.update(data)
            total += len(data)
    except OSError as exc:
        return f"received {total} bytes, then error: {exc.strerror or exc}"
    return f"received {total} bytes sha256 {digest.hexdigest()}"


def _tcp_source(conn, svc: Service) -> str:
    from stack import Shutdown

    digest = hashlib.sha256()
    for chunk in source_chunks(svc.size):
        conn.sendall(chunk)
        digest.update(chunk)
    conn.shutdown(Shutdown.WRITE)  # the FIN follows the data
    # Wait for the peer to close (reading what it sends), so our close is not a reset.
    conn.set_timeout(DRAIN_TIMEOUT)
    try:
        while conn.recv(SOURCE_CHUNK):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    return f"sent {svc.size} bytes sha256 {digest.hexdigest()}"


def start_service(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    sock = open_service(stack, svc)
    target = udp_echo if svc.kind == "udp-echo" else tcp_accept_loop
    t = threading.Thread(target=target, args=(sock, svc, stopping, report), name=svc.label, daemon=True)
    t.start()
    return t


def connection_table(stack) -> str:
    """The TCP table as `mnet stack` prints it (listeners, then connections)."""
    return "connections:\n" + "\n".join("  " + line for line in stack.connection_table().splitlines())


def run(args: argparse.Namespace) -> int:
    services = [parse_service(s) for s in args.serve]
    stack, nic = open_stack(args)
    stopping = threading.Event()
    wake = threading.Event()
    flags = {"done": False, "table": False}
    print_lock = threading.Lock()

    def report(line: str) -> None:
        with print_lock:
            print(line, flush=True)

    def on_signal(signum, frame) -> None:
        flags["table" if signum == signal.SIGUSR1 else "done"] = True
        wake.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    threads = []
    status = 0
    try:
        for svc in services:
            threads.append(start_service(stack, svc, stopping, report))
            report(f"serving {svc.kind} on port {svc.port}" + (f" ({svc.size} bytes)" if svc.kind == "tcp-source" else ""))
        report(f"stack up: {args.ip} mac {nic.mac} on {args.nic}; Ctrl-C to stop")
        while not flags["done"]:
            wake.wait(0.5)
            wake.clear()
            if flags["table"]:
                flags["table"] = False
                report(connection_table(stack))
            if stack.failure is not None:
                report(f"stack stopped: {stack.failure}")
                status = 1
                break
    finally:
        stopping.set()
        report(connection_table(stack))
        stack.stop()
        for t in threads:
            t.join(2)
        report("counters:\n" + format_counters(stack.counters()))
        nic.close()
    return status
