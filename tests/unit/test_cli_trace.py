"""`mnet trace show|summary|plot`, run as a subprocess on trace files written
by the real Tracer and JsonLinesWriter; wrong input is one clear line."""
from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET

import pytest

from nicdev.virtio.trace import JsonLinesWriter, Tracer
from support.cli import assert_one_line_error, mnet


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    """Port a sends 6 frames (2 kicks), the device calls 4 times and
    suppresses 2; port b receives 3 frames, one frame dropped; the stack's
    driver (nic0) posts 5 receive buffers. Times from 50.0 s, header at 50.0."""
    path = tmp_path_factory.mktemp("trace") / "run.trace"
    now = [50.0]
    writer = JsonLinesWriter(str(path), clock=lambda: now[0])
    a, b = Tracer("a", "device", clock=lambda: now[0]), Tracer("b", "device", clock=lambda: now[0])
    nic = Tracer("nic0", "driver", clock=lambda: now[0])
    for tracer in (a, b, nic):
        tracer.add_sink(writer)
    a.emit("features", None, None, value=0x130AFFFA7, protocol=False)
    for head in range(6):
        now[0] = 50.0 + 0.1 * head
        if head % 3 == 0:
            a.emit("kick", 1, "tx")
        a.emit("chain", 1, "tx", head=head, descs=[[0x7F00001000, 12, 1], [0x7F00002000, 1502, 0]],
               indirect=False, bytes=1514)
    for head in range(6):
        now[0] = 50.7 + 0.01 * head
        a.emit("used", 1, "tx", id=head, len=0)
        a.emit("call", 1, "tx") if head % 3 else a.emit("call_suppressed", 1, "tx", reason="event_idx")
    for head in range(3):
        now[0] = 51.0 + 0.1 * head
        b.emit("chain", 0, "rx", head=head, descs=[[0x9000, 1526, 2]], indirect=False, bytes=1526)
        b.emit("used", 0, "rx", id=head, len=1000)
    b.emit("drop", 0, "rx", reason="no_rx_buffer", len=1000)
    for head in range(5):
        nic.emit("chain", 0, "rx", head=head, descs=[[0x5000, 1526, 2]], indirect=False, bytes=1526)
    writer.close()
    return str(path)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


HEADER = '{"kind":"header","format":"mnet-trace","version":1,"t":1.0,"wall":0}\n'
KICK = '{"t":1.5,"port":"a","side":"device","queue":1,"dir":"tx","kind":"kick"}\n'


# -- show ----------------------------------------------------------------------

def test_show_prints_one_line_per_record(trace_file):
    r = mnet("trace", "show", trace_file)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 + 2 + 6 + 12 + 6 + 1 + 5
    assert lines[0] == "+0.000000 a * features value=0x130afffa7"
    assert "+0.000000 a q1 tx chain head=0 descs=2 bytes=1514 [0x7f00001000:12 N, 0x7f00002000:1502]" in lines
    assert lines[-1].startswith("+1.200000 nic0 drv q0 rx chain head=4")


def test_show_filters_by_port_queue_kind_side_and_time(trace_file):
    def shown(*args):
        r = mnet("trace", "show", trace_file, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    assert len(shown("--port", "b")) == 7
    assert all(" q0 rx " in line for line in shown("--queue", "0"))
    kicks_and_drops = shown("--kind", "kick,drop")
    assert [line.split()[4] for line in kicks_and_drops] == ["kick", "kick", "drop"]
    assert shown("--kind", "kick", "--kind", "drop") == kicks_and_drops
    assert len(shown("--side", "driver")) == 5
    # 0.25 s to 0.55 s after the start: port a's chains 3, 4, 5 and the kick at 0.3
    window = shown("--since", "0.25", "--until", "0.55")
    assert [line.split()[4] for line in window] == ["kick", "chain", "chain", "chain"]


def test_show_accepts_a_trace_still_being_written(tmp_path):
    path = write(tmp_path, "live.trace", HEADER + KICK + '{"t":1.6,"port":"a","si')
    r = mnet("trace", "show", path)
    assert (r.returncode, r.stdout) == (0, "+0.500000 a q1 tx kick\n")


# -- summary ---------------------------------------------------------------------

def test_summary_table(trace_file):
    r = mnet("trace", "summary", trace_file)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{trace_file}: 33 records over 1.200000 s, ports a, b, nic0"
    assert lines[1].split()[:6] == ["port", "side", "q", "dir", "chains", "bytes"]
    rows = {tuple(line.split()[:3]): line.split() for line in lines[2:5]}
    # port side q dir chains bytes desc/chain occ-mean occ-max kicks kicks/frame kicks-supp calls calls-supp drops
    assert rows["a", "device", "1"][3:] == ["tx", "6", str(6 * 1514), "2.00", rows["a", "device", "1"][7],
                                            "6", "2", "0.33", "0", "4", "2", "0"]
    assert rows["b", "device", "0"][3:6] == ["rx", "3", "3000"] and rows["b", "device", "0"][-1] == "1"
    assert rows["nic0", "driver", "0"][8] == "5"
    assert "a device q1 calls suppressed: event_idx 2" in lines
    assert "b device q0 drops: no_rx_buffer 1" in lines


def test_summary_json(trace_file):
    r = mnet("trace", "summary", trace_file, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["records"] == 33 and data["duration"] == pytest.approx(1.2)
    queues = {(q["port"], q["queue"]): q for q in data["queues"]}
    tx = queues["a", 1]
    assert (tx["chains"], tx["bytes"], tx["kicks"], tx["calls"]) == (6, 6 * 1514, 2, 4)
    assert tx["kicks_per_frame"] == pytest.approx(1 / 3)
    assert tx["calls_suppressed"] == {"event_idx": 2}
    assert tx["occupancy_max"] == 6
    assert queues["b", 0]["drops"] == {"no_rx_buffer": 1}


def test_summary_with_a_port_filter(trace_file):
    data = json.loads(mnet("trace", "summary", trace_file, "--json", "--port", "b").stdout)
    assert [(q["port"], q["queue"]) for q in data["queues"]] == [("b", 0)]


# -- plot ------------------------------------------------------------------------

def test_plot_svg_is_a_real_svg_with_the_queues(trace_file, tmp_path):
    out = tmp_path / "trace.svg"
    r = mnet("trace", "plot", trace_file, "-o", str(out))
    assert r.returncode == 0, r.stderr
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("chains in flight", "chains / s", "a q1 tx", "b q0 rx", "nic0 drv q0 rx"):
        assert label in texts, f"{label!r} not in the SVG's text: {texts}"
    assert len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 20


def test_plot_png_is_a_real_png_with_something_drawn(trace_file, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "trace.png"
    r = mnet("trace", "plot", trace_file, "-o", str(out), "--bins", "12")
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    pixels = imread(str(out))
    assert pixels.shape[:2] == (height, width) and width > 300 and height > 300
    assert pixels.std() > 0.05, "the image is blank"


# -- wrong input: one line, non-zero status, no traceback ----------------------------

@pytest.mark.parametrize("content, fragment", [
    ("", "empty"),
    (KICK, ":1: a trace file starts with its header line"),
    (HEADER + "not json\n" + KICK, ":2: not JSON"),
    (HEADER + KICK + '{"t":2,"port":"a","side":"device","queue":1,"dir":"tx","kind":"bogus"}\n',
     ":3: unknown event kind 'bogus'"),
    (HEADER + '{"t":2,"port":"a","side":"device","queue":1,"dir":"tx","kind":"chain"}\n',
     ":2: chain record lacks head, descs, indirect, bytes"),
    ('{"kind":"header","version":99,"t":1}\n', ":1: trace schema version 99"),
])
@pytest.mark.parametrize("action", ["show", "summary"])
def test_malformed_trace_file(tmp_path, content, fragment, action):
    path = write(tmp_path, "bad.trace", content)
    assert_one_line_error(mnet("trace", action, path), "trace", path, fragment)


def test_malformed_trace_file_for_plot(tmp_path):
    path = write(tmp_path, "bad.trace", HEADER + "[1, 2]\n")
    line = assert_one_line_error(mnet("trace", "plot", path, "-o", str(tmp_path / "x.svg")), "trace", f"{path}:2")
    assert "JSON object" in line
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("args, command, fragment", [
    (["show", "/nonexistent/run.trace"], "trace", "cannot read trace file /nonexistent/run.trace"),
    (["show", "{trace}", "--kind", "chain,nope"], "trace", "unknown event kind 'nope'"),
    (["show", "{trace}", "--since", "2", "--until", "1"], "trace", "ends"),
    (["show", "{trace}", "--queue", "x"], "trace show", "invalid int value"),
    (["plot", "{trace}", "-o", "out.pdf"], "trace", "name it .svg or .png"),
    (["plot", "{trace}", "-o", "/nonexistent-dir/out.svg"], "trace", "cannot write /nonexistent-dir/out.svg"),
    (["plot", "{trace}", "-o", "x.png", "--bins", "0"], "trace", "bad --bins"),
    ([], "trace", "give an action: show, summary, plot"),
])
def test_wrong_input(trace_file, args, command, fragment):
    args = [a.replace("{trace}", trace_file) for a in args]
    assert_one_line_error(mnet("trace", *args), command, fragment)


def test_show_into_a_pipe_closed_early_ends_quietly(tmp_path):
    """`mnet trace show FILE | head -1`: no BrokenPipeError traceback."""
    import subprocess

    from support.cli import MNET

    path = str(tmp_path / "long.trace")
    writer = JsonLinesWriter(path, clock=lambda: 1.0)
    tracer = Tracer("a", "device", clock=lambda: 1.0)
    tracer.add_sink(writer)
    tracer.emit("features", None, None, value=1, protocol=False)
    for head in range(5000):            # far more than a pipe holds
        tracer.emit("used", 1, "tx", id=head, len=0)
    writer.close()
    proc = subprocess.Popen([*MNET, "trace", "show", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()                 # the reader goes away, as head does
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(30) == 0 and first.startswith(b"+0.000000 a * features"), err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
