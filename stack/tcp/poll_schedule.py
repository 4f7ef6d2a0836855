"""Which TCP connections need a poll, without asking every one of them (sans-IO).

With thousands of connections, asking each for ``poll_at()`` on every poll
of the interface (every received burst, every socket send) costs O(n) per
packet. :class:`PollSchedule` keeps instead:

* a heap of deadlines: the ``poll_at()`` each connection gave after it was
  last polled or touched (stale entries are skipped lazily);
* the *touched* set: connections something happened to since (a segment
  arrived, the application sent, read, closed...), whose ``poll_at()`` may
  have moved earlier. The owner touches a connection on everything it hands
  it, and a connection touches itself on every application call
  (``TcpConnection.on_touch``).

A deadline that turns out later than the heap says is harmless (the
connection is asked, has nothing due, and is rescheduled); one that moves
earlier always comes with a touch. So :meth:`due` finds every connection
whose ``poll_at()`` has come, in O(touched + due + log n).
"""
from __future__ import annotations

import heapq
from itertools import count
from typing import Callable, Generic, Hashable, TypeVar

__all__ = ["PollSchedule"]

C = TypeVar("C", bound=Hashable)


class PollSchedule(Generic[C]):
    """Deadlines and touches of a set of connections (any hashable objects)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, C]] = []
        self._live: dict[C, int] = {}  # connection -> sequence number of its one valid heap entry
        self._touched: dict[C, None] = {}  # insertion-ordered: polls stay deterministic
        self._seq = count()

    def __len__(self) -> int:
        """Heap entries, stale ones included (for tests: stale entries do not pile up)."""
        return len(self._heap)

    def touch(self, conn: C) -> None:
        """Something happened to ``conn``: look at it on the next :meth:`due`."""
        self._touched[conn] = None

    def schedule(self, conn: C, at: float | None) -> None:
        """``conn`` next needs a poll at ``at`` (None: only on input)."""
        if at is None:
            self._live.pop(conn, None)
            return
        seq = next(self._seq)
        self._live[conn] = seq
        heapq.heappush(self._heap, (at, seq, conn))
        if len(self._heap) > 4 * len(self._live) + 64:
            self._compact()

    def forget(self, conn: C) -> None:
        """``conn`` is gone: never report it again."""
        self._live.pop(conn, None)
        self._touched.pop(conn, None)

    def due(self, now: float) -> list[C]:
        """Each touched connection and each whose deadline is ``<= now``, once; both sets are emptied."""
        out = self._touched
        self._touched = {}
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now:
            _, seq, conn = heapq.heappop(heap)
            if live.get(conn) == seq:
                del live[conn]
                out[conn] = None
        return list(out)

    def next_at(self, poll_at: Callable[[C], float | None]) -> float | None:
        """The earliest deadline; touched connections are asked with ``poll_at`` (they stay touched)."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # stale
        t = heap[0][0] if heap else None
        for conn in self._touched:
            at = poll_at(conn)
            if at is not None and (t is None or at < t):
                t = at
        return t

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
        heapq.heapify(self._heap)
