"""Ring data path benchmark: the stack's virtio-net driver against two back-ends,
with DPDK's own virtio-user -> vhost as the anchor, all in one run.

Cases (each for 64- and 1500-byte frames, bursts of --batch frames):

  anchor            dpdk-testpmd net_virtio_user txonly -> dpdk-testpmd net_vhost rxonly
                    (C on both sides: the ceiling; the two forwarding lcores on
                    different CPUs: each busy-polls the CPU it is on)
  dpdk->port        dpdk-testpmd net_virtio_user txonly -> our VhostUserPort on
                    a switch, counted at a sink port (our backend drains the
                    ring; testpmd on CPU 0, our process on CPU 1, as the anchor)
  forward           dpdk txonly -> our VhostUserPort -> switch -> our
                    VhostUserPort -> dpdk rxonly, counted by the rxonly testpmd;
                    beside its own anchor in the same run, forward-anchor:
                    the same two testpmds with one testpmd forwarding between
                    two net_vhost ports in io mode where our switch was (the
                    forwarder on CPU 1, the txonly and rxonly testpmds on CPU 0)
  forward-flowgen   the same forwarding both ways with two busy-polling processes
                    only: one testpmd with two virtio-user ports in flowgen mode
                    (each port sends generated frames and counts and drops what
                    it receives) on CPU 0, our switch with two VhostUserPorts or,
                    for forward-flowgen-anchor, testpmd io between two net_vhost
                    ports on CPU 1; counted as the tester's Rx-pps over both ports.
                    (In `forward` three busy-polling processes share two CPUs,
                    so the scheduler's time slices bound both figures.)
  driver->port      VirtioNetNic -> our VhostUserPort on a switch thread, counted
                    at a sink port (Python on both sides, one process)
  driver->dpdk      VirtioNetNic -> dpdk-testpmd net_vhost rxonly (our driver
                    alone, on each data path: the C ring kernels and the Python
                    reference, MNET_DATAPATH=c|python in a child process;
                    testpmd polls on the other CPU). Each transmit interface
                    of --tx: `pairs` (transmit() of (frame, None) pairs),
                    `frames` (transmit_frames() of a list of frames), `prepared`
                    (transmit_frames() of one TxFrames, joined once and sent
                    again and again, as a sender that builds its frames into
                    one buffer would; every frame is still copied into its
                    TX slot on every call)
  driver->dpdk-traced
                    the same with the driver's ring tracing on (every record
                    to a JSON lines file, as `mnet stack --trace` writes it),
                    each data path right after its untraced run

Prints one JSON line per case: pps, bits/s (frame bytes * 8 * pps), the
anchor's pps for the same frame size and the ratio (`forward` against
`forward-anchor`, forward-flowgen against `forward-flowgen-anchor`, the
rest against `anchor`), and `datapath` (MNET_DATAPATH).
Needs dpdk-testpmd and a unix socket directory; run as root (DPDK wants
/var/run/dpdk).

    .venv/bin/python scripts/bench/ring_datapath.py [--seconds 3] [--batch 64]
        [--sizes 64,1500] [--cases dpdk->port,forward,forward-flowgen,driver->dpdk,driver->dpdk-traced,driver->port]
        [--tx pairs,frames,prepared]
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
from nicdev.virtio.trace import JsonLinesWriter  # noqa: E402
from stack.drivers import TxFrames, VirtioNetNic  # noqa: E402

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


TX_INTERFACES = ("pairs", "frames", "prepared")


def pump(nic: VirtioNetNic, frame: bytes, batch: int, seconds: float, tx: str = "pairs") -> tuple[int, float]:
    """Transmit bursts for `seconds` through the `tx` interface (TX_INTERFACES);
    returns (frames the driver took, elapsed)."""
    if tx == "pairs":
        send, burst = nic.transmit, [(frame, None)] * batch
    else:
        send, burst = nic.transmit_frames, [frame] * batch
        if tx == "prepared":
            burst = TxFrames(burst)
    taken = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(16):
            taken += send(burst)
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


def case_driver_to_dpdk(workdir: str, size: int, batch: int, seconds: float, datapath: str, tx: str,
                        traced: bool = False) -> dict:
    """Our driver on `datapath` (c or python: MNET_DATAPATH of a child
    process, which keeps this process's CPU affinity) -> testpmd rxonly, sending
    through transmit interface `tx`; `traced`: with the driver's ring trace
    written to a file."""
    tag = f"{size}-{datapath}-{tx}{'-traced' if traced else ''}"
    sock = os.path.join(workdir, f"vhost-{tag}.sock")
    trace = [os.path.join(workdir, f"driver-{tag}.trace")] if traced else []
    pmd = Testpmd.backend(sock, "rxonly", workdir, tag=f"rx-{tag}", lcores="0@0,1@1")
    try:
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--pump-child", sock, str(size), str(batch), str(seconds),
             tx, *trace],
            env={**os.environ, "MNET_DATAPATH": datapath}, capture_output=True, text=True, timeout=120 + seconds)
    finally:
        out = pmd.stop()
    if child.returncode != 0:
        raise RuntimeError(f"driver->dpdk on the {datapath} data path failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.splitlines()[-1])
    received = [int(n) for n in re.findall(r"RX-packets:\s+(\d+)\s+RX-dropped", out)]
    return {"datapath": datapath, "tx_interface": tx, **result,
            "testpmd_rx_total": received[-1] if received else None}


def pump_child(sock: str, size: int, batch: int, seconds: float, tx: str, trace_path: str | None = None) -> None:
    """The driver->dpdk sender, in its own process: one JSON line on stdout."""
    writer = JsonLinesWriter(trace_path) if trace_path else None
    nic = VirtioNetNic(sock, trace_sink=writer)
    try:
        frame = frame_of(size, bytes(nic.mac))
        pump(nic, frame, batch, 0.3, tx)
        taken, elapsed = pump(nic, frame, batch, seconds, tx)
    finally:
        nic.close()
        if writer is not None:
            writer.close()
    print(json.dumps({"frames": taken, "seconds": elapsed, "pps": taken / elapsed,
                      "tx_kicks": nic.counters["tx_kicks"], "ring_full_drops": nic.counters["tx_drop_ring_full"],
                      "trace": "on" if writer is not None else "off",
                      "trace_records": writer.records if writer is not None else 0}))


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


def measure_sink(bg: BackgroundSwitch, count, seconds: float) -> tuple[int, float]:
    """Frames `count()` (run on the switch thread) went up by in `seconds`, and the time it took."""
    start_frames, start = bg.call(count), time.perf_counter()
    time.sleep(seconds)
    frames, end = bg.call(count), time.perf_counter()
    return frames - start_frames, end - start


def wait_for_traffic(bg: BackgroundSwitch, count, pmd: Testpmd, what: str, timeout: float = 30.0) -> None:
    pmd.wait_for(lambda: bg.call(count) > 0, what, timeout)


def rx_pps(pmd: Testpmd, seconds: float) -> list[int]:
    """testpmd's Rx-pps samples once traffic flows (the first one skipped: start-up)."""
    pmd.wait_for(lambda: len([n for n in pmd.numbers("Rx-pps") if n > 0]) >= 2 + int(seconds),
                 "the receiver's RX rate samples", timeout=30 + seconds)
    return [n for n in pmd.numbers("Rx-pps") if n > 0][1:]


def case_dpdk_to_port(workdir: str, size: int, seconds: float) -> dict:
    with BackgroundSwitch() as bg:
        port = bg.add_port(VhostUserPort("vu", os.path.join(workdir, f"vu-{size}.sock")))
        sink = bg.add_port(SinkPort("sink"))
        tx = Testpmd.frontend(port.socket_path, "txonly", workdir, tag=f"tx-port-{size}", lcores="0@1,1@0",
                              extra=[f"--txpkts={size}"])
        try:
            wait_for_traffic(bg, lambda: sink.frames, tx, "frames from testpmd at the sink")
            time.sleep(0.5)                                 # warm-up
            frames, elapsed = measure_sink(bg, lambda: sink.frames, seconds)
            drops = bg.call(lambda: port.counters.rx_dropped)
        finally:
            tx.stop()
    return {"frames": frames, "seconds": elapsed, "pps": frames / elapsed, "rx_dropped": drops}


def case_forward(workdir: str, size: int, seconds: float) -> dict:
    with BackgroundSwitch() as bg:
        a = bg.add_port(VhostUserPort("a", os.path.join(workdir, f"fwd-a-{size}.sock")))
        b = bg.add_port(VhostUserPort("b", os.path.join(workdir, f"fwd-b-{size}.sock")))
        rx = Testpmd.frontend(b.socket_path, "rxonly", workdir, tag=f"fwd-rx-{size}", lcores="0@1,1@0")
        tx = None
        try:
            rx.wait_for(lambda: "Port 0: link state change event" in rx.output() or bg.call(
                lambda: b.device.rx is not None and b.device.rx.started), "the receiver's rings", 30)
            tx = Testpmd.frontend(a.socket_path, "txonly", workdir, tag=f"fwd-tx-{size}", lcores="0@1,1@0",
                                  extra=[f"--txpkts={size}"])
            samples = rx_pps(rx, seconds)
            sent = bg.call(lambda: b.counters.tx_frames)
        finally:
            if tx is not None:
                tx.stop()
            rx.stop()
    return {"pps": statistics.median(samples), "samples": samples, "port_b_tx_frames": sent}


def case_forward_anchor(workdir: str, size: int, seconds: float) -> dict:
    a, b = (os.path.join(workdir, f"fwd-anchor-{x}-{size}.sock") for x in "ab")
    fwd = Testpmd([f"net_vhost0,iface={a},queues=1", f"net_vhost1,iface={b},queues=1"], "io", workdir,
                  tag=f"fwd-io-{size}", lcores="0@0,1@1")
    rx = tx = None
    try:
        fwd.wait_for(lambda: os.path.exists(a) and os.path.exists(b), "testpmd's two vhost sockets")
        rx = Testpmd.frontend(b, "rxonly", workdir, tag=f"fwd-anchor-rx-{size}", lcores="0@1,1@0")
        tx = Testpmd.frontend(a, "txonly", workdir, tag=f"fwd-anchor-tx-{size}", lcores="0@1,1@0",
                              extra=[f"--txpkts={size}"])
        samples = rx_pps(rx, seconds)
    finally:
        for pmd in (tx, rx, fwd):
            if pmd is not None:
                pmd.stop()
    return {"pps": statistics.median(samples), "samples": samples}


def tester(paths: list[str], workdir: str, tag: str, size: int) -> Testpmd:
    """One testpmd, two virtio-user ports in flowgen mode, its forwarding lcore on CPU 0."""
    return Testpmd([f"net_virtio_user{i},path={p},queues=1" for i, p in enumerate(paths)], "flowgen", workdir,
                   tag=tag, lcores="0@1,1@0", extra=[f"--txpkts={size}"])


def both_ports_rx_pps(pmd: Testpmd, seconds: float) -> list[int]:
    """The tester's Rx-pps summed over its two ports, per stats period, start-up skipped."""
    def periods() -> list[int]:
        values = pmd.numbers("Rx-pps")
        return [a + b for a, b in zip(values[0::2], values[1::2]) if a + b > 0]
    pmd.wait_for(lambda: len(periods()) >= 2 + int(seconds), "the tester's RX rate samples", timeout=30 + seconds)
    return periods()[1:]


def case_flowgen(workdir: str, size: int, seconds: float) -> dict:
    with BackgroundSwitch() as bg:
        ports = [bg.add_port(VhostUserPort(x, os.path.join(workdir, f"flow-{x}-{size}.sock"))) for x in "ab"]
        pmd = tester([p.socket_path for p in ports], workdir, f"flow-{size}", size)
        try:
            samples = both_ports_rx_pps(pmd, seconds)
        finally:
            pmd.stop()
        forwarded = bg.call(lambda: [p.counters.tx_frames for p in ports])
    return {"pps": statistics.median(samples), "samples": samples, "ports_tx_frames": forwarded}


def case_flowgen_anchor(workdir: str, size: int, seconds: float) -> dict:
    a, b = (os.path.join(workdir, f"flow-anchor-{x}-{size}.sock") for x in "ab")
    fwd = Testpmd([f"net_vhost0,iface={a},queues=1", f"net_vhost1,iface={b},queues=1"], "io", workdir,
                  tag=f"flow-io-{size}", lcores="0@0,1@1")
    pmd = None
    try:
        fwd.wait_for(lambda: os.path.exists(a) and os.path.exists(b), "testpmd's two vhost sockets")
        pmd = tester([a, b], workdir, f"flow-anchor-{size}", size)
        samples = both_ports_rx_pps(pmd, seconds)
    finally:
        for p in (pmd, fwd):
            if p is not None:
                p.stop()
    return {"pps": statistics.median(samples), "samples": samples}


CASES = ("dpdk->port", "forward", "forward-flowgen", "driver->dpdk", "driver->dpdk-traced", "driver->port")


def main() -> int:
    if sys.argv[1:2] == ["--pump-child"]:
        sock, size, batch, seconds, tx = sys.argv[2:7]
        pump_child(sock, int(size), int(batch), float(seconds), tx, *sys.argv[7:8])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case")
    parser.add_argument("--batch", type=int, default=64, help="frames per transmit() call")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="frame sizes, comma-separated (default 64,1500)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"cases to run beside the anchors, comma-separated (default {','.join(CASES)})")
    parser.add_argument("--tx", default=",".join(TX_INTERFACES),
                        help="driver->dpdk: the driver's transmit interfaces, comma-separated (default all)")
    args = parser.parse_args()
    txs = args.tx.split(",")
    if not txs or any(t not in TX_INTERFACES for t in txs):
        parser.error(f"--tx takes {', '.join(TX_INTERFACES)}, comma-separated")
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
        if not all(60 <= x <= 1514 for x in sizes):
            raise ValueError
    except ValueError:
        parser.error("--sizes takes frame sizes from 60 to 1514, comma-separated")
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; cases are {', '.join(CASES)}")
    try:
        find_testpmd()
    except TestpmdError as exc:
        print(f"ring_datapath: {exc}", file=sys.stderr)
        return 2
    cpu = cpu_model()
    workdir = tempfile.mkdtemp(prefix="mnet-bench-")
    everything = set(range(os.cpu_count() or 1))
    try:
        anchors = {}
        for size in sizes:
            result = case_anchor(workdir, size, args.seconds)
            anchors[size] = result["pps"]
            emit("anchor: dpdk virtio-user txonly -> dpdk vhost rxonly", size, 32, cpu, result, anchors[size])
        # Our process on CPU 1 where the anchor's receiving lcore was; testpmd's senders on CPU 0.
        if "dpdk->port" in cases:
            os.sched_setaffinity(0, {1} & everything or everything)
            for size in sizes:
                emit("dpdk->port: dpdk virtio-user txonly -> our VhostUserPort -> switch -> sink", size, 32, cpu,
                     case_dpdk_to_port(workdir, size, args.seconds), anchors[size])
        if "forward" in cases:
            for size in sizes:
                os.sched_setaffinity(0, everything)
                anchor = case_forward_anchor(workdir, size, args.seconds)
                anchor_pps = anchor["pps"]
                emit("forward-anchor: dpdk txonly -> testpmd io between two net_vhost -> dpdk rxonly", size, 32,
                     cpu, anchor, anchor_pps)
                os.sched_setaffinity(0, {1} & everything or everything)
                emit("forward: dpdk txonly -> our VhostUserPort -> switch -> our VhostUserPort -> dpdk rxonly",
                     size, 32, cpu, case_forward(workdir, size, args.seconds), anchor_pps)
        if "forward-flowgen" in cases:
            for size in sizes:
                os.sched_setaffinity(0, everything)
                anchor = case_flowgen_anchor(workdir, size, args.seconds)
                anchor_pps = anchor["pps"]
                emit("forward-flowgen-anchor: dpdk flowgen <-> testpmd io between two net_vhost", size, 32, cpu,
                     anchor, anchor_pps)
                os.sched_setaffinity(0, {1} & everything or everything)
                emit("forward-flowgen: dpdk flowgen <-> our VhostUserPort <-> switch <-> our VhostUserPort", size,
                     32, cpu, case_flowgen(workdir, size, args.seconds), anchor_pps)
        # Our process on CPU 0, testpmd's forwarding lcore on CPU 1.
        if "driver->dpdk" in cases or "driver->dpdk-traced" in cases:
            os.sched_setaffinity(0, {0})
            for size in sizes:
                for datapath in ("c", "python"):
                    if "driver->dpdk" in cases:
                        for tx in txs:
                            emit("driver->dpdk: VirtioNetNic -> dpdk vhost rxonly", size, args.batch, cpu,
                                 case_driver_to_dpdk(workdir, size, args.batch, args.seconds, datapath, tx),
                                 anchors[size])
                    if "driver->dpdk-traced" in cases:
                        emit("driver->dpdk-traced: VirtioNetNic, ring trace on -> dpdk vhost rxonly", size,
                             args.batch, cpu, case_driver_to_dpdk(workdir, size, args.batch, args.seconds, datapath,
                                                                  txs[0], traced=True), anchors[size])
        os.sched_setaffinity(0, everything)
        if "driver->port" in cases:
            for size in sizes:
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
        "cpu": cpu, "datapath": os.environ.get("MNET_DATAPATH", "c"), **result,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
