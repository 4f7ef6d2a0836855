"""Ring occupancy: how many chains of a queue are in flight, over time.

In flight means popped from the avail ring but not yet pushed to the used
ring (device side), or added by the driver and not yet reaped (driver side).
Heads are tracked, not just counted, so a trace switched on while chains were
already out (a `used` for a head it never saw popped) does not go negative.
A ring stopped or reset forgets what it had in flight, as the device does.
"""
from __future__ import annotations

from typing import Iterable, Iterator

FORGETTING_STATES = ("stop", "reset")

QueueKey = tuple[str, str, int]          # (port, side, queue)


def queue_key(record: dict) -> QueueKey:
    return record["port"], record["side"], record["queue"]


def forgets(record: dict) -> bool:
    """A ring stopped or reset: its chains in flight are gone. With a null
    queue (the front-end went away) this holds for every ring of the port."""
    return record["kind"] == "ring" and record["state"] in FORGETTING_STATES


class Occupancy:
    """The in-flight chains of one queue; `mean` is weighted by time."""

    def __init__(self) -> None:
        self.in_flight: set[int] = set()
        self.max = 0
        self._area = 0.0                # integral of the level over time
        self._first: float | None = None
        self._last: float | None = None

    @property
    def level(self) -> int:
        return len(self.in_flight)

    def advance(self, t: float) -> None:
        """Let time pass up to `t` at the current level (the end of the trace, say)."""
        if self._first is None:
            self._first = self._last = t
        # Records of two writers may be a little out of order: never integrate backwards.
        if t > self._last:
            self._area += self.level * (t - self._last)
            self._last = t

    def update(self, record: dict) -> bool:
        """Account for one record of this queue; True if the level changed."""
        self.advance(record["t"])
        before = self.level
        kind = record["kind"]
        if kind == "chain":
            self.in_flight.add(record["head"])
            self.max = max(self.max, self.level)
        elif kind == "used":
            self.in_flight.discard(record["id"])
        elif forgets(record):
            self.in_flight.clear()
        return self.level != before

    @property
    def mean(self) -> float:
        if self._first is None:
            return 0.0
        span = self._last - self._first
        return self._area / span if span > 0 else float(self.level)


def occupancy_steps(records: Iterable[dict]) -> Iterator[tuple[QueueKey, float, int]]:
    """(queue, time, new level) each time a queue's occupancy changes."""
    queues: dict[QueueKey, Occupancy] = {}
    for record in records:
        if record["queue"] is not None:
            targets = [queue_key(record)]
            queues.setdefault(targets[0], Occupancy())
        elif forgets(record):
            targets = [k for k in queues if k[:2] == (record["port"], record["side"])]
        else:
            continue
        for key in targets:
            if queues[key].update(record):
                yield key, record["t"], queues[key].level
