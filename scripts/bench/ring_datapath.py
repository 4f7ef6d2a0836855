"""Ring data path benchmark: the stack's virtio-net driver against two back-ends,
with DPDK's own virtio-user -> vhost as the anchor, all in one run.

Cases (each for 64- and 1500-byte frames, bursts of --batch frames):

  anchor            dpdk-testpmd net_virtio_user txonly -> dpdk-testpmd net_vhost rxonly
                    (C on both sides: the ceiling; the two forwarding lcores on
                    different CPUs: each busy-polls the CPU it is on)
  driver->port      VirtioNetNic -> our VhostUserPort on a switch thread, counted
                    at a sink port (Python on both sides, one process)
  driver->dpdk      VirtioNetNic -> dpdk-testpmd net_vhost rxonly (our driver
                    alone, on each data path: the C ring kernels and the Python
                    reference, MNET_DATAPATH=c|python in a child process;
                    testpmd polls on the other CPU)

Prints one JSON line per case: pps, bits/s (frame bytes * 8 * pps), the
anchor's pps for the same frame size and the ratio. Needs dpdk-testpmd and
a unix socket directory; run as root (DPDK wants /var/run/dpdk).

    .venv/bin/python scripts/bench/ring_datapath.py [--seconds 3] [--batch 64]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from machine import cpu_model

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nicdev.net.background import BackgroundSwitch  # noqa: E402
from nicdev.net.port import Port  # noqa: E402
from nicdev.net.vhost_user_port import VhostUserPort  # noqa: E402
from nicdev.vhost_user.testpmd import Testpmd, TestpmdError, find_testpmd  # noqa: E402
from stack.drivers import VirtioNetNic  # noqa: E402

SIZES = (64, 1500)


class SinkPort(Port):
    """A switch port that only counts what the switch sends it."""

    kind = "sink"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.frames = 0

    def start(self, loop) -> None:
        pass

    def transmit(self, frame: bytes, meta=None) -> bool:
        self.frames += 1
        return True


def frame_of(size: int, src: bytes) -> bytes:
    # To a unicast MAC nobody has: the switch floods it to the sink.
    return b"\x02\x00\x00\x00\xbe\xef" + src + b"\x88\xb5" + bytes(size - 14)


def pump(nic: VirtioNetNic, frame: bytes, batch: int, seconds: float) -> tuple[int, float]:
    """Transmit bursts for `seconds`; returns (frames the driver took, elapsed)."""
    burst = [(frame, None)] * batch
    taken = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(16):
            taken += nic.transmit(burst)
        now = time.perf_counter()
        if now >= end:
            return taken, now - start


def case_driver_to_port(workdir: str, size: int, batch: int, seconds: float) -> dict:
    with BackgroundSwitch() as bg:
        port = bg.add_port(VhostUserPort("drv", os.path.join(workdir, "drv.sock")))
        sink = bg.add_port(SinkPort("sink"))
        nic = VirtioNetNic(port.socket_path)
        try:
            frame = frame_of(size, bytes(nic.mac))
            pump(nic, frame, batch, 0.3)                    # warm-up
            before = bg.call(lambda: sink.frames)
            taken, elapsed = pump(nic, frame, batch, seconds)
            counted = bg.call(lambda: sink.frames) - before
        finally:
            nic.close()
    return {"frames": counted, "driver_took": taken, "seconds": elapsed, "pps": counted / elapsed,
            "tx_kicks": nic.counters["tx_kicks"], "ring_full_drops": nic.counters["tx_drop_ring_full"]}


def case_driver_to_dpdk(workdir: str, size: int, batch: int, seconds: float, datapath: str) -> dict:
    """Our driver on `datapath` (c or python: MNET_DATAPATH of a child
    process, which keeps this process's CPU affinity) -> testpmd rxonly."""
    sock = os.path.join(workdir, f"vhost-{size}-{datapath}.sock")
    pmd = Testpmd.backend(sock, "rxonly", workdir, tag=f"rx-{size}-{datapath}", lcores="0@0,1@1")
    try:
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--pump-child", sock, str(size), str(batch), str(seconds)],
            env={**os.environ, "MNET_DATAPATH": datapath}, capture_output=True, text=True, timeout=120 + seconds)
    finally:
        out = pmd.stop()
    if child.returncode != 0:
        raise RuntimeError(f"driver->dpdk on the {datapath} data path failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.splitlines()[-1])
    received = [int(n) for n in re.findall(r"RX-packets:\s+(\d+)\s+RX-dropped", out)]
    return {"datapath": datapath, **result, "testpmd_rx_total": received[-1] if received else None}


def pump_child(sock: str, size: int, batch: int, seconds: float) -> None:
    """The driver->dpdk sender, in its own process: one JSON line on stdout."""
    nic = VirtioNetNic(sock)
    try:
        frame = frame_of(size, bytes(nic.mac))
        pump(nic, frame, batch, 0.3)
        taken, elapsed = pump(nic, frame, batch, seconds)
    finally:
        nic.close()
    print(json.dumps({"frames": taken, "seconds": elapsed, "pps": taken / elapsed,
                      "tx_kicks": nic.counters["tx_kicks"], "ring_full_drops": nic.counters["tx_drop_ring_full"]}))


def case_anchor(workdir: str, size: int, seconds: float) -> dict:
    sock = os.path.join(workdir, f"anchor-{size}.sock")
    rx = Testpmd.backend(sock, "rxonly", workdir, tag=f"anchor-rx-{size}", lcores="0@0,1@1")
    tx = None
    try:
        tx = Testpmd.frontend(sock, "txonly", workdir, tag=f"anchor-tx-{size}", lcores="0@1,1@0",
                              extra=[f"--txpkts={size}"])
        # testpmd prints Rx-pps once a second; skip the first samples (start-up).
        rx.wait_for(lambda: len([n for n in rx.numbers("Rx-pps") if n > 0]) >= 2 + int(seconds),
                    "the anchor's RX rate samples", timeout=30 + seconds)
        samples = [n for n in rx.numbers("Rx-pps") if n > 0][1:]
    finally:
        if tx is not None:
            tx.stop()
        rx.stop()
    return {"pps": statistics.median(samples), "samples": samples}


def main() -> int:
    if sys.argv[1:2] == ["--pump-child"]:
        sock, size, batch, seconds = sys.argv[2:6]
        pump_child(sock, int(size), int(batch), float(seconds))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case")
    parser.add_argument("--batch", type=int, default=64, help="frames per transmit() call")
    args = parser.parse_args()
    try:
        find_testpmd()
    except TestpmdError as exc:
        print(f"ring_datapath: {exc}", file=sys.stderr)
        return 2
    cpu = cpu_model()
    workdir = tempfile.mkdtemp(prefix="mnet-bench-")
    try:
        anchors = {}
        for size in SIZES:
            result = case_anchor(workdir, size, args.seconds)
            anchors[size] = result["pps"]
            emit("anchor: dpdk virtio-user txonly -> dpdk vhost rxonly", size, 32, cpu, result, anchors[size])
        # Our process on CPU 0, testpmd's forwarding lcore on CPU 1.
        os.sched_setaffinity(0, {0})
        for size in SIZES:
            for datapath in ("c", "python"):
                emit("driver->dpdk: VirtioNetNic -> dpdk vhost rxonly", size, args.batch, cpu,
                     case_driver_to_dpdk(workdir, size, args.batch, args.seconds, datapath), anchors[size])
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        for size in SIZES:
            emit("driver->port: VirtioNetNic -> our VhostUserPort -> switch -> sink", size, args.batch, cpu,
                 case_driver_to_port(workdir, size, args.batch, args.seconds), anchors[size])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def emit(case: str, size: int, batch: int, cpu: str, result: dict, anchor_pps: float) -> None:
    pps = result.pop("pps")
    line = {
        "case": case, "frame_bytes": size, "batch": batch, "pps": round(pps), "bits_per_s": round(pps * size * 8),
        "anchor_pps": round(anchor_pps), "ratio_to_anchor": round(pps / anchor_pps, 5) if anchor_pps else None,
        "cpu": cpu, **result,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
