"""What the `mnet trace` actions share: the record filters and reading the file."""
from __future__ import annotations

import argparse

from .errors import CliError


def add_filter_arguments(p: argparse.ArgumentParser, *, kinds: bool) -> None:
    p.add_argument("--port", action="append", default=[], metavar="P",
                   help="only this port (the stack's NIC name for driver-side records); repeat for more")
    p.add_argument("--side", action="append", default=[], choices=("device", "driver"),
                   help="only records of this side of the ring")
    p.add_argument("--queue", action="append", default=[], type=int, metavar="Q",
                   help="only this virtqueue (0 receive, 1 transmit for one queue pair); repeat for more")
    if kinds:
        p.add_argument("--kind", action="append", default=[], metavar="K",
                       help="only this event kind (chain, used, kick, call, drop, ...); repeat or K1,K2")
    p.add_argument("--since", type=float, metavar="S", help="from S seconds after the trace start")
    p.add_argument("--until", type=float, metavar="S", help="up to S seconds after the trace start")


def trace_filter(args: argparse.Namespace):
    from mnet.trace_view import TraceFilter

    kinds = [k for item in getattr(args, "kind", []) for k in item.split(",") if k]
    try:
        return TraceFilter(ports=frozenset(args.port), sides=frozenset(args.side), queues=frozenset(args.queue),
                           kinds=frozenset(kinds), since=args.since, until=args.until)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def load_filtered(args: argparse.Namespace):
    """The trace file, its records narrowed to what the filters let through.
    A file that is not a trace raises TraceFormatError (one line, file:line)."""
    from mnet.trace_view import Trace, load_trace

    wanted = trace_filter(args)
    trace = load_trace(args.file)
    return Trace(list(wanted.apply(trace.records, trace.start)), trace.start, trace.header, trace.source)
