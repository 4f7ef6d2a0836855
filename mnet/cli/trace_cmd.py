"""`mnet trace ACTION`: read ring traces (docs/tracing.md).

Each action lives in its own module with add_arguments(p) and run(args),
listed in ACTIONS; a new action (following a running switch, say) is one
more entry there.
"""
from __future__ import annotations

import argparse
import importlib

from .errors import CliError

DESCRIPTION = """\
Read a ring trace recorded with `mnet switch --trace FILE` or `mnet stack
--trace FILE`: print its records as text, summarise each queue, or plot ring
occupancy and event rates over time. docs/tracing.md describes the records
and every column of the summary. `live` follows a running switch instead
(docs/control.md).
"""

# name -> (module, one-line help)
ACTIONS = {
    "show": ("mnet.cli.trace_show", "print the records as text, filtered by port, queue, kind and time"),
    "summary": ("mnet.cli.trace_summary", "per queue: chains, bytes, occupancy, kicks, calls, drops"),
    "plot": ("mnet.cli.trace_plot", "plot ring occupancy and event rates over time (.svg or .png)"),
    "live": ("mnet.cli.trace_live", "follow a running switch's ring events through its control socket"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = p.add_subparsers(dest="trace_action", metavar="ACTION")
    for name, (module_name, help_text) in ACTIONS.items():
        module = importlib.import_module(module_name)
        action = actions.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(action)
        action.set_defaults(_trace_run=module.run, _parser=action)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "_trace_run", None):
        raise CliError(f"give an action: {', '.join(ACTIONS)} (see mnet trace --help)")
    return args._trace_run(args)
