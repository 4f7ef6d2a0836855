"""Questions a driver test asks of a trace, and assertions that fail with
the numbers: "the guest posted at least N RX buffers", "no chain longer than
K", "calls were suppressed under EVENT_IDX".

    trace = TraceAssertions.from_file(path)        # or TraceAssertions(records)
    trace.assert_rx_buffers_posted("vm0", at_least=64)
    trace.assert_longest_chain("vm0", at_most=2, queue=1)
    trace.assert_calls_suppressed("vm0", reason="event_idx")

Each count also exists as a plain method (`rx_buffers_posted(port)` and so
on) for assertions of the test's own.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from nicdev.virtio.trace import read_trace

from .load import Trace
from .summary import summarize


class TraceAssertions:
    """Counts over the records of a trace (a list of dicts, header optional)."""

    def __init__(self, records: Iterable[dict]) -> None:
        self.trace = Trace.from_records(list(records))

    @classmethod
    def from_file(cls, path: str) -> "TraceAssertions":
        return cls(read_trace(path))

    def _select(self, port: str, kind: str, *, queue: int | None = None, direction: str | None = None,
                side: str | None = None) -> list[dict]:
        return [r for r in self.trace.records
                if r["port"] == port and r["kind"] == kind
                and (queue is None or r["queue"] == queue)
                and (direction is None or r["dir"] == direction)
                and (side is None or r["side"] == side)]

    def _context(self, port: str) -> str:
        """What the trace holds for `port`, to show beside a failed number."""
        kinds = Counter(r["kind"] for r in self.trace.records if r["port"] == port)
        if not kinds:
            ports = sorted({r["port"] for r in self.trace.records})
            return f"the trace has no records of port {port!r} (ports: {', '.join(ports) or 'none'})"
        rows = [row for row in summarize(self.trace.records) if row.port == port]
        queues = "; ".join(f"q{'*' if r.queue is None else r.queue} {r.dir or '-'} ({r.side}): "
                           f"{r.chains} chains, longest {r.longest_chain}, {r.calls} calls, "
                           f"{sum(r.calls_suppressed.values())} suppressed, {sum(r.drops.values())} drops"
                           for r in rows)
        return (f"port {port!r} records: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
                + (f"; {queues}" if queues else ""))

    # -- counts --------------------------------------------------------------

    def rx_buffers_posted(self, port: str, side: str | None = None) -> int:
        """Receive buffers the driver made available, as far as the trace shows:
        the chains on receive queues or, if larger, the highest avail index
        seen there (virtio's avail index starts at 0 when the driver sets the
        ring up and counts every buffer it adds, so it is a lower bound even
        when the trace starts late; a device pops a receive buffer only when
        a frame arrives, but sees the index as soon as the driver posts)."""
        posted: dict[str, int] = {}                          # per side: the sides see the same buffers
        for r in self._select(port, "chain", direction="rx", side=side):
            posted[r["side"]] = posted.get(r["side"], 0) + 1
        highest: dict[tuple, int] = {}
        wraps: dict[tuple, int] = {}
        for r in self._select(port, "avail_idx", direction="rx", side=side):
            key = (r["side"], r["queue"])
            if r["old"] is not None and r["new"] < r["old"]:
                wraps[key] = wraps.get(key, 0) + 1          # the 16-bit index wrapped
            highest[key] = max(highest.get(key, 0), wraps.get(key, 0) * 0x10000 + r["new"])
        by_index: dict[str, int] = {}
        for (s, _), value in highest.items():
            by_index[s] = by_index.get(s, 0) + value
        return max([max(posted.get(s, 0), by_index.get(s, 0)) for s in posted.keys() | by_index.keys()],
                   default=0)

    def longest_chain(self, port: str, queue: int | None = None, side: str | None = None) -> int:
        """Descriptors in the longest chain (0 if none)."""
        return max((len(r["descs"]) for r in self._select(port, "chain", queue=queue, side=side)), default=0)

    def chains(self, port: str, queue: int | None = None, side: str | None = None) -> int:
        return len(self._select(port, "chain", queue=queue, side=side))

    def calls(self, port: str, queue: int | None = None) -> int:
        return len(self._select(port, "call", queue=queue))

    def calls_suppressed(self, port: str, reason: str | None = None, queue: int | None = None) -> int:
        return sum(1 for r in self._select(port, "call_suppressed", queue=queue)
                   if reason is None or r["reason"] == reason)

    def drops(self, port: str, reason: str | None = None) -> int:
        return sum(1 for r in self._select(port, "drop") if reason is None or r["reason"] == reason)

    # -- assertions (explicit raises, not `assert`: python -O must not silence them)

    def assert_rx_buffers_posted(self, port: str, at_least: int, side: str | None = None) -> None:
        got = self.rx_buffers_posted(port, side)
        if got < at_least:
            raise AssertionError(f"expected port {port!r} to have posted at least {at_least} RX buffers, "
                                 f"the trace shows {got}; {self._context(port)}")

    def assert_longest_chain(self, port: str, at_most: int, queue: int | None = None) -> None:
        got = self.longest_chain(port, queue)
        where = f"port {port!r}" + (f" queue {queue}" if queue is not None else "")
        if got > at_most:
            raise AssertionError(f"expected no chain longer than {at_most} descriptors on {where}, "
                                 f"the longest has {got}; {self._context(port)}")

    def assert_calls_suppressed(self, port: str, reason: str | None = None, at_least: int = 1) -> None:
        got = self.calls_suppressed(port, reason)
        why = f" ({reason})" if reason else ""
        if got < at_least:
            raise AssertionError(f"expected at least {at_least} suppressed calls{why} on port {port!r}, "
                                 f"the trace shows {got}; {self._context(port)}")

    def assert_no_drops(self, port: str) -> None:
        drops = Counter(r["reason"] for r in self._select(port, "drop"))
        if drops:
            raise AssertionError(f"expected no drops on port {port!r}, the trace shows "
                                 + ", ".join(f"{reason} {n}" for reason, n in drops.most_common())
                                 + f"; {self._context(port)}")
