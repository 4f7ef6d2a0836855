"""Clocks for the stack's runtime: the monotonic wall clock, or a virtual one that a test moves.

The runtime and the sockets read the time and wait only through their
stack's clock. On the :class:`MonotonicClock` (the default) time passes by
itself. On a :class:`VirtualClock` it stands still until someone calls
:meth:`VirtualClock.advance`: no TCP timer fires and no socket timeout runs
out before that, so a test can say "a recv with a 2 s timeout raises at
exactly t=2.0" instead of measuring wall time. ``advance`` wakes every
waiter (blocked socket calls and the runtime threads) so they look at the
new time at once.

What happens at a virtual time must not depend on how fast the threads are
scheduled, so the helpers that let time pass wait for the runtimes to be
*quiet* (:meth:`VirtualClock.settle`) before each step: every runtime has
done its work due by now *and* has no frame waiting on its NIC, so a frame
sent at t is answered at t, not at whatever time the peer's thread gets
to run.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]

# How long a select() on a virtual clock blocks before it looks at the time
# again (a socket poll() has no wake-up of its own for advance()).
VIRTUAL_RECHECK = 0.005
SETTLE_LIMIT = 5.0  # real seconds to wait for the runtimes to be quiet before calling it a failure
STEP = 1 / 256  # the virtual seconds one step of flowing() or pass_time() moves


class Clock(Protocol):
    """What the runtime and the sockets need from a clock (times in seconds)."""

    def now(self) -> float:
        """The current time."""

    def timeout(self, deadline: float | None) -> float | None:
        """Real seconds a ``select()`` may block before it must look at ``deadline`` again."""

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        """Wait on ``cond`` (its lock held) until notified or ``deadline``; may return early."""

    def sleeping(self, cond: threading.Condition | None = None) -> contextlib.AbstractContextManager[None]:
        """Around a wait that is not :meth:`wait` (a ``select()``): the caller counts as blocked.

        ``cond`` (unlocked by the caller meanwhile) is notified when time moves, for a
        wait that a notification of it ends (a caller driving the stack, which kicks)."""

    def attach(self, wake: Callable[[], None], input_waiting: Callable[[], bool]) -> None:
        """A runtime thread's wake-up, called when time jumps (its thread calls this), and
        how to tell that input waits for it (it must not block or take the stack's lock)."""

    def detach(self, wake: Callable[[], None]) -> None:
        """Forget a wake-up given to :meth:`attach`."""

    def busy(self, wake: Callable[[], None]) -> None:
        """The runtime with ``wake`` starts a round of work."""

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

    def sleeping(self, cond: threading.Condition | None = None) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def attach(self, wake: Callable[[], None], input_waiting: Callable[[], bool]) -> None:
        pass

    def detach(self, wake: Callable[[], None]) -> None:
        pass

    def busy(self, wake: Callable[[], None]) -> None:
        pass

    def idle(self, wake: Callable[[], None], seen: float) -> None:
        pass


@dataclass
class _Runtime:
    """What a virtual clock knows of one runtime thread."""

    input_waiting: Callable[[], bool]
    seen: float = float("-inf")  # the time its last finished round worked up to
    busy: bool = True  # in a round (or not through its first one yet)


@dataclass(eq=False)
class _Sleeper:
    """A caller blocked on a virtual clock."""

    cond: threading.Condition | None  # what advance() notifies (None: it rechecks by itself)
    thread: int  # threading.get_ident() of the caller
    moves: int  # how often the time had moved when it went to sleep


class VirtualClock:
    """A clock that moves only when :meth:`advance` is called (thread-safe)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._moves = 0  # how often the time moved: a sleeper that saw the last move has seen "now"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # sleepers or runtimes changed
        self._waiting: list[_Sleeper] = []
        self._runtimes: dict[Callable[[], None], _Runtime] = {}

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every waiter to look at it."""
        if not seconds >= 0:
            raise ValueError(f"time only moves forward, got {seconds!r}")
        with self._lock:
            self._move_locked(self._now + seconds)
        self._wake_everyone()

    def advance_to(self, when: float) -> None:
        """Move time forward to exactly ``when`` (no rounding from adding up steps)."""
        with self._lock:
            if not when >= self._now:
                raise ValueError(f"time only moves forward: {when!r} is before {self._now!r}")
            self._move_locked(float(when))
        self._wake_everyone()

    def _move_locked(self, when: float) -> None:
        self._now = when
        self._moves += 1

    def _wake_everyone(self) -> None:
        with self._lock:
            waiting = list(dict.fromkeys(s.cond for s in self._waiting if s.cond is not None))
            wakes = list(self._runtimes)
        for wake in wakes:
            wake()
        for cond in waiting:
            with cond:  # the waiter holds it until it really waits: no lost wake-up
                cond.notify_all()

    # -- letting time pass ------------------------------------------------------------------
    def _quiet_locked(self) -> bool:
        """Every runtime has done its work up to now and no input waits for it."""
        return all(not r.busy and r.seen >= self._now and not r.input_waiting() for r in self._runtimes.values())

    def settle(self, limit: float = SETTLE_LIMIT) -> bool:
        """Wait (in real time, up to ``limit``) until the runtimes are quiet: each has worked
        up to now and has no frame waiting, so what one sent at this time the other has
        taken in (and answered) at this time too. False if they were not within ``limit``."""
        with self._changed:
            return self._changed.wait_for(self._quiet_locked, limit)

    def pass_time(self, seconds: float, step: float = STEP, limit: float = SETTLE_LIMIT) -> None:
        """Move time forward by ``seconds`` in ``step``s, each one settled, and settle at the end:
        the timers of that span fire at their times (for a test that blocks on nothing).

        ``RuntimeError`` if the runtimes are not quiet within ``limit`` real seconds of a step.
        """
        end = self.now() + seconds
        while True:
            if not self.settle(limit):
                raise RuntimeError(f"virtual clock: the stack threads were not quiet within {limit} s "
                                   f"(real) at t={self.now()!r}")
            now = self.now()
            if now >= end:
                return
            self.advance_to(min(now + step, end))

    @contextlib.contextmanager
    def flowing(self, step: float = STEP, limit: float = SETTLE_LIMIT) -> Iterator[None]:
        """Let time pass in ``step``s while the block's thread is blocked on this clock.

        For a blocking socket call that waits on TCP's or ARP's timers. Time moves one
        step at a time, each only once the runtimes are quiet (:meth:`settle`) and the
        thread that entered the block waits on the clock having seen the last step. So
        time stops when the call returns (at most one step later: a socket woken by the
        stack rather than the clock still counts as waiting until it runs), however
        slowly the threads are scheduled. ``RuntimeError`` at the end if the runtimes
        were once not quiet within ``limit`` real seconds (time went on without them).
        """
        caller = threading.get_ident()
        stop = threading.Event()
        failures: list[str] = []

        def may_move() -> bool:
            if stop.is_set():
                return True
            asleep = any(s.thread == caller and s.moves == self._moves for s in self._waiting)
            return asleep and (bool(failures) or self._quiet_locked())

        def tick() -> None:
            while True:
                with self._changed:
                    if not self._changed.wait_for(may_move, limit):
                        if not failures and not self._quiet_locked():
                            failures.append(f"virtual clock: the stack threads were not quiet within {limit} s "
                                            f"(real) at t={self._now!r}")
                        continue  # (or the caller was busy with something else all along)
                    if stop.is_set():
                        return
                    self._move_locked(self._now + step)
                self._wake_everyone()

        ticker = threading.Thread(target=tick, name="virtual-clock", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            with self._changed:
                stop.set()
                self._changed.notify_all()
            ticker.join()
            if failures:
                raise RuntimeError(failures[0])

    # -- sleepers ---------------------------------------------------------------------------
    @property
    def sleepers(self) -> int:
        """How many callers are blocked on the clock right now."""
        with self._lock:
            return len(self._waiting)

    def wait_for_sleepers(self, count: int, limit: float = 5.0) -> bool:
        """Wait (real time, up to ``limit``) until ``count`` callers are blocked on the clock."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._waiting) >= count, limit)

    def _add_sleeper_locked(self, cond: threading.Condition | None) -> _Sleeper:
        sleeper = _Sleeper(cond, threading.get_ident(), self._moves)
        self._waiting.append(sleeper)
        self._changed.notify_all()
        return sleeper

    def _remove_sleeper(self, sleeper: _Sleeper) -> None:
        with self._lock:
            self._waiting.remove(sleeper)
            self._changed.notify_all()

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
            sleeper = self._add_sleeper_locked(cond)
        try:
            cond.wait()
        finally:
            self._remove_sleeper(sleeper)

    @contextlib.contextmanager
    def sleeping(self, cond: threading.Condition | None = None) -> Iterator[None]:
        with self._lock:
            sleeper = self._add_sleeper_locked(cond)
        try:
            yield
        finally:
            self._remove_sleeper(sleeper)

    def attach(self, wake: Callable[[], None], input_waiting: Callable[[], bool]) -> None:
        with self._lock:
            self._runtimes[wake] = _Runtime(input_waiting)

    def detach(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._runtimes.pop(wake, None)
            self._changed.notify_all()

    def busy(self, wake: Callable[[], None]) -> None:
        with self._lock:
            runtime = self._runtimes.get(wake)
            if runtime is not None:
                runtime.busy = True

    def idle(self, wake: Callable[[], None], seen: float) -> None:
        with self._lock:
            runtime = self._runtimes.get(wake)
            if runtime is not None:
                runtime.seen, runtime.busy = seen, False
                self._changed.notify_all()
