"""`mnet trace plot FILE -o OUT.svg|png`: occupancy and event rates over time."""
from __future__ import annotations

import argparse

from .errors import CliError
from .trace_args import add_filter_arguments, load_filtered

DESCRIPTION = """\
Plot a trace file with matplotlib: per queue, the chains in flight (ring
occupancy) over time, chains per second, and kicks and calls per second,
in equal time bins. The output's name picks the format: .svg or .png.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("file", metavar="FILE", help="a trace file (JSON lines)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the image to write: OUT.svg or OUT.png")
    p.add_argument("--bins", type=int, default=100, help="time bins for the event rates (default 100)")
    add_filter_arguments(p, kinds=False)


def run(args: argparse.Namespace) -> int:
    from mnet.trace_view.plot import plot_format, write_plot

    try:
        plot_format(args.output)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.bins < 1:
        raise CliError(f"bad --bins {args.bins}: at least 1")
    trace = load_filtered(args)
    try:
        write_plot(trace, args.output, args.bins)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}", status=1) from None
    print(f"wrote {args.output}: {len(trace.records)} records over {trace.end - trace.start:.6f} s")
    return 0
