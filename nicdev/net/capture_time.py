"""Timestamps and flushing for capture files (pcap and pcapng).

Capture files carry wall-clock timestamps, but the data path stamps events
with the monotonic clock (a trace record's `t`). `CaptureClock` pins the two
together once, when the capture starts, and maps monotonic times to Unix
nanoseconds from there: packets keep their order and spacing even if the
wall clock is stepped while a capture runs, and a packet's time matches its
ring event's `t` in the trace file exactly.
"""
from __future__ import annotations

import time
from typing import Callable

__all__ = ["CaptureClock", "FLUSH_INTERVAL"]

# Capture writers flush at least this often, so that `tcpdump -r` or
# `tshark -r` on a running capture sees recent frames.
FLUSH_INTERVAL = 1.0


class CaptureClock:
    """Monotonic seconds to Unix nanoseconds, pinned at construction."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._wall0_ns = wall_ns()

    def wall_ns(self, t: float) -> int:
        """The Unix time in nanoseconds of monotonic time `t`."""
        return self._wall0_ns + round((t - self._t0) * 1e9)

    def now_ns(self) -> int:
        """The Unix time in nanoseconds now, on this clock."""
        return self.wall_ns(self._monotonic())
