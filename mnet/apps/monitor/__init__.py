"""The network monitor: a live view of a MultiOS stack, like `ip` and `ss`.

The interface, the ARP cache, the routes, the sockets and TCP connections,
and the NIC's rings (indexes, buffers in flight, kicks, interrupts, drops)
of a stack, from its read-only snapshot (:meth:`stack.Stack.snapshot`). In
process, ``print(show(stack))``; for a running `mnet stack`, `mnet monitor`
asks its control socket (docs/monitor.md).
"""
from __future__ import annotations

from .render import VIEWS, rates, render

__all__ = ["show", "render", "rates", "VIEWS"]


def show(stack, view: str = "all") -> str:
    """The tables of one view (``all``, ``ip``, ``neigh``, ``route``, ``ss``,
    ``rings``) of ``stack`` now, as text."""
    return render(stack.snapshot(), view)
