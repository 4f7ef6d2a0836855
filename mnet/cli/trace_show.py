"""`mnet trace show FILE`: one line per record."""
from __future__ import annotations

import argparse
import os
import sys

from .trace_args import add_filter_arguments, load_filtered

DESCRIPTION = """\
Print each record of a trace file as one line: seconds after the trace start,
port (`drv` for the driver's side), queue and direction, event kind and its
fields, e.g.

  +0.001234 a q1 tx chain head=17 descs=2 bytes=1514 [0x7f3a2000:12 N, 0x7f3a3000:1502]

Descriptor flags: N next, W write (device writes), I indirect.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("file", metavar="FILE", help="a trace file (JSON lines)")
    add_filter_arguments(p, kinds=True)


def run(args: argparse.Namespace) -> int:
    from mnet.trace_view import format_record

    trace = load_filtered(args)
    try:
        for record in trace.records:
            sys.stdout.write(format_record(record, trace.start) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # `mnet trace show ... | head`: the reader has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
