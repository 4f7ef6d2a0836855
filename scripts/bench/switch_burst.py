"""The switch's own cost per frame: frames handed over one by one (the
per-frame path, the anchor) against the same frames in bursts, in one run.

Two ports on a switch, in one process, no I/O: a source port delivers 64-byte
frames from one MAC to another, learned behind the destination port, which
only counts what it gets. Cases:

  per-frame (anchor)   deliver(frame) per frame -> transmit(frame) per frame
  burst                deliver_burst(items) of --burst frames -> transmit per frame
                       (a destination port that has not moved to bursts)
  burst-native         deliver_burst -> transmit_burst (a port that takes bursts)

Each case runs --rounds times, interleaved; the figure is the median
frames per second, with the anchor's from the same run and the ratio.

    .venv/bin/python scripts/bench/switch_burst.py [--seconds 1] [--burst 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from machine import cpu_model, source_version

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nicdev.net.loop import EventLoop  # noqa: E402
from nicdev.net.port import Port  # noqa: E402
from nicdev.net.switch import Switch  # noqa: E402

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


class CountingPort(Port):
    kind = "count"

    def __init__(self, name: str, bursts: bool = False) -> None:
        super().__init__(name)
        self.takes_bursts = bursts
        self.frames = 0

    def start(self, loop) -> None:
        pass

    def transmit(self, frame, meta=None) -> bool:
        self.frames += 1
        return True

    def transmit_burst(self, items) -> int:
        self.frames += len(items)
        return len(items)


def run_case(case: str, burst: int, seconds: float) -> float:
    loop = EventLoop()
    switch = Switch(loop)
    try:
        src = switch.add_port(CountingPort("src"))
        dst = switch.add_port(CountingPort("dst", bursts=case == "burst-native"))
        dst.deliver(SRC_MAC + DST_MAC + b"\x88\xb5" + bytes(46))       # DST_MAC learned behind dst
        frame = DST_MAC + SRC_MAC + b"\x88\xb5" + bytes(50)
        items = [(frame, None)] * burst
        dst.frames = 0
        start = time.perf_counter()
        end = start + seconds
        now = start
        while now < end:
            if case == "per-frame":
                deliver = src.deliver
                for _ in range(burst):
                    deliver(frame)
            else:
                src.deliver_burst(items)
            now = time.perf_counter()
        return dst.frames / (now - start)
    finally:
        switch.close()
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per case and round")
    parser.add_argument("--burst", type=int, default=64, help="frames per burst")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (interleaved); the figure is the median")
    args = parser.parse_args()
    if args.burst < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--burst and --rounds must be at least 1, --seconds positive")
    cases = ("per-frame", "burst", "burst-native")
    rounds: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        for case in cases:
            rounds[case].append(run_case(case, args.burst, args.seconds))
    anchor = statistics.median(rounds["per-frame"])
    for case in cases:
        pps = statistics.median(rounds[case])
        print(json.dumps({"case": case, "burst": args.burst, "pps": round(pps), "anchor": "per-frame",
                          "anchor_pps": round(anchor), "ratio_to_anchor": round(pps / anchor, 3),
                          "rounds": [round(x) for x in rounds[case]], "cpu": cpu_model(),
                          "source": source_version()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
