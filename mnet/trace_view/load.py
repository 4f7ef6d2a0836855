"""A trace file in memory: its header and its records, checked on the way in."""
from __future__ import annotations

from dataclasses import dataclass, field

from nicdev.virtio.trace import TraceFormatError, read_trace


@dataclass
class Trace:
    """The records of one trace and the moment it started (`t` of the header,
    or of the first record for records that came without a header)."""

    records: list[dict]
    start: float
    header: dict | None = None
    source: str = field(default="records")

    @classmethod
    def from_records(cls, records: list[dict], source: str = "records") -> "Trace":
        body = [r for r in records if r.get("kind") != "header"]
        header = next((r for r in records if r.get("kind") == "header"), None)
        start = header["t"] if header else (body[0]["t"] if body else 0.0)
        return cls(body, start, header, source)

    @property
    def end(self) -> float:
        # Two threads (the switch's loop, a stack) may write a file slightly out of order.
        return max((r["t"] for r in self.records), default=self.start)


def load_trace(path: str) -> Trace:
    """Read a whole trace file; TraceFormatError (naming file:line) if it is not one."""
    records = list(read_trace(path))
    if not records:
        raise TraceFormatError(f"{path}: empty (a trace file starts with its header line)")
    return Trace.from_records(records, source=path)
