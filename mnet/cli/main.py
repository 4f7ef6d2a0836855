"""`mnet`: the command-line entry point.

Each subcommand lives in its own module and is imported only when used, so
`mnet --help` stays fast and one broken dependency doesn't break the rest.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import CliError, known_errors

# name -> (module, one-line help). Each module has add_arguments(p) and run(args).
SUBCOMMANDS = {
    "guest": ("mnet.cli.guest_cmd", "build the Linux guest image (kernel + initramfs)"),
    "switch": ("mnet.cli.switch_cmd", "run the L2 switch with vhost-user, TAP and socket ports"),
    "ctl": ("mnet.cli.ctl_cmd", "change a running switch: links, impairments, tracing, device modes"),
    "vm": ("mnet.cli.vm_cmd", "boot a QEMU guest whose NIC is a switch port"),
    "stack": ("mnet.cli.stack_cmd", "run the MultiOS stack on a vhost-user NIC with services"),
    "ping": ("mnet.cli.ping_cmd", "ping a host through a MultiOS stack of its own"),
    "dns": ("mnet.cli.dns_cmd", "look a name up through a MultiOS stack of its own (A, AAAA)"),
    "monitor": ("mnet.cli.monitor_cmd", "show a running stack like ip and ss: ARP, routes, sockets, NIC rings"),
    "demo": ("mnet.demo", "a tour: a guest and the host kernel use a MultiOS stack's echo, HTTP(S), DNS, chat"),
    "transfer": ("mnet.cli.transfer_cmd", "send or receive a file over UDP, reliably (stack or host kernel)"),
    "trace": ("mnet.cli.trace_cmd", "read ring traces: show, summary, plot"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the full usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mnet",
        description="multios-net: a virtio-net device in Python (vhost-user backend), "
        "an L2 switch, Linux guests under QEMU, and the MultiOS network stack.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ImportError as exc:      # the C kernels not built, or MNET_DATAPATH misspelt
        print(f"mnet: {exc}", file=sys.stderr)
        return 1
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Name the subcommand the stray arguments were given to.
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("mnet: interrupted", file=sys.stderr)
        return 130
    except CliError as exc:
        print(f"mnet {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except known_errors() as exc:
        print(f"mnet {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
