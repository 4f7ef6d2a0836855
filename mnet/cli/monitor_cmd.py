"""`mnet monitor`: the tables of a running `mnet stack`, once or live (docs/monitor.md)."""
from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = """\
Show a running `mnet stack` as `ip` and `ss` would: its interface, ARP cache,
routes, sockets and TCP connections, and its NIC's rings (avail and used
indexes, buffers in flight, kicks, interrupts, drops). It asks the stack's
control socket (`mnet stack --control`, by default stack-PID.sock in
$XDG_RUNTIME_DIR/mnet, or /run/mnet for root, /tmp/mnet-UID for others).

  --once            print the tables once and exit (the default)
  --interval SEC    refresh every SEC seconds until Ctrl-C: a redraw on a
                    terminal, appended snapshots with their time otherwise;
                    the rings view adds frames/s and bytes/s
  --view VIEW       all (default), ip, neigh, route, ss or rings

Without --control, the one stack listening in the default directory is used.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mnet.apps.monitor.render import VIEWS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--control", metavar="PATH",
                   help="the stack's control socket (default: the one stack in the default directory)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print once and exit (the default)")
    mode.add_argument("--interval", type=float, metavar="SEC", help="refresh every SEC seconds until Ctrl-C")
    p.add_argument("--view", default="all", choices=("all",) + VIEWS, help="which tables (default all)")


def stack_control_path(given: str | None) -> str:
    """--control, or the one stack that answers in the default directory (CliError otherwise)."""
    from mnet.apps.monitor.server import find_stacks
    from mnet.cli.ctl_cmd import pick_control_path

    return pick_control_path(given, find_stacks, "stack", "stacks")


def run(args: argparse.Namespace) -> int:
    from mnet.apps.monitor.live import control_fetch, run_monitor
    from mnet.cli.errors import CliError
    from nicdev.net.control_client import ControlError

    if args.interval is not None and not args.interval > 0:
        raise CliError(f"bad --interval {args.interval:g}: give a number of seconds above 0")
    path = stack_control_path(args.control)
    fetch, close = control_fetch(path)
    try:
        run_monitor(fetch, sys.stdout, view=args.view, interval=args.interval, tty=sys.stdout.isatty(),
                    source=f"stack at {path}")
    except ControlError as exc:
        raise CliError(str(exc), status=1) from None
    except KeyboardInterrupt:
        return 0        # Ctrl-C is how live mode ends
    except BrokenPipeError:
        # The reader went away (`mnet monitor --interval 1 | head`): done, quietly;
        # stdout points at /dev/null so that the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        close()
    return 0
