"""One thread serving one service: an event loop over non-blocking sockets.

The service's socket (a listener, or udp-echo's socket) and every
connection it accepts are registered in one :class:`stack.socket_api.Poller`;
each has a handler, a small state machine that does what it can without
blocking when its socket is ready and says which readiness it waits for
next. So ten thousand connections cost ten thousand handlers, not ten
thousand threads, and a wake-up costs O(ready sockets).
"""
from __future__ import annotations

import errno
import heapq
import threading
from itertools import count
from typing import Callable, Protocol

from stack import PollEvent, Socket
from stack.socket_api import Poller

LOOP_TICK = 0.5  # the longest a wait lasts before the loop looks at the stop flag
STACK_GONE = (errno.EBADF, errno.ENETDOWN)  # the stack is stopping: end quietly


class Handler(Protocol):
    """What the loop drives: one socket's state machine."""

    sock: Socket

    def on_ready(self, events: PollEvent) -> None:
        """The socket is ready for ``events``: do what can be done without blocking."""

    def on_timer(self) -> None:
        """A deadline set with :meth:`ServiceLoop.call_at` has come."""


class ServiceLoop:
    """The handlers of one service, their sockets in one Poller, and their deadlines."""

    def __init__(self, report: Callable[[str], None], clock) -> None:
        self.report = report
        self.clock = clock
        self.poller = Poller()
        self.handlers: dict[Socket, Handler] = {}
        self._events: dict[Socket, PollEvent] = {}  # what each socket is registered for
        self._timers: list[tuple[float, int, Handler]] = []
        self._seq = count()
        self.done = False  # set by a handler when the whole service must end (its socket failed)

    def add(self, handler: Handler, events: PollEvent) -> None:
        self.handlers[handler.sock] = handler
        self._events[handler.sock] = events
        self.poller.register(handler.sock, events)

    def want(self, handler: Handler, events: PollEvent) -> None:
        """``handler`` now waits for ``events`` (no system call when nothing changes).

        ``PollEvent.NONE`` stops watching the socket altogether, hang-ups and
        errors included, until the next ``want``: a handler that cannot act on
        its socket now (its buffer is full) is not woken again and again by a
        level-triggered hang-up."""
        before = self._events.get(handler.sock)
        if before == events:
            return
        self._events[handler.sock] = events
        if not events:
            self.poller.unregister(handler.sock)
        elif before == PollEvent.NONE:
            self.poller.register(handler.sock, events)
        else:
            self.poller.modify(handler.sock, events)

    def remove(self, handler: Handler) -> None:
        """Forget ``handler`` and close its socket."""
        self.poller.unregister(handler.sock)
        self.handlers.pop(handler.sock, None)
        self._events.pop(handler.sock, None)
        handler.sock.close()

    def call_at(self, when: float, handler: Handler) -> None:
        """Call ``handler.on_timer()`` at ``when`` (the stack's clock) if it is still served then."""
        heapq.heappush(self._timers, (when, next(self._seq), handler))

    def run(self, stopping: threading.Event) -> None:
        """Serve until ``stopping`` is set or a handler ends the service.

        Every socket still open is closed at the end, the service's own too
        (a socket nobody holds would be closed by the garbage collector
        anyway, with a ResourceWarning; closing twice is harmless)."""
        try:
            while not stopping.is_set() and not self.done:
                for sock, events in self.poller.poll(self._wait() * 1000.0):  # (milliseconds)
                    handler = self.handlers.get(sock)
                    if handler is not None:
                        handler.on_ready(events)
                self._run_timers()
        finally:
            for handler in list(self.handlers.values()):
                self.poller.unregister(handler.sock)
                handler.sock.close()
            self.poller.close()

    def _wait(self) -> float:
        """Seconds until the next timer or the next look at the stop flag."""
        if not self._timers:
            return LOOP_TICK
        return max(0.0, min(LOOP_TICK, self._timers[0][0] - self.clock.now()))

    def _run_timers(self) -> None:
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, handler = heapq.heappop(self._timers)
            if self.handlers.get(handler.sock) is handler:
                handler.on_timer()
