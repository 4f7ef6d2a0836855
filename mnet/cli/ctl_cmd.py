"""`mnet ctl`: change and inspect a running `mnet switch` through its control socket."""
from __future__ import annotations

import argparse
import json

DESCRIPTION = """\
Talk to a running `mnet switch` through its control socket (docs/control.md):

  ports                     each port: kind, link, status, impairments
  counters                  the switch's and every port's counters (JSON)
  impair PORT SPEC|clear    impair PORT from now on, SPEC as in a port spec
                            (loss=50%,delay=10ms,seed=1,impair=out), or clear
  link PORT up|down         take PORT's link down or up (a guest started with
                            `mnet vm --qmp` on a port with qmp= sees its carrier change)
  trace PORT|all on|off     trace PORT (all: every port) into the live buffer
                            (`mnet trace live` shows it)
  fault PORT MODE|clear     set or clear a misbehaving-device mode

Without --control, the one switch listening in the default directory is used.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_control_argument(p)
    p.add_argument("--json", action="store_true", help="print the switch's reply as JSON")
    p.add_argument("action", choices=["ports", "counters", "impair", "link", "trace", "fault"])
    p.add_argument("args", nargs="*", metavar="ARG")


def add_control_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", metavar="PATH",
                   help="the switch's control socket (default: the one switch in the default directory)")


def control_path(given: str | None) -> str:
    """--control, or the one switch that answers in the default directory (CliError otherwise)."""
    from nicdev.net.control_client import find_switches

    return pick_control_path(given, find_switches, "switch", "switches")


def pick_control_path(given: str | None, find, what: str, plural: str) -> str:
    """--control, or the one control socket ``find()`` lists in the default directory (CliError otherwise)."""
    from mnet.cli.errors import CliError
    from nicdev.net.control_server import default_control_dir

    if given:
        return given
    found = find()
    if not found:
        raise CliError(f"no {what} listening in {default_control_dir()}: start `mnet {what}`, "
                       "or give --control PATH", status=1)
    if len(found) > 1:
        raise CliError(f"several {plural} are running: give --control with one of " + ", ".join(found))
    return found[0]


_USAGE = {"ports": "ports", "counters": "counters", "impair": "impair PORT SPEC|clear",
          "link": "link PORT up|down", "trace": "trace PORT|all on|off", "fault": "fault PORT MODE|clear"}
_ARGC = {"ports": 0, "counters": 0, "impair": 2, "link": 2, "trace": 2, "fault": 2}
_ON_OFF = {"on": True, "up": True, "off": False, "down": False}


def _request(client, action: str, args: list[str]) -> dict:
    from mnet.cli.errors import CliError

    if len(args) != _ARGC[action]:
        raise CliError(f"usage: mnet ctl {_USAGE[action]}")
    if action in ("ports", "counters"):
        return client.request(action)
    port, value = args
    if action == "impair":
        return client.impair(port, None if value == "clear" else value)
    if action == "fault":
        return client.fault(port, None if value == "clear" else value)
    wanted = ("up", "down") if action == "link" else ("on", "off")
    if value not in wanted:
        raise CliError(f"usage: mnet ctl {_USAGE[action]} (not {value!r})")
    if action == "link":
        return client.link(port, _ON_OFF[value])
    return client.trace(None if port == "all" else port, _ON_OFF[value])


def _impairment_text(impairment: dict | None) -> str:
    if not impairment:
        return "-"
    parts = [f"{way} [{impairment[way]['impairment']}]" for way in ("out", "in")
             if impairment.get(way, {}).get("impairment")]
    return ", ".join(parts) or "-"


def _print(action: str, reply: dict) -> None:
    if action == "ports":
        for port in reply["ports"]:
            link = "up" if port["link"] else "down"
            print(f"{port['name']}  {port['kind']}  link {link}  impair {_impairment_text(port['impairment'])}"
                  f"  fault {port.get('fault') or '-'}  {port['status']}")
        return
    if action == "counters":
        print(json.dumps(reply, indent=2, sort_keys=True))
        return
    if action == "impair":
        print(f"{reply['port']}: impair {_impairment_text(reply['impairment'])}")
    elif action == "link":
        told = f"; {reply['qmp']}" if reply.get("qmp") else ""
        print(f"{reply['port']}: link {'up' if reply['link'] else 'down'}{told}")
    elif action == "trace":
        print(f"{reply['port'] or 'all ports'}: tracing {'on' if reply['on'] else 'off'}")
    elif action == "fault":
        print(f"{reply['port']}: fault {reply['mode'] or 'cleared'}")


def run(args: argparse.Namespace) -> int:
    from mnet.cli.errors import CliError
    from nicdev.net.control_client import ControlClient, ControlConnectError, ControlError

    path = control_path(args.control)
    try:
        with ControlClient(path) as client:
            reply = _request(client, args.action, args.args)
    except ControlConnectError as exc:
        raise CliError(str(exc), status=1) from None
    except ControlError as exc:
        raise CliError(f"the switch says: {exc}", status=1) from None
    if args.json:
        print(json.dumps(reply, sort_keys=True))
    else:
        _print(args.action, reply)
    return 0
