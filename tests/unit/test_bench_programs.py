"""The benchmark programs start: `--help` of each works from any directory (they
import scripts/bench/machine.py and others beside them), and a wrong argument is one line, status 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import path_without

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
# What the programs import beside them; not programs themselves.
LIBRARIES = {"machine.py", "lab.py", "tcp_endpoint.py", "http_lab.py"}
PROGRAMS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in LIBRARIES)


def test_there_are_benchmarks():
    assert {"tcp_bulk.py", "tcp_lossy.py", "udp_rr.py", "ring_datapath.py", "guest_throughput.py"} <= set(PROGRAMS)


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_and_a_wrong_argument(program, tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / program), "--help"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, str(BENCH / program), "--no-such-option"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--no-such-option" in r.stderr


@pytest.mark.parametrize("program, tool", [("http_serve.py", "wrk"), ("lb_relay.py", "wrk"), ("lb_relay.py", "socat")])
def test_a_missing_load_tool_is_one_line_naming_its_package(program, tool, tmp_path):
    # Checked before any namespace or process is made, so this runs nothing else. The root check
    # comes first: as another user, that one line is the answer.
    env = dict(os.environ, PATH=path_without(tmp_path / "bin", tool))
    r = subprocess.run([sys.executable, str(BENCH / program), "--seconds", "1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    if os.geteuid() != 0:
        assert r.returncode == 2 and r.stderr.startswith(f"{program} needs root"), r.stderr
        return
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"{program}: missing ") and f"apt-get install {tool}" in r.stderr, r.stderr


def test_machine_description():
    sys.path.insert(0, str(BENCH))
    try:
        import machine
    finally:
        sys.path.remove(str(BENCH))
    assert machine.cpu_model().strip() != ""
    assert machine.source_version() != ""
