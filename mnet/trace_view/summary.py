"""The per-queue summary of a trace: what each queue carried and how the two
sides of its ring notified each other. docs/tracing.md explains each figure."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from .occupancy import Occupancy, forgets, queue_key


@dataclass
class QueueSummary:
    """One queue of one port as one side saw it. `queue` None collects the
    drops a port recorded without a queue (e.g. a frame for a port whose
    guest has no ring yet)."""

    port: str
    side: str
    queue: int | None
    dir: str | None = None
    chains: int = 0
    chain_bytes: int = 0               # sum of the chains' descriptor lengths
    descriptors: int = 0
    longest_chain: int = 0             # descriptors in the longest chain
    used: int = 0
    used_bytes: int = 0                # sum of the used entries' written lengths
    kicks: int = 0
    kicks_suppressed: Counter = field(default_factory=Counter)
    calls: int = 0
    calls_suppressed: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)
    occupancy: Occupancy = field(default_factory=Occupancy, repr=False)

    @property
    def bytes(self) -> int:
        """Bytes the queue moved, virtio-net header included: what the driver
        gave to send on a transmit queue, what the device wrote on a receive queue."""
        return self.used_bytes if self.dir == "rx" else self.chain_bytes

    @property
    def descs_per_chain(self) -> float | None:
        return self.descriptors / self.chains if self.chains else None

    @property
    def kicks_per_frame(self) -> float | None:
        """Kicks for each chain (a frame on a transmit queue, a buffer on a receive queue)."""
        return self.kicks / self.chains if self.chains else None

    def to_dict(self) -> dict:
        return {
            "port": self.port, "side": self.side, "queue": self.queue, "dir": self.dir,
            "chains": self.chains, "bytes": self.bytes, "chain_bytes": self.chain_bytes,
            "used": self.used, "used_bytes": self.used_bytes,
            "descriptors": self.descriptors, "descs_per_chain": self.descs_per_chain,
            "longest_chain": self.longest_chain,
            "occupancy_mean": self.occupancy.mean, "occupancy_max": self.occupancy.max,
            "kicks": self.kicks, "kicks_per_frame": self.kicks_per_frame,
            "kicks_suppressed": dict(self.kicks_suppressed),
            "calls": self.calls, "calls_suppressed": dict(self.calls_suppressed),
            "drops": dict(self.drops),
        }

    def add(self, r: dict) -> None:
        if self.dir is None:
            self.dir = r["dir"]
        kind = r["kind"]
        if kind == "chain":
            self.chains += 1
            self.chain_bytes += r["bytes"]
            self.descriptors += len(r["descs"])
            self.longest_chain = max(self.longest_chain, len(r["descs"]))
        elif kind == "used":
            self.used += 1
            self.used_bytes += r["len"]
        elif kind == "kick":
            self.kicks += 1
        elif kind == "kick_suppressed":
            self.kicks_suppressed[r["reason"]] += 1
        elif kind == "call":
            self.calls += 1
        elif kind == "call_suppressed":
            self.calls_suppressed[r["reason"]] += 1
        elif kind == "drop":
            self.drops[r["reason"]] += 1
        self.occupancy.update(r)


def summarize(records: Iterable[dict], end: float | None = None) -> list[QueueSummary]:
    """One QueueSummary per (port, side, queue), sorted; occupancy is averaged
    up to `end` (the trace's end) or each queue's last record."""
    rows: dict[tuple, QueueSummary] = {}
    for r in records:
        if r["queue"] is None and forgets(r):
            for row in rows.values():
                if (row.port, row.side) == (r["port"], r["side"]) and row.queue is not None:
                    row.occupancy.update(r)
        if r["queue"] is None and r["kind"] != "drop":
            continue
        key = queue_key(r)
        row = rows.get(key)
        if row is None:
            row = rows[key] = QueueSummary(*key)
        row.add(r)
    if end is not None:
        for row in rows.values():
            row.occupancy.advance(end)
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2]))]
