"""`mnet ping`: ICMP echo through a MultiOS stack of its own, like ping(8)."""
from __future__ import annotations

import argparse
import errno
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
    from mnet.cli.errors import CliError
    from stack import SocketType
    from stack.wire import IpProtocol

    try:
        target = ipaddress.IPv4Address(args.host)
    except ValueError:
        raise CliError(f"bad host '{args.host}': give an IPv4 address") from None
    if args.count < 1 or not 0 <= args.size <= 65507 - 8 or args.interval < 0 or args.wait <= 0:
        raise CliError("bad -c/-s/-i/-W value")
    stack, nic = open_stack(args, privileged=True)
    own_ip = args.ip.split("/")[0]
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    errors = sent = 0
    started = time.monotonic()
    try:
        sock = stack.socket(SocketType.RAW, IpProtocol.ICMP)
        print(f"PING {target} ({target}) {args.size}({args.size + 28}) bytes of data.", flush=True)
        payload = bytes(i & 0xFF for i in range(args.size))
        for seq in range(1, args.count + 1):
            t0 = time.monotonic()
            sent += 1
            line, rtt = echo(sock, own_ip, target, ident, seq, payload, args.wait)
            if line:
                print(line, flush=True)
            if rtt is not None:
                rtts.append(rtt)
            elif line:
                errors += 1
            if seq < args.count:
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
        sock.close()
    finally:
        stack.stop()
        nic.close()
    elapsed = (time.monotonic() - started) * 1000
    loss = 100.0 * (sent - len(rtts)) / sent
    errs = f", +{errors} errors" if errors else ""
    print(f"\n--- {target} ping statistics ---")
    print(f"{sent} packets transmitted, {len(rtts)} received{errs}, {loss:.0f}% packet loss, time {elapsed:.0f}ms")
    if rtts:
        avg = sum(rtts) / len(rtts)
        mdev = math.sqrt(sum((r - avg) ** 2 for r in rtts) / len(rtts))
        print(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f}/{mdev:.3f} ms")
    return 0 if rtts else 1


def echo(sock, own_ip: str, target, ident: int, seq: int, payload: bytes,
         wait: float) -> tuple[str | None, float | None]:
    """One echo request from RAW ICMP socket `sock`; (ping(8)-style line or None, RTT in ms or None).

    The line is "N bytes from ...: icmp_seq=... ttl=... time=... ms" for a
    reply, "From HOST icmp_seq=... ..." for an ICMP error about it or for
    ARP giving up (EHOSTUNREACH on the socket), None when nothing came back
    within `wait` seconds.
    """
    from stack import IpAddress
    from stack.wire import EchoRequest, emit_icmpv4

    t0 = time.monotonic()
    try:
        sock.send_to(emit_icmpv4(EchoRequest(ident, seq, payload)), IpAddress(str(target), 0))
        return _await_reply(sock, ipaddress.IPv4Address(str(target)), ident, seq, t0, t0 + wait)
    except OSError as exc:
        return f"From {own_ip} icmp_seq={seq} {_strerror(exc)}", None


def _await_reply(sock, target, ident: int, seq: int, sent_at: float,
                 deadline: float) -> tuple[str | None, float | None]:
    """Wait for the reply to (ident, seq) until `deadline`: (line to print, RTT in ms or None).

    An ICMP error quoting our request gives ping(8)'s "From HOST ..." line;
    nothing by the deadline gives (None, None). Other packets are skipped.
    """
    from stack.wire import DestUnreachable, EchoReply, Ipv4Repr, MalformedPacket, TimeExceeded, parse_icmpv4

    while (remaining := deadline - time.monotonic()) > 0:
        sock.set_timeout(remaining)
        try:
            packet, _ = sock.recv_from(65535)
        except TimeoutError:
            break
        try:
            ip, icmp = Ipv4Repr.parse(packet)
            msg = parse_icmpv4(icmp)
        except MalformedPacket:
            continue
        if isinstance(msg, EchoReply) and msg.ident == ident and msg.seq == seq and ip.src == target:
            rtt = (time.monotonic() - sent_at) * 1000
            return f"{len(icmp)} bytes from {ip.src}: icmp_seq={seq} ttl={ip.ttl} time={rtt:.2f} ms", rtt
        if isinstance(msg, (DestUnreachable, TimeExceeded)) and _quotes_our_request(msg.header, ident, seq):
            what = "Time to live exceeded" if isinstance(msg, TimeExceeded) else _UNREACHABLE.get(
                int(msg.code), f"Destination Unreachable (code {int(msg.code)})")
            return f"From {ip.src} icmp_seq={seq} {what}", None
    return None, None


# ping(8)'s words for the destination-unreachable codes it meets most
_UNREACHABLE = {0: "Destination Net Unreachable", 1: "Destination Host Unreachable",
                2: "Destination Protocol Unreachable", 3: "Destination Port Unreachable",
                4: "Frag needed", 13: "Packet filtered"}


def _quotes_our_request(quoted: bytes, ident: int, seq: int) -> bool:
    """True if an ICMP error's quoted packet is our echo request (ident, seq)."""
    if len(quoted) < 20:
        return False
    hlen = (quoted[0] & 0x0F) * 4
    inner = quoted[hlen:hlen + 8]
    return (quoted[9] == 1 and len(inner) == 8 and inner[0] == 8
            and int.from_bytes(inner[4:6], "big") == ident and int.from_bytes(inner[6:8], "big") == seq)


def _strerror(exc: OSError) -> str:
    if exc.errno == errno.EHOSTUNREACH:
        return "Destination Host Unreachable"
    return exc.strerror or str(exc)
