"""What a monitor's look at a stack costs: `Stack.snapshot()` against the
connection table `mnet stack` prints on SIGUSR1 (`Stack.connection_table()`),
in one run, on the same stack.

Two stacks in this process on a LoopbackNicPair; the server side holds N
established TCP connections (and its listener) and a few UDP sockets. Both
calls take the stack's lock for all of their work, so their time is also how
long they hold up the stack. Cases: N = each of --connections. The figure is
milliseconds per call (the median of --rounds, each the mean of --calls
calls), with the JSON size of the snapshot (what `mnet monitor` receives).

    .venv/bin/python scripts/bench/monitor_snapshot.py [--connections 100,1000] [--calls 20] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def per_call_ms(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def run_case(n: int, calls: int, rounds: int) -> dict:
    from stack import IpAddress, LoopbackNicPair, SocketType, Stack

    nic_a, nic_b = LoopbackNicPair()
    with Stack(nic_a, "10.0.0.1/24") as a, Stack(nic_b, "10.0.0.2/24") as b:
        listener = b.socket(SocketType.STREAM)
        listener.bind(IpAddress.any(7))
        listener.listen(4096)
        socks = [listener]
        for port in range(5353, 5357):
            udp = b.socket(SocketType.DATAGRAM)
            udp.bind(IpAddress.any(port))
            socks.append(udp)
        for k in range(n):
            client = a.socket(SocketType.STREAM)
            client.connect(IpAddress.parse("10.0.0.2:7"))
            socks += [client, listener.accept()[0]]
            if k % 200 == 199:
                print(f"{k + 1} connections", file=sys.stderr, flush=True)
        figures, anchors = [], []
        for _ in range(rounds):     # alternate: anchor, ours
            anchors.append(per_call_ms(b.connection_table, calls))
            figures.append(per_call_ms(b.snapshot, calls))
        size = len(json.dumps(b.snapshot()))
        rows = len(b.snapshot()["sockets"])
        for sock in reversed(socks):
            sock.close()
    figure, anchor = statistics.median(figures), statistics.median(anchors)
    return {"case": f"{n} connections", "unit": "ms/call", "figure": round(figure, 2), "anchor": round(anchor, 2),
            "anchor_is": "Stack.connection_table()", "ratio": round(figure / anchor, 3), "socket_rows": rows,
            "json_bytes": size, "calls": calls, "rounds": rounds, "rounds_figures": [round(f, 2) for f in figures],
            "rounds_anchor": [round(f, 2) for f in anchors], "cpu": cpu_model(), "source": source_version()}


def counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected connection counts like 100,1000, not {text!r}")
    return values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=counts, default=[100, 1000],
                   help="comma-separated connection counts (default 100,1000)")
    p.add_argument("--calls", type=int, default=20, help="calls per round (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating anchor and ours (default 3)")
    args = p.parse_args()
    for n in args.connections:
        print(json.dumps(run_case(n, args.calls, args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
