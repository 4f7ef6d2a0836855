"""Clocks for the stack's runtime: the monotonic wall clock, or a virtual one that a test moves.

The runtime and the sockets read the time and wait only through their
stack's clock. On the :class:`MonotonicClock` (the default) time passes by
itself. On a :class:`VirtualClock` it stands still until someone calls
:meth:`VirtualClock.advance`: no TCP timer fires and no socket timeout runs
out before that, so a test can say "a recv with a 2 s timeout raises at
exactly t=2.0" instead of measuring wall time. ``advance`` wakes every
waiter (blocked socket calls and the runtime threads) so they look at the
new time at once.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator, Protocol

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]

# How long a select() on a virtual clock blocks before it looks at the time
# again (a socket poll() has no wake-up of its own for advance()).
VIRTUAL_RECHECK = 0.005
SETTLE_LIMIT = 1.0  # real seconds settle() waits for a runtime thread before giving up


class Clock(Protocol):
    """What the runtime and the sockets need from a clock (times in seconds)."""

    def now(self) -> float:
        """The current time."""

    def timeout(self, deadline: float | None) -> float | None:
        """Real seconds a ``select()`` may block before it must look at ``deadline`` again."""

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        """Wait on ``cond`` (its lock held) until notified or ``deadline``; may return early."""

    def attach(self, wake: Callable[[], None]) -> None:
        """A runtime thread's wake-up, called when time jumps (its thread calls this)."""

    def detach(self, wake: Callable[[], None]) -> None:
        """Forget a wake-up given to :meth:`attach`."""

    def idle(self, wake: Callable[[], None], seen: float) -> None:
        """The runtime with ``wake`` has done all its work up to time ``seen`` and sleeps."""


class MonotonicClock:
    """``time.monotonic()``: time passes by itself, nobody needs waking."""

    def now(self) -> float:
        return time.monotonic()

    def timeout(self, deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        cond.wait(self.timeout(deadline))

    def attach(self, wake: Callable[[], None]) -> None:
        pass

    def detach(self, wake: Callable[[], None]) -> None:
        pass

    def idle(self, wake: Callable[[], None], seen: float) -> None:
        pass


class VirtualClock:
    """A clock that moves only when :meth:`advance` is called (thread-safe)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # sleepers or idle runtimes changed
        self._waiting: list[threading.Condition] = []  # one entry per blocked caller
        self._runtimes: dict[Callable[[], None], float] = {}  # wake-up -> time it last finished

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every waiter to look at it."""
        if not seconds >= 0:
            raise ValueError(f"time only moves forward, got {seconds!r}")
        with self._lock:
            self._now += seconds
        self._wake_everyone()

    def advance_to(self, when: float) -> None:
        """Move time forward to exactly ``when`` (no rounding from adding up steps)."""
        with self._lock:
            if not when >= self._now:
                raise ValueError(f"time only moves forward: {when!r} is before {self._now!r}")
            self._now = float(when)
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        with self._lock:
            waiting = list(dict.fromkeys(self._waiting))
            wakes = list(self._runtimes)
        for wake in wakes:
            wake()
        for cond in waiting:
            with cond:  # the waiter holds it until it really waits: no lost wake-up
                cond.notify_all()

    def settle(self, limit: float = SETTLE_LIMIT) -> bool:
        """Wait (in real time, up to ``limit``) until every runtime has worked up to now."""
        with self._changed:
            return self._changed.wait_for(
                lambda: all(seen >= self._now for seen in self._runtimes.values()), limit)

    @contextlib.contextmanager
    def flowing(self, step: float = 1 / 256) -> Iterator[None]:
        """Let time pass in ``step``s, each settled, while the block runs (for blocking calls)."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.is_set():
                self.advance(step)
                self.settle()
                stop.wait(0.0005)  # let woken callers run before the next step

        ticker = threading.Thread(target=tick, name="virtual-clock", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    @property
    def sleepers(self) -> int:
        """How many callers are blocked in :meth:`wait` right now."""
        with self._lock:
            return len(self._waiting)

    def wait_for_sleepers(self, count: int, limit: float = 5.0) -> bool:
        """Wait (real time, up to ``limit``) until ``count`` callers are blocked in :meth:`wait`."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._waiting) >= count, limit)

    # -- the Clock protocol -------------------------------------------------------------
    def timeout(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        return 0.0 if deadline <= self.now() else VIRTUAL_RECHECK

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        with self._lock:
            # Registered before the deadline check: an advance() after it notifies us.
            if deadline is not None and deadline <= self._now:
                return
            self._waiting.append(cond)
            self._changed.notify_all()
        try:
            cond.wait()
        finally:
            with self._lock:
                self._waiting.remove(cond)
                self._changed.notify_all()

    def attach(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._runtimes[wake] = float("-inf")

    def detach(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._runtimes.pop(wake, None)
            self._changed.notify_all()

    def idle(self, wake: Callable[[], None], seen: float) -> None:
        with self._lock:
            if wake in self._runtimes:
                self._runtimes[wake] = seen
                self._changed.notify_all()
