"""`mnet trace summary FILE`: a table of what each queue did."""
from __future__ import annotations

import argparse
import json

from .trace_args import add_filter_arguments, load_filtered

DESCRIPTION = """\
Summarise a trace file per port, side and queue: chains, bytes moved,
descriptors per chain, ring occupancy (chains in flight: time-weighted mean
and maximum), kicks and kicks per frame, calls, suppressed kicks and calls,
drops; then the suppressed notifications and drops by reason. docs/tracing.md
explains each column. --json prints the same as one JSON object.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("file", metavar="FILE", help="a trace file (JSON lines)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_filter_arguments(p, kinds=False)


def run(args: argparse.Namespace) -> int:
    from mnet.trace_view import summarize
    from mnet.trace_view.table import format_table

    trace = load_filtered(args)
    rows = summarize(trace.records, end=trace.end)
    duration = trace.end - trace.start
    if args.json:
        print(json.dumps({"file": args.file, "records": len(trace.records), "duration": duration,
                          "queues": [row.to_dict() for row in rows]}, indent=2))
        return 0
    ports = sorted({r["port"] for r in trace.records})
    print(f"{args.file}: {len(trace.records)} records over {duration:.6f} s, "
          f"ports {', '.join(ports) if ports else '(none)'}")
    print(format_table(rows))
    return 0
