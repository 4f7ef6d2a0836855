"""Which records to look at: by port, side, queue, event kind and time range."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from nicdev.virtio.trace import KINDS


@dataclass(frozen=True)
class TraceFilter:
    """Empty sets mean "any". `since`/`until` are seconds after the trace
    start, both inclusive; None leaves that end open."""

    ports: frozenset[str] = frozenset()
    sides: frozenset[str] = frozenset()
    queues: frozenset[int] = frozenset()
    kinds: frozenset[str] = frozenset()
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown event kind {unknown[0]!r} (kinds: {', '.join(KINDS)})")
        if self.since is not None and self.until is not None and self.until < self.since:
            raise ValueError(f"the time range ends ({self.until:g} s) before it starts ({self.since:g} s)")

    def matches(self, record: dict, start: float) -> bool:
        if self.ports and record["port"] not in self.ports:
            return False
        if self.sides and record["side"] not in self.sides:
            return False
        if self.queues and record["queue"] not in self.queues:
            return False
        if self.kinds and record["kind"] not in self.kinds:
            return False
        offset = record["t"] - start
        if self.since is not None and offset < self.since:
            return False
        return self.until is None or offset <= self.until

    def apply(self, records: Iterable[dict], start: float) -> Iterator[dict]:
        return (r for r in records if self.matches(r, start))
