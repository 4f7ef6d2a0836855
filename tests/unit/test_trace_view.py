"""The sans-IO trace analysis (mnet.trace_view): filters, the text line,
the per-queue summary and the plot's time series, on hand-built records."""
from __future__ import annotations

import pytest

from mnet.trace_view import Trace, TraceFilter, format_record, summarize
from mnet.trace_view.occupancy import Occupancy
from mnet.trace_view.series import plot_series
from mnet.trace_view.table import format_table
from nicdev.virtio.trace import validate_record


def rec(t, kind, queue=1, direction="tx", port="a", side="device", **fields):
    """A schema-valid record (checked, so the tests cannot drift from the schema)."""
    if queue is None:
        direction = None
    return validate_record({"t": t, "port": port, "side": side, "queue": queue, "dir": direction,
                            "kind": kind, **fields})


def chain(t, head, descs=((0x1000, 1514, 0),), queue=1, direction="tx", **kw):
    descs = [list(d) for d in descs]
    return rec(t, "chain", queue, direction, head=head, descs=descs, indirect=False,
               bytes=sum(d[1] for d in descs), **kw)


def used(t, head, length=0, queue=1, direction="tx", **kw):
    return rec(t, "used", queue, direction, id=head, len=length, **kw)


# -- the text line -------------------------------------------------------------

def test_chain_line_shows_time_port_queue_and_each_descriptor():
    r = chain(10.001234, 17, descs=[(0x7F00001000, 12, 1), (0x7F00002000, 1502, 0)])
    assert format_record(r, start=10.0) == (
        "+0.001234 a q1 tx chain head=17 descs=2 bytes=1514 [0x7f00001000:12 N, 0x7f00002000:1502]")


def test_lines_for_other_kinds_and_the_driver_side():
    assert format_record(used(1.5, 3, 1526, queue=0, direction="rx"), 1.0) == "+0.500000 a q0 rx used id=3 len=1526"
    assert format_record(rec(2, "call_suppressed", reason="event_idx"), 2) == \
        "+0.000000 a q1 tx call_suppressed reason=event_idx"
    assert format_record(rec(2, "kick", side="driver", port="nic0"), 2) == "+0.000000 nic0 drv q1 tx kick"
    assert format_record(rec(2, "avail_idx", old=5, new=9), 2).endswith("avail_idx 5 -> 9")
    assert format_record(rec(3, "features", None, value=0x130AFFFA7, protocol=False), 2) == \
        "+1.000000 a * features value=0x130afffa7"
    assert format_record(rec(3, "link", None, up=False), 3).endswith("* link down")
    assert format_record(rec(3, "fault", None, mode=None), 3).endswith("fault mode=none (cleared)")
    indirect = rec(4, "chain", head=2, descs=[[0x2000, 16, 4]], indirect=True, bytes=16)
    assert "descs=1 bytes=16 indirect [0x2000:16 I]" in format_record(indirect, 4)


def test_fields_beyond_the_schema_are_shown_not_hidden():
    r = rec(1, "drop", None, reason="no_rx_buffer", len=60, note="x")
    assert format_record(r, 1) == "+0.000000 a * drop reason=no_rx_buffer len=60 note=x"


# -- filters -----------------------------------------------------------------

def test_filter_by_port_queue_kind_side_and_time_relative_to_start():
    records = [chain(100.0, 0), used(100.5, 0), chain(101.0, 1, queue=0, direction="rx"),
               rec(102.0, "kick", port="b"), rec(103.0, "call", side="driver", port="nic0")]
    def pick(**kw):
        return [(r["t"], r["kind"]) for r in TraceFilter(**kw).apply(records, start=100.0)]

    assert pick(ports=frozenset({"b"})) == [(102.0, "kick")]
    assert pick(queues=frozenset({0})) == [(101.0, "chain")]
    assert pick(kinds=frozenset({"used", "kick"})) == [(100.5, "used"), (102.0, "kick")]
    assert pick(sides=frozenset({"driver"})) == [(103.0, "call")]
    assert pick(since=0.5, until=2.0) == [(100.5, "used"), (101.0, "chain"), (102.0, "kick")]
    assert pick(ports=frozenset({"a"}), until=0.9) == [(100.0, "chain"), (100.5, "used")]


def test_filter_rejects_unknown_kind_and_backwards_range():
    with pytest.raises(ValueError, match="unknown event kind 'bogus'"):
        TraceFilter(kinds=frozenset({"bogus"}))
    with pytest.raises(ValueError, match="ends"):
        TraceFilter(since=2, until=1)


# -- occupancy -----------------------------------------------------------------

def test_occupancy_mean_is_weighted_by_time_and_max_is_the_peak():
    occ = Occupancy()
    for r in (chain(0, 1), chain(1, 2), used(2, 1), used(4, 2)):
        occ.update(r)
    # level 1 for 1 s, 2 for 1 s, 1 for 2 s over 4 s: (1 + 2 + 2) / 4
    assert occ.mean == pytest.approx(1.25)
    assert (occ.max, occ.level) == (2, 0)


def test_occupancy_ignores_used_for_chains_seen_before_tracing_and_forgets_on_reset():
    occ = Occupancy()
    occ.update(used(0, 9))             # popped before the trace started: not counted, not negative
    assert occ.level == 0
    occ.update(chain(1, 1))
    occ.update(chain(1, 2))
    assert occ.level == 2
    occ.update(rec(2, "ring", state="reset"))
    assert occ.level == 0 and occ.max == 2


# -- the summary ----------------------------------------------------------------

def tx_burst_trace():
    """Port a transmits 4 frames with 2 kicks; the device completes them and
    calls once, suppressing one call under EVENT_IDX. On receive, 3 buffers are
    filled; 2 frames are dropped for want of buffers, 1 for its length."""
    two = [(0x1000, 12, 1), (0x2000, 1502, 0)]
    return [
        rec(0.0, "kick"), chain(0.0, 0, two), chain(0.0, 1, two),
        rec(0.5, "kick"), chain(0.5, 2, two), chain(0.5, 3, [(0x3000, 74, 0)]),
        used(1.0, 0), used(1.0, 1), rec(1.0, "call_suppressed", reason="event_idx"),
        used(2.0, 2), used(2.0, 3), rec(2.0, "call"),
        chain(0.2, 10, [(0x9000, 1526, 2)], queue=0, direction="rx"),
        used(0.2, 10, 60, queue=0, direction="rx"),
        chain(0.3, 11, [(0xA000, 1526, 2)], queue=0, direction="rx"),
        used(0.3, 11, 1526, queue=0, direction="rx"),
        chain(0.4, 12, [(0xB000, 1526, 2)], queue=0, direction="rx"),
        used(0.4, 12, 100, queue=0, direction="rx"), rec(0.4, "call", queue=0, direction="rx"),
        rec(0.6, "drop", queue=0, direction="rx", reason="no_rx_buffer", len=60),
        rec(0.7, "drop", queue=0, direction="rx", reason="no_rx_buffer", len=60),
        rec(0.8, "drop", queue=0, direction="rx", reason="too_long", len=9000),
        rec(0.9, "drop", None, reason="no_ring", len=42),
        rec(0.9, "features", None, value=1, protocol=False),
    ]


def test_summary_counts_chains_bytes_kicks_per_frame_and_calls():
    rows = {(r.port, r.queue): r for r in summarize(sorted(tx_burst_trace(), key=lambda r: r["t"]), end=2.0)}
    tx = rows["a", 1]
    assert (tx.dir, tx.chains, tx.bytes, tx.descriptors, tx.longest_chain) == ("tx", 4, 3 * 1514 + 74, 7, 2)
    assert tx.descs_per_chain == pytest.approx(1.75)
    assert tx.kicks == 2 and tx.kicks_per_frame == pytest.approx(0.5)
    assert tx.calls == 1 and dict(tx.calls_suppressed) == {"event_idx": 1}
    # in flight: 2 during [0, 0.5), 4 during [0.5, 1), 2 during [1, 2): (1 + 2 + 2) / 2 s
    assert tx.occupancy.max == 4
    assert tx.occupancy.mean == pytest.approx(2.5)
    rx = rows["a", 0]
    # on a receive queue the bytes are what the device wrote, not the buffers' size
    assert (rx.dir, rx.chains, rx.bytes, rx.chain_bytes, rx.calls) == ("rx", 3, 60 + 1526 + 100, 3 * 1526, 1)
    assert rx.occupancy.max == 1


def test_summary_counts_drops_by_reason_per_queue_and_without_a_queue():
    rows = {(r.port, r.queue): r for r in summarize(tx_burst_trace())}
    assert dict(rows["a", 0].drops) == {"no_rx_buffer": 2, "too_long": 1}
    assert dict(rows["a", None].drops) == {"no_ring": 1}
    assert not rows["a", 1].drops
    # a port-wide record other than a drop (features) makes no row of its own
    assert sorted(rows, key=str) == [("a", 0), ("a", 1), ("a", None)]


def test_summary_keeps_sides_and_ports_apart():
    records = [chain(0, 1), chain(0, 1, side="driver", port="a"), chain(0, 1, port="b")]
    assert [(r.port, r.side, r.queue, r.chains) for r in summarize(records)] == [
        ("a", "device", 1, 1), ("a", "driver", 1, 1), ("b", "device", 1, 1)]


def test_table_has_a_row_per_queue_and_drops_by_reason():
    text = format_table(summarize(tx_burst_trace(), end=2.0))
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["port", "side", "q", "dir", "chains", "bytes"]
    tx_row = next(line.split() for line in lines if line.startswith("a ") and " tx " in line)
    assert tx_row[:6] == ["a", "device", "1", "tx", "4", str(3 * 1514 + 74)]
    assert "a device q0 drops: no_rx_buffer 2, too_long 1" in lines
    assert "a device q1 calls suppressed: event_idx 1" in lines
    assert format_table([]) == "no queue events in this trace"


def test_summary_to_dict_is_plain_json_data():
    import json

    row = summarize(tx_burst_trace(), end=2.0)[1]
    data = json.loads(json.dumps(row.to_dict()))
    assert data["queue"] == 0 and data["drops"] == {"no_rx_buffer": 2, "too_long": 1}
    assert data["bytes"] == 60 + 1526 + 100


# -- the plot's series --------------------------------------------------------------

def test_plot_series_steps_and_rates_relative_to_start():
    trace = Trace.from_records([{"kind": "header", "version": 1, "t": 10.0},
                                chain(10.0, 1), chain(11.0, 2), used(12.0, 1), used(14.0, 2),
                                rec(10.0, "kick"), rec(13.9, "call")])
    data = plot_series(trace, bins=4)
    assert data.duration == 4.0 and data.bin_width == 1.0 and data.bin_edges == [0, 1, 2, 3, 4]
    (q,) = data.queues
    assert q.label == "a q1 tx"
    assert list(zip(q.times, q.levels)) == [(0, 0), (0, 1), (1, 2), (2, 1), (4, 0), (4, 0)]
    assert q.rates["chain"] == [1, 1, 0, 0]
    assert q.rates["kick"] == [1, 0, 0, 0] and q.rates["call"] == [0, 0, 0, 1]


def test_plot_series_of_an_instant_trace_has_one_finite_bin():
    data = plot_series(Trace.from_records([chain(5.0, 1)]), bins=50)
    assert data.bin_edges == [0.0, 1.0] and data.queues[0].rates["chain"] == [1.0]


def test_a_reset_of_the_whole_device_empties_every_queue_of_that_port():
    records = [chain(0, 1), chain(0, 2, queue=0, direction="rx"), chain(0, 3, port="b"),
               rec(1, "ring", None, state="reset")]
    rows = {(r.port, r.queue): r for r in summarize(records, end=2)}
    assert (rows["a", 1].occupancy.level, rows["a", 0].occupancy.level, rows["b", 1].occupancy.level) == (0, 0, 1)
    assert rows["a", 1].occupancy.mean == pytest.approx(0.5)
    trace = Trace.from_records([{"kind": "header", "version": 1, "t": 0.0}] + records)
    levels = {q.label: q.levels for q in plot_series(trace, bins=2).queues}
    assert levels == {"a q0 rx": [0, 1, 0, 0], "a q1 tx": [0, 1, 0, 0], "b q1 tx": [0, 1, 1]}


def test_an_index_first_seen_shows_its_old_value_as_unknown():
    assert format_record(rec(1, "avail_idx", 0, "rx", old=None, new=1024), 1).endswith("avail_idx ? -> 1024")
