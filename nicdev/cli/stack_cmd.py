"""`mnet stack`: run a MultiOS stack with services until interrupted."""
from __future__ import annotations

import argparse
import errno
import logging
import signal
import threading

from .stack_common import add_stack_arguments, format_counters, open_stack

log = logging.getLogger(__name__)

DESCRIPTION = """\
Run the MultiOS network stack as a host on the virtual network. Its NIC is a
virtio-net device it drives itself through a vhost-user socket (a `mnet switch`
vhost-user port, or DPDK's net_vhost). Services (repeatable --serve):

  udp-echo:PORT     send every datagram back to its sender

The stack answers ARP and ping. Runs until SIGINT/SIGTERM, then prints its
counters and exits 0 (1 if the stack's thread failed).
"""

SERVICES = ("udp-echo",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_stack_arguments(p)
    p.add_argument("--serve", action="append", default=[], metavar="SERVICE:PORT",
                   help="a service to run (repeatable): " + ", ".join(SERVICES))


def parse_service(text: str) -> tuple[str, int]:
    from nicdev.cli.errors import CliError

    kind, sep, port = text.partition(":")
    if kind not in SERVICES or not sep:
        raise CliError(f"bad --serve '{text}': expected one of {', '.join(s + ':PORT' for s in SERVICES)}")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise CliError(f"bad --serve '{text}': port must be 1..65535")
    return kind, number


def open_service(stack, kind: str, port: int):
    """The service's socket, bound before the stack says it is up (so no datagram is refused)."""
    from nicdev.cli.errors import CliError
    from stack import IpAddress, SocketType

    sock = stack.socket(SocketType.DATAGRAM)
    try:
        sock.bind(IpAddress.any(port))
    except OSError as exc:
        sock.close()
        raise CliError(f"--serve {kind}:{port}: {exc.strerror or exc}", status=1) from None
    sock.set_timeout(0.5)
    return sock


def udp_echo(sock, port: int, stopping: threading.Event) -> None:
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
                log.warning("udp-echo:%d: %s", port, exc)


def run(args: argparse.Namespace) -> int:
    services = [parse_service(s) for s in args.serve]
    stack, nic = open_stack(args)
    stopping = threading.Event()
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    threads = []
    status = 0
    try:
        for kind, port in services:
            sock = open_service(stack, kind, port)
            t = threading.Thread(target=udp_echo, args=(sock, port, stopping), name=f"{kind}:{port}", daemon=True)
            t.start()
            threads.append(t)
            print(f"serving {kind} on port {port}", flush=True)
        print(f"stack up: {args.ip} mac {nic.mac} on {args.nic}; Ctrl-C to stop", flush=True)
        while not done.wait(0.5):
            if stack.failure is not None:
                print(f"stack stopped: {stack.failure}", flush=True)
                status = 1
                break
    finally:
        stopping.set()
        stack.stop()
        for t in threads:
            t.join(2)
        print("counters:\n" + format_counters(stack.counters()), flush=True)
        nic.close()
    return status
