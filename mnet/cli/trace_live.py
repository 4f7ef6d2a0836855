"""`mnet trace live`: follow a running switch's ring events through its control socket."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .errors import CliError

DESCRIPTION = """\
Print a running `mnet switch`'s ring events as they happen, one line each
(the format of `mnet trace show`, times in seconds since `live` started). It
reads the switch's live buffer through the control socket (`trace_read`);
the ports must be traced into it: `mnet ctl trace PORT|all on`, or --start
here, which also stops them again when `live` ends. Runs until Ctrl-C, the
switch's end, or --duration. Records the buffer overwrote before they were
read are reported on stderr.
"""

# Between two reads: short enough to look live, long enough to cost nothing.
_INTERVAL = 0.2


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .ctl_cmd import add_control_argument

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_control_argument(p)
    p.add_argument("--port", action="append", default=[], metavar="P", help="only this port; repeat for more")
    p.add_argument("--side", action="append", default=[], choices=("device", "driver"),
                   help="only records of this side of the ring")
    p.add_argument("--queue", action="append", default=[], type=int, metavar="Q", help="only this virtqueue")
    p.add_argument("--kind", action="append", default=[], metavar="K",
                   help="only this event kind (chain, used, kick, call, drop, link, ...); repeat or K1,K2")
    p.add_argument("--start", action="store_true",
                   help="trace the --port ports (every port without --port) first; stop them on exit")
    p.add_argument("--from-start", action="store_true",
                   help="print what the buffer still holds first (default: only new records)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")


def _filter(args: argparse.Namespace):
    from mnet.trace_view import TraceFilter

    kinds = [k for item in args.kind for k in item.split(",") if k]
    try:
        return TraceFilter(ports=frozenset(args.port), sides=frozenset(args.side), queues=frozenset(args.queue),
                           kinds=frozenset(kinds))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _follow(client, args, wanted, start: float) -> None:
    from mnet.trace_view import format_record
    from nicdev.net.control import TRACE_READ_MAX

    since = 0 if args.from_start else client.trace_read(since=1 << 62)["next"]
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while deadline is None or time.monotonic() < deadline:
        reply = client.trace_read(since=since)
        if reply["lost"]:
            print(f"mnet trace live: {reply['lost']} records lost (overwritten before they were read)",
                  file=sys.stderr, flush=True)
        lines = [format_record(r, start) for r in reply["records"] if wanted.matches(r, start)]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        since = reply["next"]
        if len(reply["records"]) < TRACE_READ_MAX:      # caught up: wait for more
            time.sleep(_INTERVAL)


def run(args: argparse.Namespace) -> int:
    from nicdev.net.control_client import ControlClient, ControlConnectError, ControlError

    from .ctl_cmd import control_path

    if args.duration is not None and not args.duration > 0:
        raise CliError(f"bad --duration {args.duration:g}: give a positive number of seconds")
    wanted = _filter(args)
    start = time.monotonic()        # the switch stamps records with the same system-wide clock
    client = ControlClient(control_path(args.control))
    started: list = []
    try:
        if args.start:
            for port in args.port or [None]:
                client.trace(port, True)
                started.append(port)
        _follow(client, args, wanted, start)
    except ControlConnectError as exc:
        raise CliError(str(exc), status=1) from None
    except ControlError as exc:
        raise CliError(f"the switch says: {exc}", status=1) from None
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        try:
            for port in started:
                client.trace(port, False)
        except ControlError:
            pass                    # the switch is gone: nothing to stop
        client.close()
    return 0
