"""Ring tracing: the event record, where records go, and the JSON lines file.

One `Tracer` belongs to one traced thing: a switch port's device (side
"device") or the stack's virtio driver (side "driver"). Code on a data path
keeps its tracer and tests one plain attribute per burst (`tracer.on` for
ring events, `tracer.frames_on` for frames), so tracing off costs one
attribute test. Records are dicts with the common fields of `COMMON` and the
fields `KINDS` lists for their kind; docs/tracing.md documents each one.

Sinks are plain callables, so a record can go to several places at once: a
`JsonLinesWriter` (the `--trace FILE` file), a `TraceBuffer` (the bounded
in-memory buffer a live viewer reads), a test's list.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Callable, Iterator, Sequence

__all__ = [
    "SCHEMA_VERSION", "COMMON", "KINDS", "DEVICE", "DRIVER", "DIRECTIONS",
    "Tracer", "TraceBuffer", "JsonLinesWriter", "TraceFormatError",
    "validate_record", "read_trace", "header_record",
]

SCHEMA_VERSION = 1
DEVICE, DRIVER = "device", "driver"
DIRECTIONS = ("rx", "tx", None)

# Fields every ring record has, in the order they are written.
COMMON = ("t", "port", "side", "queue", "dir", "kind")

# kind -> the fields it carries beyond COMMON. docs/tracing.md says what each
# means on the device side and on the driver side.
KINDS: dict[str, tuple[str, ...]] = {
    "chain": ("head", "descs", "indirect", "bytes"),   # popped (device) / added (driver)
    "used": ("id", "len"),                             # pushed (device) / reaped (driver)
    "avail_idx": ("old", "new"),
    "used_idx": ("old", "new"),
    "kick": (),                                        # received (device) / sent (driver)
    "kick_suppressed": ("reason",),
    "call": (),                                        # sent (device) / received (driver)
    "call_suppressed": ("reason",),
    "features": ("value", "protocol"),
    "vhost_msg": ("request", "size", "fds"),
    "ring": ("state",),
    "drop": ("reason", "len"),
    "link": ("up",),
    "fault": ("mode",),
    "trace": ("state",),
}

Sink = Callable[[dict], None]
FrameSink = Callable[[str, float, int, str, int, bytes], None]


class TraceFormatError(ValueError):
    """A trace record or file that does not follow the schema."""


class Tracer:
    """The trace of one port or driver: stamps records and hands them to sinks."""

    def __init__(self, port: str, side: str, clock: Callable[[], float] = time.monotonic) -> None:
        if side not in (DEVICE, DRIVER):
            raise ValueError(f"tracer side must be {DEVICE!r} or {DRIVER!r}, not {side!r}")
        self.port = port
        self.side = side
        self._clock = clock
        self._sinks: list[Sink] = []
        self._frame_sinks: list[FrameSink] = []
        # Plain attributes, read on the data path: no property call when off.
        self.on = False
        self.frames_on = False

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)
        self.on = True

    def remove_sink(self, sink: Sink) -> None:
        self._sinks.remove(sink)
        self.on = bool(self._sinks)

    def add_frame_sink(self, sink: FrameSink) -> None:
        self._frame_sinks.append(sink)
        self.frames_on = True

    def remove_frame_sink(self, sink: FrameSink) -> None:
        self._frame_sinks.remove(sink)
        self.frames_on = bool(self._frame_sinks)

    def emit(self, kind: str, queue: int | None = None, direction: str | None = None, **fields) -> None:
        """One ring event. Callers test `on` first on hot paths; this checks it too."""
        if not self.on:
            return
        record = {"t": self._clock(), "port": self.port, "side": self.side,
                  "queue": queue, "dir": direction, "kind": kind}
        record.update(fields)
        for sink in self._sinks:
            sink(record)

    def frame(self, queue: int, direction: str, head: int, data: bytes) -> None:
        """A frame as it left (tx) or entered (rx) the ring, with its chain's head."""
        if not self.frames_on:
            return
        now = self._clock()
        for sink in self._frame_sinks:
            sink(self.port, now, queue, direction, head, data)


def validate_record(record: object) -> dict:
    """Check a record against the schema; return it, or raise TraceFormatError."""
    if not isinstance(record, dict):
        raise TraceFormatError(f"a record is a JSON object, not {type(record).__name__}")
    kind = record.get("kind")
    if kind == "header":
        if record.get("version") != SCHEMA_VERSION:
            raise TraceFormatError(f"trace schema version {record.get('version')!r}, expected {SCHEMA_VERSION}")
        return record
    if kind not in KINDS:
        raise TraceFormatError(f"unknown event kind {kind!r}")
    missing = [f for f in COMMON + KINDS[kind] if f not in record]
    if missing:
        raise TraceFormatError(f"{kind} record lacks {', '.join(missing)}")
    if not isinstance(record["t"], (int, float)):
        raise TraceFormatError(f"t must be a number, not {record['t']!r}")
    if record["side"] not in (DEVICE, DRIVER):
        raise TraceFormatError(f"side must be device or driver, not {record['side']!r}")
    if record["dir"] not in DIRECTIONS:
        raise TraceFormatError(f"dir must be rx, tx or null, not {record['dir']!r}")
    if record["queue"] is not None and not isinstance(record["queue"], int):
        raise TraceFormatError(f"queue must be an integer or null, not {record['queue']!r}")
    return record


def header_record(clock: Callable[[], float] = time.monotonic) -> dict:
    """The first line of a trace file: the schema version and how to map `t` to wall time."""
    return {"kind": "header", "format": "mnet-trace", "version": SCHEMA_VERSION,
            "t": clock(), "wall": time.time()}


class TraceBuffer:
    """The newest `capacity` records, numbered, for a live viewer that reads
    what it has not seen yet. Older records are overwritten and counted."""

    def __init__(self, capacity: int = 65536) -> None:
        if capacity < 1:
            raise ValueError("a trace buffer holds at least one record")
        self._records: deque[dict] = deque(maxlen=capacity)
        self._next = 0              # the number the next record gets
        self._lock = threading.Lock()

    def __call__(self, record: dict) -> None:
        with self._lock:
            self._records.append(record)
            self._next += 1

    def since(self, index: int) -> tuple[list[dict], int, int]:
        """Records numbered `index` and later: (records, next index, records lost
        because they were overwritten before this read)."""
        with self._lock:
            oldest = self._next - len(self._records)
            start = max(index, oldest)
            lost = start - index if index < oldest else 0
            records = list(self._records)[start - oldest:] if start < self._next else []
            return records, self._next, lost


class JsonLinesWriter:
    """The trace file: a header line, then one JSON object per record.

    Safe to share between threads (the switch's loop and a stack's thread);
    flushed at least every `flush_interval` seconds so a reader of a running
    trace sees recent events."""

    def __init__(self, path: str, flush_interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            self._file = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write trace file {path}: {exc.strerror}") from None
        self.path = path
        self._lock = threading.Lock()
        self._flush_interval = flush_interval
        self._clock = clock
        self._last_flush = clock()
        self.records = 0
        self._write(header_record(clock))

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")))
        self._file.write("\n")

    def __call__(self, record: dict) -> None:
        with self._lock:
            if self._file.closed:
                return
            self._write(record)
            self.records += 1
            now = self._clock()
            if now - self._last_flush >= self._flush_interval:
                self._file.flush()
                self._last_flush = now

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def read_trace(path: str, *, kinds: Sequence[str] | None = None) -> Iterator[dict]:
    """The records of a trace file, header first, each checked against the
    schema; a bad line raises TraceFormatError naming the file and line. A
    last line cut short (a trace still being written) is ignored."""
    wanted = set(kinds) if kinds is not None else None
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace file {path}: {exc.strerror}") from None
    with handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("\n"):
                return
            raise TraceFormatError(f"{path}:{number}: not JSON ({exc.msg})") from None
        try:
            validate_record(record)
        except TraceFormatError as exc:
            raise TraceFormatError(f"{path}:{number}: {exc}") from None
        if number == 1 and record.get("kind") != "header":
            raise TraceFormatError(f"{path}:1: a trace file starts with its header line")
        if wanted is None or record["kind"] in wanted:
            yield record
