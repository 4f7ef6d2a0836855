"""Device data path benchmark: our vhost-user port on each data path (the C
kernels and the Python reference) draining a DPDK virtio-user txonly sender,
with DPDK's own vhost backend draining the same sender as the anchor, all in
one run.

Cases (64-byte frames by default):

  anchor              dpdk-testpmd net_virtio_user txonly -> dpdk-testpmd net_vhost rxonly
  dpdk->port[PATH]    dpdk-testpmd net_virtio_user txonly -> our VhostUserPort (data path
                      PATH) on a switch thread -> a sink port that counts (bursts still
                      in our C pool are counted there, as testpmd's rxonly frees mbufs)
  fwd anchor          testpmd with two virtio-user ports (flowgen: each sends and
                      receives) <-> testpmd io forwarding between two net_vhost ports
  fwd[PATH]           the same frontend <-> two of our VhostUserPorts on one switch
                      (data path PATH)

With --tracing (C data path), the tracing cost: the forwarding case with
ring tracing off, on for one port, and on for both (every record into a
JSON lines file, as `mnet switch --trace FILE` writes it), and the drain
case off and on; each traced case also reports the records written per
second.

Forwarding is what the frontend's two ports receive together (its Rx-pps),
for the anchor and for us alike. The frontend polls CPU 1, the forwarder
(DPDK's, or our switch thread) CPU 0.

Prints one JSON line per case: pps, the anchor's pps and the ratio, and for
our port the guest's kicks and our calls. Needs dpdk-testpmd; run as root
(DPDK wants /var/run/dpdk).

    .venv/bin/python scripts/bench/device_datapath.py [--seconds 3] [--sizes 64,1500] [--forward] [--tracing]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from machine import cpu_model
from ring_datapath import SinkPort, case_anchor, emit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nicdev.net.background import BackgroundSwitch  # noqa: E402
from nicdev.net.vhost_user_port import VhostUserPort  # noqa: E402
from nicdev.vhost_user.testpmd import Testpmd, TestpmdError, find_testpmd  # noqa: E402
from nicdev.virtio import kernels  # noqa: E402
from nicdev.virtio.trace import JsonLinesWriter  # noqa: E402


def _trace(bg: BackgroundSwitch, ports: list, workdir: str, tag: str) -> JsonLinesWriter | None:
    """A trace file written from `ports`' tracers (none: None)."""
    if not ports:
        return None
    writer = JsonLinesWriter(os.path.join(workdir, f"trace-{tag}.jsonl"))
    bg.call(lambda: [p.tracer.add_sink(writer) for p in ports])
    return writer


class PooledSinkPort(SinkPort):
    """A sink that takes pooled bursts too: it counts frames still in our
    port's C pool without making Python objects of them, as testpmd's
    rxonly frees its mbufs unread (on the Python data path it gets frames)."""

    takes_pooled_bursts = True

    def attach_pooled(self, sink) -> None:
        pass        # a sink sends nothing into the switch

    def transmit_pooled(self, frames, first: int, count: int) -> int:
        self.frames += count
        return count


def case_dpdk_to_port(workdir: str, size: int, seconds: float, datapath: str, traced: bool = False) -> dict:
    sock = os.path.join(workdir, f"port-{datapath}-{size}-{traced}.sock")
    with BackgroundSwitch() as bg:
        port = bg.add_port(VhostUserPort("dpdk", sock, datapath=datapath))
        sink = bg.add_port(PooledSinkPort("sink"))
        writer = _trace(bg, [port] if traced else [], workdir, f"drain-{size}")
        tx = Testpmd.frontend(sock, "txonly", workdir, tag=f"tx-{datapath}-{size}", lcores="0@1,1@1",
                              extra=[f"--txpkts={size}"])
        try:
            deadline = time.monotonic() + 30
            while bg.call(lambda: sink.frames) == 0:        # the rings run, frames flow
                if time.monotonic() > deadline:
                    raise TestpmdError(f"no frame from testpmd through our port in 30 s:\n{tx.output()[-2000:]}")
                time.sleep(0.05)
            time.sleep(0.3)                                  # warm-up
            records = (lambda: writer.records) if writer is not None else (lambda: 0)
            before = bg.call(lambda: (sink.frames, dict(port.device.counters.as_dict()), records()))
            start = time.perf_counter()
            time.sleep(seconds)
            after = bg.call(lambda: (sink.frames, dict(port.device.counters.as_dict()), records()))
            elapsed = time.perf_counter() - start
        finally:
            tx.stop()
    if writer is not None:
        writer.close()
    frames = after[0] - before[0]
    c0, c1 = before[1], after[1]
    return {"datapath": datapath, "traced": traced, "frames": frames, "seconds": elapsed, "pps": frames / elapsed,
            "tx_kicks": c1["tx_kicks"] - c0["tx_kicks"], "calls": c1["calls"] - c0["calls"],
            "records_per_s": (after[2] - before[2]) / elapsed}


def _frontends(a: str, b: str, workdir: str, size: int, tag: str) -> Testpmd:
    """One testpmd with a virtio-user port on each socket, in flowgen mode:
    each port sends and counts what it receives, both ways at once."""
    return Testpmd([f"net_virtio_user0,path={a},queues=1", f"net_virtio_user1,path={b},queues=1"], "flowgen",
                   workdir, tag=tag, lcores="0@1,1@1", extra=[f"--txpkts={size}"])


def _forwarded_pps(pmd: Testpmd, seconds: float) -> list[int]:
    """Frames per second the two ports received together, per stats period
    (testpmd prints port 0 then port 1), the first period left out."""
    def totals() -> list[int]:
        rates = pmd.numbers("Rx-pps")
        return [rates[i] + rates[i + 1] for i in range(0, len(rates) - 1, 2)]
    pmd.wait_for(lambda: len([n for n in totals() if n > 0]) >= 2 + int(seconds), "the receive rate samples",
                 timeout=30 + 2 * seconds)
    return [n for n in totals() if n > 0][1:]


def case_forward_anchor(workdir: str, size: int, seconds: float) -> dict:
    a, b = os.path.join(workdir, f"fa-{size}.sock"), os.path.join(workdir, f"fb-{size}.sock")
    fwd = Testpmd([f"net_vhost0,iface={a},queues=1", f"net_vhost1,iface={b},queues=1"], "io", workdir,
                  tag=f"fwd-{size}", lcores="0@0,1@0")
    fe = None
    try:
        fwd.wait_for(lambda: os.path.exists(a) and os.path.exists(b), "testpmd's vhost sockets")
        fe = _frontends(a, b, workdir, size, f"fe-anchor-{size}")
        samples = _forwarded_pps(fe, seconds)
    finally:
        for pmd in (fe, fwd):
            if pmd is not None:
                pmd.stop()
    return {"pps": statistics.median(samples), "samples": samples}


def case_forward(workdir: str, size: int, seconds: float, datapath: str, traced: int = 0) -> dict:
    """`traced`: how many of the two ports write their ring trace to a file."""
    a, b = (os.path.join(workdir, f"{n}-{datapath}-{size}-{traced}.sock") for n in ("fwa", "fwb"))
    fe = None
    with BackgroundSwitch() as bg:
        ports = [bg.add_port(VhostUserPort(n, path, datapath=datapath)) for n, path in (("a", a), ("b", b))]
        writer = _trace(bg, ports[:traced], workdir, f"fwd-{size}-{traced}")
        try:
            fe = _frontends(a, b, workdir, size, f"fe-{datapath}-{size}-{traced}")
            start = time.perf_counter()
            samples = _forwarded_pps(fe, seconds)
            elapsed = time.perf_counter() - start
        finally:
            if fe is not None:
                fe.stop()
        counters = bg.call(lambda: [p.device.counters.as_dict() for p in ports])
        records = bg.call(lambda: writer.records) if writer is not None else 0
    if writer is not None:
        writer.close()
    return {"datapath": datapath, "traced_ports": traced, "pps": statistics.median(samples), "samples": samples,
            "rx_drops": [c["drops"] for c in counters], "records_per_s": records / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case")
    parser.add_argument("--sizes", default="64", help="frame sizes, comma-separated")
    parser.add_argument("--forward", action="store_true", help="also forwarding between two vhost-user ports")
    parser.add_argument("--tracing", action="store_true",
                        help="only the tracing cost: C data path, tracing off, on for one port, on for all")
    parser.add_argument("--datapaths", default="python,c", help="our data paths to measure, comma-separated")
    args = parser.parse_args()
    try:
        find_testpmd()
    except TestpmdError as exc:
        print(f"device_datapath: {exc}", file=sys.stderr)
        return 2
    paths = [p for p in args.datapaths.split(",") if p == "python" or kernels.use_c()]
    cpu = cpu_model()
    workdir = tempfile.mkdtemp(prefix="mnet-bench-")
    if args.tracing:
        try:
            return _tracing_cost(workdir, [int(s) for s in args.sizes.split(",")], args.seconds, cpu)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            anchor = case_anchor(workdir, size, args.seconds)["pps"]
            emit("anchor: dpdk virtio-user txonly -> dpdk vhost rxonly", size, 32, cpu, {"pps": anchor}, anchor)
            # Our switch thread on CPU 0, testpmd's forwarding lcore on CPU 1.
            os.sched_setaffinity(0, {0})
            for datapath in paths:
                emit(f"dpdk->port[{datapath}]: dpdk virtio-user txonly -> our VhostUserPort -> switch -> sink",
                     size, 32, cpu, case_dpdk_to_port(workdir, size, args.seconds, datapath), anchor)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        if args.forward:
            for size in (int(s) for s in args.sizes.split(",")):
                anchor = case_forward_anchor(workdir, size, args.seconds)["pps"]
                emit("fwd anchor: testpmd flowgen x2 <-> testpmd vhost x2 io", size, 32, cpu,
                     {"pps": anchor}, anchor)
                os.sched_setaffinity(0, {0})
                for datapath in paths:
                    emit(f"fwd[{datapath}]: testpmd flowgen x2 <-> our vhost-user x2 on one switch", size, 32, cpu,
                         case_forward(workdir, size, args.seconds, datapath), anchor)
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _tracing_cost(workdir: str, sizes: list[int], seconds: float, cpu: str) -> int:
    """Forwarding and drain on the C path, tracing off and on, with their anchors."""
    if not kernels.use_c():
        print("device_datapath: --tracing measures the C data path, and the kernels are not loaded", file=sys.stderr)
        return 2
    for size in sizes:
        anchor = case_forward_anchor(workdir, size, seconds)["pps"]
        emit("fwd anchor: testpmd flowgen x2 <-> testpmd vhost x2 io", size, 32, cpu, {"pps": anchor}, anchor)
        os.sched_setaffinity(0, {0})
        for traced, what in ((0, "tracing off"), (1, "tracing on for one port"), (2, "tracing on for both ports"),
                             (0, "tracing off, again")):
            emit(f"fwd[c], {what}: testpmd flowgen x2 <-> our vhost-user x2 on one switch", size, 32, cpu,
                 case_forward(workdir, size, seconds, "c", traced), anchor)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        anchor = case_anchor(workdir, size, seconds)["pps"]
        emit("anchor: dpdk virtio-user txonly -> dpdk vhost rxonly", size, 32, cpu, {"pps": anchor}, anchor)
        os.sched_setaffinity(0, {0})
        for traced in (False, True, False):
            emit(f"dpdk->port[c], tracing {'on' if traced else 'off'}: dpdk virtio-user txonly -> our port -> sink",
                 size, 32, cpu, case_dpdk_to_port(workdir, size, seconds, "c", traced), anchor)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
