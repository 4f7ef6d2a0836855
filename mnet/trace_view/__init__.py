"""Reading a ring trace (docs/tracing.md): filters, one text line per record,
the per-queue summary, the time series behind the plot, and assertions for
driver tests. Everything here works on records (dicts) and does no I/O except
`load`, so the same code serves a trace file, a live buffer and a test's list.
Rendering the plot (matplotlib) lives in `plot`, imported only by who draws.
"""
from __future__ import annotations

from .assertions import TraceAssertions
from .filter import TraceFilter
from .load import Trace, load_trace
from .summary import QueueSummary, summarize
from .text import format_record

__all__ = ["Trace", "load_trace", "TraceFilter", "format_record", "QueueSummary", "summarize",
           "TraceAssertions"]
