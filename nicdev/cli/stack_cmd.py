"""`mnet stack`: run a MultiOS stack with services until interrupted."""
from __future__ import annotations

import argparse
import json
import signal
import threading

from .stack_common import add_stack_arguments, open_stack

DESCRIPTION = """\
Run the MultiOS network stack as a host on the virtual network. Its NIC is a
virtio-net device it drives itself through a vhost-user socket (a `mnet switch`
vhost-user port, or DPDK's net_vhost). Services (repeatable --serve):

  udp-echo:PORT     send every datagram back to its sender

The stack answers ARP and ping. Runs until SIGINT/SIGTERM, then prints its
counters.
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


def udp_echo(stack, port: int, stopping: threading.Event) -> None:
    from stack import IpAddress, SocketType

    with stack.socket(SocketType.DATAGRAM) as sock:
        sock.bind(IpAddress.new_v4(0, 0, 0, 0, port))
        sock.set_timeout(0.5)
        while not stopping.is_set():
            try:
                data, peer = sock.recv_from(65535)
            except TimeoutError:
                continue
            except OSError:
                if stopping.is_set():
                    return
                raise
            sock.send_to(data, peer)


def run(args: argparse.Namespace) -> int:
    services = [parse_service(s) for s in args.serve]
    stack, nic = open_stack(args)
    stopping = threading.Event()
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    threads = []
    try:
        for kind, port in services:
            t = threading.Thread(target=udp_echo, args=(stack, port, stopping), name=f"{kind}:{port}", daemon=True)
            t.start()
            threads.append(t)
            print(f"serving {kind} on port {port}", flush=True)
        print(f"stack up: {args.ip} mac {nic.mac} on {args.nic}; Ctrl-C to stop", flush=True)
        while not done.wait(0.5):
            if stack.failure is not None:
                print(f"stack stopped: {stack.failure}", flush=True)
                break
    finally:
        stopping.set()
        stack.stop()
        for t in threads:
            t.join(2)
        print(json.dumps({"stack": stack.counters(), "nic": dict(getattr(nic, "counters", {}))}, default=str, indent=1))
        nic.close()
    return 0
