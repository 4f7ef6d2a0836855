"""Many concurrent TCP connections from the kernel to `mnet stack --serve tcp-echo:7`, through
`mnet switch` and a TAP port, as a user runs them: every connection opens and every echo comes
back. The lab and the client are scripts/bench/tcp_conns.py's (its kernel client in a
namespace: non-blocking connects, then 16 bytes on each connection, read back and compared)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "tcp_conns.py"
CONNECTIONS = 2000
WINDOW = 1000  # connection attempts in flight: bursts of handshakes, as in the 10,000 benchmark


def test_two_thousand_kernel_connections_in_bursts_all_echoed():
    r = subprocess.run([sys.executable, str(BENCH), "--cases", "stack", "--conns", str(CONNECTIONS),
                        "--window", str(WINDOW), "--timeout", "90"],
                       capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    stack = [line for line in lines if line["case"] == "stack"]
    assert stack, f"no result (status {r.returncode}):\n{r.stderr[-4000:]}"
    got = stack[0]
    assert "error" not in got, got["error"]
    assert got["connected"] == CONNECTIONS and got["connect_failed"] == 0, (got, r.stderr[-4000:])
    assert got["answered"] == CONNECTIONS and got["answered_wrong"] == 0, (got, r.stderr[-4000:])
    # One event loop, not a thread per connection: main, the stack, the service's loop, the
    # control socket's server (mnet stack opens one by default) and the collector's closer.
    assert got["stack_process"]["threads"] <= 5, got["stack_process"]
    # ... and no descriptor per connection: its Poller is told of readiness by the sockets.
    assert got["stack_process"]["fds"] < CONNECTIONS / 4, got["stack_process"]
