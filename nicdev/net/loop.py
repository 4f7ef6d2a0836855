"""One selector-based event loop for the whole switch process.

Ports register file descriptors with a callback; timers are kept in a heap.
Everything runs on one thread, so ports and the switch need no locks.

Pollers (`add_poller`) are for ports that poll their rings instead of
waiting for a kick: while any is active, the loop looks at its descriptors
without blocking and calls every poller once per turn; with none, it blocks
in select as before.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import selectors
import time
from typing import Callable

log = logging.getLogger(__name__)

__all__ = ["EventLoop", "Timer"]


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._running = False
        self._soon: collections.deque = collections.deque()
        self._pollers: dict[Callable[[], bool], None] = {}     # insertion-ordered set
        # A self-pipe so stop() from a signal handler or another thread wakes select().
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    # -- file descriptors -------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever `fd` is readable (replaces an earlier one)."""
        try:
            self._selector.modify(fd, selectors.EVENT_READ, callback)
        except KeyError:
            self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # -- timers -----------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop's thread at its next turn (callable from any thread)."""
        self._soon.append(callback)
        self._wake()

    # -- pollers ----------------------------------------------------------
    def add_poller(self, poller: Callable[[], bool]) -> None:
        """Call `poller()` once per turn of the loop, the loop not blocking
        meanwhile, until it returns False (or `remove_poller`). A poller that
        raises is logged and removed."""
        self._pollers[poller] = None

    def remove_poller(self, poller: Callable[[], bool]) -> None:
        self._pollers.pop(poller, None)

    @property
    def polling(self) -> bool:
        """Is any poller active (the loop spins instead of blocking)?"""
        return bool(self._pollers)

    def _run_pollers(self) -> None:
        for poller in list(self._pollers):
            try:
                keep = poller()
            except Exception:
                log.exception("poller failed")
                keep = False
            if not keep:
                self._pollers.pop(poller, None)

    # -- running ----------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def stop(self) -> None:
        self._running = False
        self._wake()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def run_once(self, timeout: float | None = None) -> None:
        if self._soon or self._pollers:
            timeout = 0.0
        if self._timers:
            delay = max(0.0, self._timers[0][0] - self.now())
            timeout = delay if timeout is None else min(timeout, delay)
        for key, _ in self._selector.select(timeout):
            try:
                key.data()
            except Exception:  # one broken port must not stop the others
                log.exception("event handler for fd %s failed", key.fd)
        while self._soon:
            callback = self._soon.popleft()
            try:
                callback()
            except Exception:
                log.exception("callback failed")
        now = self.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception:
                    log.exception("timer callback failed")
        if self._pollers:
            self._run_pollers()

    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Run until stop() (or `until()` is true, or `timeout` seconds pass)."""
        self._running = True
        deadline = None if timeout is None else self.now() + timeout
        while self._running:
            if until is not None and until():
                break
            remaining = None
            if deadline is not None:
                remaining = deadline - self.now()
                if remaining <= 0:
                    break
            self.run_once(remaining if until is None else min(remaining or 0.05, 0.05))
        self._running = False

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
