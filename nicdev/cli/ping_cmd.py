"""`mnet ping`: ICMP echo through a MultiOS stack of its own, like ping(8)."""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import time

from .stack_common import add_stack_arguments, open_stack

DESCRIPTION = """\
Start a MultiOS stack on a vhost-user NIC, send ICMP echo requests to HOST
through a RAW socket and print replies and round-trip times like ping(8).
Exits 0 if any reply came back, 1 if none did.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_stack_arguments(p)
    p.add_argument("-c", "--count", type=int, default=3, help="requests to send (default 3)")
    p.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between requests (default 1)")
    p.add_argument("-W", "--wait", type=float, default=2.0, help="seconds to wait for each reply (default 2)")
    p.add_argument("-s", "--size", type=int, default=56, help="payload bytes (default 56)")
    p.add_argument("host", help="IPv4 address to ping")


def run(args: argparse.Namespace) -> int:
    from nicdev.cli.errors import CliError
    from stack import IpAddress, SocketType
    from stack.wire import EchoReply, EchoRequest, IpProtocol, emit_icmpv4, parse_icmpv4
    from stack.wire import Ipv4Repr, MalformedPacket

    try:
        target = ipaddress.IPv4Address(args.host)
    except ValueError:
        raise CliError(f"bad host '{args.host}': give an IPv4 address") from None
    if args.count < 1 or not 0 <= args.size <= 65507 - 8 or args.interval < 0 or args.wait <= 0:
        raise CliError("bad -c/-s/-i/-W value")
    stack, nic = open_stack(args, privileged=True)
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    sent = 0
    started = time.monotonic()
    try:
        sock = stack.socket(SocketType.RAW, IpProtocol.ICMP)
        print(f"PING {target} ({target}) {args.size}({args.size + 28}) bytes of data.", flush=True)
        for seq in range(1, args.count + 1):
            payload = bytes(i & 0xFF for i in range(args.size))
            t0 = time.monotonic()
            try:
                sock.send_to(emit_icmpv4(EchoRequest(ident, seq, payload)), IpAddress(str(target), 0))
            except OSError as exc:
                print(f"From {args.ip.split('/')[0]} icmp_seq={seq} {exc.strerror or exc}", flush=True)
                sent += 1
                time.sleep(args.interval)
                continue
            sent += 1
            deadline = t0 + args.wait
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.set_timeout(remaining)
                try:
                    packet, _ = sock.recv_from(65535)
                except TimeoutError:
                    break
                try:
                    ip, icmp = Ipv4Repr.parse(packet)
                    reply = parse_icmpv4(icmp)
                except MalformedPacket:
                    continue
                if isinstance(reply, EchoReply) and reply.ident == ident and reply.seq == seq and ip.src == target:
                    rtt = (time.monotonic() - t0) * 1000
                    rtts.append(rtt)
                    print(f"{len(icmp)} bytes from {ip.src}: icmp_seq={seq} ttl={ip.ttl} time={rtt:.2f} ms", flush=True)
                    break
            if seq < args.count:
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
        sock.close()
    finally:
        stack.stop()
        nic.close()
    elapsed = (time.monotonic() - started) * 1000
    loss = 100.0 * (sent - len(rtts)) / sent if sent else 100.0
    print(f"\n--- {target} ping statistics ---")
    print(f"{sent} packets transmitted, {len(rtts)} received, {loss:.0f}% packet loss, time {elapsed:.0f}ms")
    if rtts:
        avg = sum(rtts) / len(rtts)
        mdev = math.sqrt(sum((r - avg) ** 2 for r in rtts) / len(rtts))
        print(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f}/{mdev:.3f} ms")
    return 0 if rtts else 1
