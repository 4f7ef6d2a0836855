"""Sets of sequence-number ranges, for the SACK scoreboard.

A :class:`RangeSet` holds disjoint half-open ranges ``[start, end)`` of
unwrapped sequence numbers, sorted and merged, with the number of bytes it
covers kept up to date. The sender keeps three of them (SACKed, lost,
retransmitted) to compute RFC 6675's "pipe" without walking per-segment
records. They stay small (a few ranges per loss episode), so plain lists
and ``bisect`` are enough.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right

__all__ = ["RangeSet"]


class RangeSet:
    """Disjoint, sorted ``[start, end)`` ranges with their total size."""

    __slots__ = ("_starts", "_ends", "total")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.total = 0

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self):
        return iter(zip(self._starts, self._ends))

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self.total = 0

    @property
    def high(self) -> int | None:
        """The end of the highest range, or None when empty."""
        return self._ends[-1] if self._ends else None

    def add(self, start: int, end: int) -> int:
        """Cover ``[start, end)``; return how many bytes were newly covered."""
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        # Ranges that touch or overlap [start, end) are merged into one.
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        if i == j:
            starts.insert(i, start)
            ends.insert(i, end)
            self.total += end - start
            return end - start
        old = sum(ends[k] - starts[k] for k in range(i, j))
        new_start = min(start, starts[i])
        new_end = max(end, ends[j - 1])
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        added = (new_end - new_start) - old
        self.total += added
        return added

    def remove(self, start: int, end: int) -> int:
        """Uncover ``[start, end)``; return how many bytes were removed."""
        if end <= start or not self._starts:
            return 0
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        j = bisect_left(starts, end)
        if i >= j:
            return 0
        removed = 0
        keep_s: list[int] = []
        keep_e: list[int] = []
        for k in range(i, j):
            s, e = starts[k], ends[k]
            removed += min(e, end) - max(s, start)
            if s < start:
                keep_s.append(s)
                keep_e.append(start)
            if e > end:
                keep_s.append(end)
                keep_e.append(e)
        starts[i:j] = keep_s
        ends[i:j] = keep_e
        self.total -= removed
        return removed

    def discard_below(self, seq: int) -> None:
        """Forget everything before ``seq`` (the cumulative ACK moved)."""
        if self._starts and self._starts[0] < seq:
            self.remove(self._starts[0], seq)

    def covered(self, start: int, end: int) -> int:
        """How many bytes of ``[start, end)`` are covered."""
        if end <= start or not self._starts:
            return 0
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        n = 0
        while i < len(starts) and starts[i] < end:
            n += min(ends[i], end) - max(starts[i], start)
            i += 1
        return n

    def contains(self, seq: int) -> bool:
        i = bisect_right(self._starts, seq) - 1
        return i >= 0 and seq < self._ends[i]

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    def first_gap(self, start: int, end: int, limit: int) -> tuple[int, int] | None:
        """The first sub-range of ``[start, end)`` not covered, at most ``limit`` long."""
        if end <= start:
            return None
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)
        pos = start
        while pos < end:
            if i < len(starts) and starts[i] <= pos:
                pos = ends[i]
                i += 1
                continue
            stop = min(end, starts[i] if i < len(starts) else end, pos + limit)
            return pos, stop
        return None
