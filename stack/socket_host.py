"""What a socket needs from its stack, and the process-wide default stack.

Sockets know their stack only through :class:`SocketHost` (which
:class:`stack.runtime.Stack` implements), so the socket modules never import
the runtime: the runtime imports them and builds every socket in
:meth:`SocketHost.socket`. The default stack lets seed-style code write
``Socket(SocketType.DATAGRAM)`` without naming a stack.
"""
from __future__ import annotations

import errno
import threading
from typing import Any, Protocol

from stack.clock import Clock
from stack.iface import Interface

__all__ = ["SocketHost", "set_default_stack", "get_default_stack"]


class SocketHost(Protocol):
    """The stack as its sockets see it (docs/stack.md, "The interface sockets use").

    Every call below but :meth:`socket` and :meth:`condition` is made with ``lock`` held.
    """

    lock: threading.Lock  # the one lock around the core; sockets build their conditions on it
    iface: Interface  # the sans-IO core: its udp_*/raw_*/tcp_* socket calls
    clock: Clock
    privileged: bool  # may hand out RAW sockets

    @property
    def running(self) -> bool: ...

    # Any, not Socket: this module sits below the socket classes (no import loop).
    def socket(self, type: Any = None, protocol: int | None = None) -> Any: ...

    def now(self) -> float: ...

    def register(self, sock: Any) -> None: ...

    def unregister(self, sock: Any) -> None: ...

    def pump(self) -> None: ...

    def condition(self) -> threading.Condition:
        """A new condition on ``lock`` for one socket's waiters (called without the lock)."""

    def wait_locked(self, cond: threading.Condition, deadline: float | None) -> None:
        """Block until ``cond`` is notified or ``deadline`` (the stack's clock); may return early."""


_default_stack: SocketHost | None = None
_default_lock = threading.Lock()


def set_default_stack(stack: SocketHost | None) -> None:
    """Make ``stack`` the one ``Socket(...)`` uses when given no ``stack=``."""
    global _default_stack
    with _default_lock:
        _default_stack = stack


def get_default_stack() -> SocketHost:
    """The default stack; ``OSError(ENETDOWN)`` if none was set."""
    with _default_lock:
        if _default_stack is None:
            raise OSError(errno.ENETDOWN, "no default MultiOS stack: call stack.set_default_stack(Stack(nic, ...))")
        return _default_stack
