"""The trace record, its sinks and the JSON lines file (nicdev.virtio.trace)."""
from __future__ import annotations

import json

import pytest

from nicdev.virtio.trace import (
    KINDS, JsonLinesWriter, TraceBuffer, TraceFormatError, Tracer, read_trace, validate_record,
)


def clock_from(values):
    it = iter(values)
    return lambda: next(it)


def test_off_tracer_calls_no_sink_and_on_follows_sinks():
    tracer = Tracer("a", "device")
    assert (tracer.on, tracer.frames_on) == (False, False)
    tracer.emit("kick", 1, "tx")            # no sink: nothing happens, no error
    got = []
    tracer.add_sink(got.append)
    assert tracer.on
    tracer.emit("kick", 1, "tx")
    tracer.remove_sink(got.append)
    assert not tracer.on
    tracer.emit("kick", 1, "tx")
    assert [r["kind"] for r in got] == ["kick"]


def test_record_has_common_fields_and_validates():
    tracer = Tracer("vm1", "driver", clock=lambda: 12.5)
    got = []
    tracer.add_sink(got.append)
    tracer.emit("used", 0, "rx", id=3, len=1514)
    assert got == [{"t": 12.5, "port": "vm1", "side": "driver", "queue": 0, "dir": "rx",
                    "kind": "used", "id": 3, "len": 1514}]
    assert validate_record(got[0]) is got[0]


def test_frames_go_to_frame_sinks_with_head():
    tracer = Tracer("a", "device", clock=lambda: 1.0)
    frames = []
    tracer.add_frame_sink(lambda *args: frames.append(args))
    assert tracer.frames_on and not tracer.on
    tracer.frame(1, "tx", 7, b"\x01\x02")
    assert frames == [("a", 1.0, 1, "tx", 7, b"\x01\x02")]


@pytest.mark.parametrize("record, why", [
    ([], "JSON object"),
    ({"kind": "nope"}, "unknown event kind"),
    ({"kind": "used", "t": 1.0, "port": "a", "side": "device", "queue": 0, "dir": "rx", "id": 1}, "lacks len"),
    ({"kind": "kick", "t": "x", "port": "a", "side": "device", "queue": 0, "dir": "rx"}, "t must be"),
    ({"kind": "kick", "t": 1, "port": "a", "side": "guest", "queue": 0, "dir": "rx"}, "side must be"),
    ({"kind": "kick", "t": 1, "port": "a", "side": "device", "queue": 0, "dir": "up"}, "dir must be"),
    ({"kind": "kick", "t": 1, "port": "a", "side": "device", "queue": "0", "dir": "rx"}, "queue must be"),
    ({"kind": "header", "version": 99}, "version"),
])
def test_bad_records_are_refused_with_the_reason(record, why):
    with pytest.raises(TraceFormatError, match=why):
        validate_record(record)


def test_every_kind_validates_with_its_fields():
    for kind, fields in KINDS.items():
        record = {"t": 0.0, "port": "p", "side": "device", "queue": None, "dir": None, "kind": kind}
        record.update({f: 0 for f in fields})
        validate_record(record)


def test_buffer_keeps_the_newest_and_counts_what_a_slow_reader_lost():
    buf = TraceBuffer(capacity=3)
    for i in range(5):
        buf({"n": i})
    records, nxt, lost = buf.since(0)
    assert [r["n"] for r in records] == [2, 3, 4] and nxt == 5 and lost == 2
    records, nxt, lost = buf.since(4)
    assert [r["n"] for r in records] == [4] and (nxt, lost) == (5, 0)
    assert buf.since(5) == ([], 5, 0)
    with pytest.raises(ValueError):
        TraceBuffer(capacity=0)


def test_file_round_trip_and_kind_filter(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = JsonLinesWriter(str(path))
    tracer = Tracer("a", "device")
    tracer.add_sink(writer)
    tracer.emit("kick", 1, "tx")
    tracer.emit("chain", 1, "tx", head=0, descs=[[4096, 74, 0]], indirect=False, bytes=74)
    writer.close()
    tracer.emit("kick", 1, "tx")            # after close: dropped, no exception
    records = list(read_trace(str(path)))
    assert [r["kind"] for r in records] == ["header", "kick", "chain"]
    assert writer.records == 2
    assert [r["kind"] for r in read_trace(str(path), kinds=["chain"])] == ["chain"]


def test_reader_names_file_and_line_of_a_bad_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    header = json.dumps({"kind": "header", "format": "mnet-trace", "version": 1, "t": 0, "wall": 0})
    path.write_text(header + "\n{not json\n" + header + "\n")
    with pytest.raises(TraceFormatError, match=r"bad.jsonl:2: not JSON"):
        list(read_trace(str(path)))
    path.write_text(json.dumps({"kind": "kick"}) + "\n")
    with pytest.raises(TraceFormatError, match=r":1: kick record lacks"):
        list(read_trace(str(path)))
    with pytest.raises(TraceFormatError, match="cannot read"):
        list(read_trace(str(tmp_path / "missing.jsonl")))


def test_reader_ignores_a_last_line_still_being_written(tmp_path):
    path = tmp_path / "live.jsonl"
    writer = JsonLinesWriter(str(path))
    writer.close()
    with open(path, "a") as f:
        f.write('{"kind": "ki')
    assert [r["kind"] for r in read_trace(str(path))] == ["header"]


def test_writer_refuses_an_unwritable_path_with_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="cannot write trace file"):
        JsonLinesWriter(str(tmp_path / "no" / "dir" / "t.jsonl"))
