"""Drawing the plot of a trace with matplotlib (Agg, no display needed):
ring occupancy per queue, chains per second, kicks and calls per second."""
from __future__ import annotations

import os

from .load import Trace
from .series import plot_series

FORMATS = ("svg", "png")


def plot_format(path: str) -> str:
    """The image format a file name asks for; ValueError for other names."""
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the image format of {path!r}: name it .svg or .png")
    return ext


def write_plot(trace: Trace, path: str, bins: int = 100) -> None:
    """Write the plot to `path` (.svg or .png). OSError if it cannot be written."""
    fmt = plot_format(path)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_series(trace, bins)
    # Text stays text in the SVG: searchable, and a test can read the labels.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig, (occ, chains, notes) = plt.subplots(3, 1, sharex=True, figsize=(12, 8), layout="constrained")
        try:
            fig.suptitle(f"ring trace {os.path.basename(trace.source)}: "
                         f"{len(trace.records)} records, {data.duration:.3f} s")
            for q in data.queues:
                line, = occ.step(q.times, q.levels, where="post", label=q.label)
                colour = line.get_color()
                chains.stairs(q.rates["chain"], data.bin_edges, color=colour, label=q.label)
                notes.stairs(q.rates["kick"], data.bin_edges, color=colour, label=f"{q.label} kicks")
                notes.stairs(q.rates["call"], data.bin_edges, color=colour, linestyle="--",
                             label=f"{q.label} calls")
            occ.set_ylabel("chains in flight")
            chains.set_ylabel("chains / s")
            notes.set_ylabel("kicks, calls (--) / s")
            notes.set_xlabel(f"seconds after trace start (bins of {data.bin_width * 1e3:.3g} ms)")
            for axes in (occ, chains, notes):
                axes.grid(True, alpha=0.3)
                if data.queues:
                    # Beside the axes, not on them: traffic often peaks at the right end.
                    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
            fig.savefig(path, format=fmt)
        finally:
            plt.close(fig)
