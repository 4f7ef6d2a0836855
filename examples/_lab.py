"""The network every example runs on (shared by all of them; not an example itself).

By default an example builds a lab in its own process: two MultiOS stacks on
a ``LoopbackNicPair`` (an in-memory cable), ours at 10.0.0.1 and a peer at
10.0.0.2 that plays the other side (an echo server, a DNS server, a TLS
server...). Nothing on the machine is touched; no root is needed.

With ``--nic vhost-user:PATH --ip ADDR/LEN`` the example's stack runs on the
project's virtio-net driver instead, plugged into a vhost-user port (a port
of ``mnet switch``, or DPDK's net_vhost), and talks to a real peer named by
the example's own options (``--server IP``...); there is no in-process peer.

Our stack is also made the default stack, so the examples can write
``Socket(SocketType.STREAM)`` as the socket programming guide does.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import sys
from dataclasses import dataclass
from typing import Iterator

import stack
from stack import LoopbackNicPair, Stack

OUR_IP = "10.0.0.1"
PEER_IP = "10.0.0.2"
PREFIX = 24


@dataclass
class Lab:
    stack: Stack  # ours (also the default stack while the lab is open)
    peer: Stack | None  # the in-process peer, or None on a real network
    peer_ip: str | None  # where the in-process peer is (None on a real network)

    @property
    def our_ip(self) -> str:
        return str(self.stack.iface.addresses[0].ip)

    @property
    def local(self) -> bool:
        return self.peer is not None

    def server_ip(self, given: str | None, option: str = "--server") -> str:
        """The peer to talk to: ``given`` if set, the in-process peer otherwise."""
        if given:
            return given
        if self.peer_ip is None:
            fail(f"with --nic, say where the real peer is: {option} IP")
        return self.peer_ip


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the lab's options; the example adds its own."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                epilog="Without --nic: an in-process lab of two stacks (nothing to set up).")
    p.add_argument("--nic", metavar="vhost-user:PATH", help="run on a real vhost-user port instead")
    p.add_argument("--ip", metavar="ADDR/LEN", help="our address with --nic, e.g. 10.0.0.8/24")
    p.add_argument("--gateway", metavar="ADDR", help="default route with --nic")
    return p


def fail(message: str) -> None:
    """One line on stderr and exit status 1: how the examples report a mistake in their options."""
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: {message}", file=sys.stderr)
    raise SystemExit(1)


@contextlib.contextmanager
def open_lab(args: argparse.Namespace) -> Iterator[Lab]:
    """The lab the options ask for, as the default stack; everything closed at the end."""
    with (_real(args) if args.nic else _in_process()) as lab:
        stack.set_default_stack(lab.stack)
        try:
            yield lab
        finally:
            stack.set_default_stack(None)


@contextlib.contextmanager
def _in_process() -> Iterator[Lab]:
    nics = LoopbackNicPair()
    try:
        with Stack(nics.a, f"{OUR_IP}/{PREFIX}") as ours, Stack(nics.b, f"{PEER_IP}/{PREFIX}") as peer:
            yield Lab(ours, peer, PEER_IP)
    finally:
        nics.close()


@contextlib.contextmanager
def _real(args: argparse.Namespace) -> Iterator[Lab]:
    from stack.drivers import VirtioNetNic

    kind, sep, path = args.nic.partition(":")
    if kind != "vhost-user" or not sep or not path:
        fail(f"bad --nic {args.nic!r}: expected vhost-user:PATH")
    if not args.ip:
        fail("--nic needs --ip ADDR/LEN (our address on that network)")
    try:
        if "/" not in args.ip:
            raise ValueError("no prefix length")
        ipaddress.IPv4Interface(args.ip)
    except ValueError:
        fail(f"bad --ip {args.ip!r}: expected ADDR/LEN, e.g. 10.0.0.8/24")
    try:
        nic = VirtioNetNic(path)
    except Exception as exc:  # (nothing listening on PATH, or a back-end that refuses us)
        fail(f"cannot open {args.nic}: {exc}")
    try:
        with Stack(nic, args.ip, gateway=args.gateway) as ours:
            yield Lab(ours, None, None)
    finally:
        nic.close()


def run(main) -> None:
    """Run an example's ``main()``: a network error it did not expect is one line, not a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        print("stopped")
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}")
