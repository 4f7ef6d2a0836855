"""`mnet dns lookup`: resolve a name through a MultiOS stack of its own, like host(1)."""
from __future__ import annotations

import argparse
import ipaddress

from .stack_common import add_stack_arguments, open_stack

DESCRIPTION = """\
DNS through a MultiOS stack on a vhost-user NIC.

  mnet dns lookup NAME --server IP [--type A|AAAA] [--no-edns] --nic vhost-user:PATH --ip ADDR/LEN

asks the server(s) by UDP from a random port with EDNS(0) (TCP when the
answer is truncated), follows CNAMEs and prints one line per CNAME link and
one per address, like host(1).
Exits 0 with an answer, 1 on NXDOMAIN, no data, SERVFAIL, a timeout or a
malformed answer (one line on stderr saying which).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="dns_command", metavar="ACTION")
    lookup = sub.add_parser("lookup", help="resolve NAME to its addresses")
    add_stack_arguments(lookup)
    lookup.add_argument("--server", action="append", required=True, metavar="IP",
                        help="a DNS server's IPv4 address (repeat for several: asked in order)")
    lookup.add_argument("--port", type=int, default=53, help="the servers' port (default 53)")
    lookup.add_argument("--type", default="A", choices=["A", "AAAA"], help="record type (default A)")
    lookup.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer (default 2)")
    lookup.add_argument("--attempts", type=int, default=2,
                        help="times the whole server list is tried (default 2)")
    lookup.add_argument("--no-edns", action="store_true",
                        help="plain RFC 1035 queries without an EDNS OPT record (for a server that drops them)")
    lookup.add_argument("name", help="the name to resolve")


def run(args: argparse.Namespace) -> int:
    from mnet.cli.errors import CliError

    if getattr(args, "dns_command", None) != "lookup":
        raise CliError("give an action: mnet dns lookup NAME --server IP --nic vhost-user:PATH --ip ADDR/LEN")
    for server in args.server:
        try:
            ipaddress.IPv4Address(server)
        except ValueError:
            raise CliError(f"bad --server '{server}': expected an IPv4 address") from None
    if not 0 < args.port <= 65535 or args.timeout <= 0 or args.attempts < 1:
        raise CliError("bad --port/--timeout/--attempts value")
    return _lookup(args)


def _lookup(args: argparse.Namespace) -> int:
    from mnet.cli.errors import CliError
    from stack.dns.client import DnsClient
    from stack.dns.errors import DnsError
    from stack.dns.resolver import EDNS_PAYLOAD

    stack, nic = open_stack(args)
    try:
        client = DnsClient(stack, args.server, port=args.port, timeout=args.timeout, attempts=args.attempts,
                           edns_payload=None if args.no_edns else EDNS_PAYLOAD)
        answer = client.lookup(args.name, args.type)
    except DnsError as exc:
        raise CliError(str(exc), status=1) from None
    finally:
        stack.stop()
        nic.close()
    for alias, target in zip(answer.aliases, answer.aliases[1:] + (answer.canonical_name,)):
        print(f"{alias} is an alias for {target}.")  # one line per CNAME link, as host(1) does
    kind = "address" if args.type == "A" else "IPv6 address"
    for address in answer.addresses:
        print(f"{answer.canonical_name} has {kind} {address}")
    return 0
