"""The summary as a text table, the way `mnet trace summary` prints it."""
from __future__ import annotations

from collections import Counter

from .summary import QueueSummary

COLUMNS = ("port", "side", "q", "dir", "chains", "bytes", "desc/chain", "occ mean", "occ max",
           "kicks", "kicks/frame", "kicks supp", "calls", "calls supp", "drops")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _by_reason(counts: Counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def _cells(row: QueueSummary) -> tuple[str, ...]:
    return (row.port, row.side, "*" if row.queue is None else str(row.queue), row.dir or "-",
            str(row.chains), str(row.bytes), _ratio(row.descs_per_chain),
            f"{row.occupancy.mean:.2f}", str(row.occupancy.max),
            str(row.kicks), _ratio(row.kicks_per_frame), str(sum(row.kicks_suppressed.values())),
            str(row.calls), str(sum(row.calls_suppressed.values())), str(sum(row.drops.values())))


def format_table(rows: list[QueueSummary]) -> str:
    """The table, then the suppressed notifications and drops by reason."""
    if not rows:
        return "no queue events in this trace"
    table = [COLUMNS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             .rstrip() for line in table]
    details = []
    for row in rows:
        name = f"{row.port} {row.side} q{'*' if row.queue is None else row.queue}"
        for label, counts in (("kicks suppressed", row.kicks_suppressed),
                              ("calls suppressed", row.calls_suppressed), ("drops", row.drops)):
            if counts:
                details.append(f"{name} {label}: {_by_reason(counts)}")
    return "\n".join(lines + ([""] + details if details else []))
