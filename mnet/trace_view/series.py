"""The time series `mnet trace plot` draws, computed without drawing: each
queue's occupancy as steps and its event rates in equal time bins."""
from __future__ import annotations

from dataclasses import dataclass, field

from .load import Trace
from .occupancy import QueueKey, occupancy_steps, queue_key

RATE_KINDS = ("chain", "kick", "call")


@dataclass
class QueueSeries:
    key: QueueKey
    dir: str | None = None
    # Occupancy as steps: the level holds from times[i] until times[i + 1].
    times: list[float] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    # kind -> events per second in each bin.
    rates: dict[str, list[float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        port, side, queue = self.key
        return f"{port}{' drv' if side == 'driver' else ''} q{queue}{' ' + self.dir if self.dir else ''}"


@dataclass
class PlotSeries:
    duration: float
    bin_width: float
    bin_edges: list[float]          # bins + 1 edges: bin i spans edges[i] to edges[i + 1]
    queues: list[QueueSeries]


def plot_series(trace: Trace, bins: int = 100) -> PlotSeries:
    """Times are seconds after the trace start; a trace shorter than a
    microsecond gets one bin of a second, so rates stay finite."""
    if bins < 1:
        raise ValueError("a plot needs at least one time bin")
    duration = max(trace.end - trace.start, 0.0)
    bins = bins if duration > 1e-6 else 1
    width = duration / bins if duration > 1e-6 else 1.0
    queues: dict[QueueKey, QueueSeries] = {}
    for r in trace.records:
        if r["queue"] is None:
            continue
        series = queues.get(queue_key(r))
        if series is None:
            series = queues[queue_key(r)] = QueueSeries(queue_key(r), r["dir"])
            series.times.append(r["t"] - trace.start)
            series.levels.append(0)
            series.rates = {kind: [0.0] * bins for kind in RATE_KINDS}
        if r["kind"] in RATE_KINDS:
            index = min(int((r["t"] - trace.start) / width), bins - 1)
            series.rates[r["kind"]][max(index, 0)] += 1.0 / width
    for key, t, level in occupancy_steps(trace.records):
        queues[key].times.append(t - trace.start)
        queues[key].levels.append(level)
    for series in queues.values():
        series.times.append(duration)         # the last level holds to the end
        series.levels.append(series.levels[-1])
    ordered = [queues[k] for k in sorted(queues)]
    return PlotSeries(duration, width, [i * width for i in range(bins + 1)], ordered)
