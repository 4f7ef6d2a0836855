"""The monitor's loop: fetch a snapshot, render it, wait, again (the I/O edge).

On a terminal each refresh redraws the screen; otherwise (a pipe, a file)
each is appended under a line with its time, so the output is a log. From
the second refresh on, the rings view says how fast the NIC's counters moved
since the previous one. `fetch` is anything that returns a snapshot:
`stack.snapshot` in process, or `control_fetch(path)` for a running
`mnet stack`.
"""
from __future__ import annotations

import time
from typing import Callable, TextIO

from nicdev.net.control_client import ControlClient

from .render import rates, render

__all__ = ["control_fetch", "run_monitor", "CLEAR"]

CLEAR = "\x1b[H\x1b[2J"     # cursor home, erase the screen


def control_fetch(path: str, timeout: float = 10.0) -> tuple[Callable[[], dict], Callable[[], None]]:
    """(fetch, close) for the stack answering on the control socket `path`:
    fetch() raises `ControlConnectError` (one line) when no stack answers."""
    client = ControlClient(path, timeout, peer="stack")
    return (lambda: client.request("snapshot")["snapshot"]), client.close


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d} UTC"


def run_monitor(fetch: Callable[[], dict], out: TextIO, *, view: str = "all", interval: float | None = None,
                tty: bool = False, source: str = "", refreshes: int | None = None,
                sleep: Callable[[float], None] = time.sleep, wall: Callable[[], float] = time.time) -> int:
    """Print the tables once (`interval` None) or every `interval` seconds
    until interrupted (or `refreshes` times). Returns how many were printed."""
    previous = None
    done = 0
    while True:
        snap = fetch()
        text = render(snap, view, rates(previous, snap) if previous is not None else None)
        if interval is None:
            out.write(text + "\n")
        elif tty:
            out.write(f"{CLEAR}{source} at {_stamp(wall())}, every {interval:g} s (Ctrl-C to stop)\n\n{text}\n")
        else:
            out.write(f"--- {source} at {_stamp(wall())} ---\n{text}\n\n")
        out.flush()
        done += 1
        previous = snap
        if interval is None or (refreshes is not None and done >= refreshes):
            return done
        sleep(interval)
