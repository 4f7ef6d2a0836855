"""Guest to guest through our switch, with QEMU's own socket link as the anchor.

Two Linux guests (TCG, the image `mnet guest build` makes) are linked two ways
in one run:
  switch   guest A -- vhost-user -- [our virtio-net device, port a]
                                      switch (Python, a thread of this program)
           guest B -- vhost-user -- [our virtio-net device, port b]
  anchor   guest A (QEMU virtio-net, -netdev stream server) ==unix socket==
           guest B (QEMU virtio-net, -netdev stream client)          (no switch)
           (--anchor dgram: -netdev dgram, a unix datagram socket each way)

and measured the same way on both: iperf3 TCP for --seconds each direction
(`iperf3 -s -D` in B; `iperf3 -c B -J` and `iperf3 -c B -R -J` in A; the
receiver's figure), and busybox ping RTT (--pings, --interval apart) A->B and
B->A after an ARP warm-up. Prints one JSON line per case on stdout: the
figure, its units, the same figure for the anchor, ratio = ours / anchor,
sizes, CPU model; progress goes to stderr. With --rounds N the setups
alternate N times and each figure is the median.

--poll MODE,MODE... measures the switch once per polling mode of its ports
(the port spec's poll= values: off, adaptive, adaptive:T, busy; default:
the ports' default), one set of lines each, with the kicks the guests gave
per frame moved ("kicks"). --load N runs N busy processes (a CPU-bound
Python loop each, at normal priority) for the whole run, anchor included.
--tracing measures the switch three times instead: ring tracing off, on for
port a, and on for both ports (every record into a JSON lines file, as
`mnet switch --trace FILE` writes it); each line says `tracing_ports`.

    .venv/bin/python scripts/bench/guest_throughput.py [--seconds 10] [--rounds 1] [--anchor stream]
        [--poll off,adaptive,busy] [--load 1] [--tracing]

Needs QEMU and the guest image (built on first use, with progress lines; it
downloads Debian's kernel package). No root needed: all traffic stays inside
the two guests and unix sockets in a temporary directory.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# All imports up front: a broken tree fails now, not after the first setup ran.
from guest.errors import GuestError, GuestTimeout  # noqa: E402
from guest.image import build_image  # noqa: E402
from guest.wait import wait_in_guest  # noqa: E402
from nicdev.net.background import BackgroundSwitch  # noqa: E402
from nicdev.net.polling import DEFAULT_POLL  # noqa: E402
from nicdev.net.portspec import parse_poll  # noqa: E402
from nicdev.net.vhost_user_port import VhostUserPort  # noqa: E402
from nicdev.virtio.trace import JsonLinesWriter  # noqa: E402
from qemu.cmdline import NicConfig  # noqa: E402
from qemu.errors import QemuError  # noqa: E402
from qemu.launcher import find_qemu  # noqa: E402
from qemu.vm import VirtualMachine  # noqa: E402

A_IP, B_IP = "10.0.0.1", "10.0.0.2"
PREFIX = 24
IPERF_PORT = 5201
PING_PAYLOAD = 56           # busybox ping's default: 84-byte IP packets, 98-byte frames
MTU = 1500

SETUPS = {
    "switch": "our switch: each guest on a vhost-user port (our Python virtio-net device), "
              "L2 switch between them, on a thread of the benchmark process",
    "stream": "QEMU -netdev stream over a unix socket, QEMU's own virtio-net, no switch",
    "dgram": "QEMU -netdev dgram over unix datagram sockets, QEMU's own virtio-net, no switch",
}


def log(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says which and quotes the guest."""


class GuestPair:
    """Guests A and B linked by `setup`; started and ready after `__enter__`."""

    def __init__(self, setup: str, image, workdir: Path, memory_mb: int, boot_timeout: float,
                 poll=DEFAULT_POLL, traced: int = 0) -> None:
        self.setup = setup
        self.poll = poll
        self.traced = traced            # ports whose ring trace goes to a file
        self.writer = None
        self.image = image
        self.workdir = workdir
        self.memory_mb = memory_mb
        self.boot_timeout = boot_timeout
        self.bg = None
        self.vms = []

    def _vm(self, name: str, ip: str, nic):
        return VirtualMachine(name, self.image, nic=nic, ip=f"{ip}/{PREFIX}", workdir=self.workdir / name,
                              memory_mb=self.memory_mb, progress=log)

    def __enter__(self) -> "GuestPair":
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        try:
            if self.setup == "switch":
                self.bg = BackgroundSwitch()
                ports = [VhostUserPort(port, str(w / f"{port}.sock"), poll=self.poll) for port in ("a", "b")]
                for port in ports:
                    self.bg.add_port(port)
                if self.traced:
                    self.writer = writer = JsonLinesWriter(str(w / "trace.jsonl"))
                    self.bg.call(lambda: [p.tracer.add_sink(writer) for p in ports[:self.traced]])
                nics = (NicConfig("vhost-user", str(w / "a.sock")), NicConfig("vhost-user", str(w / "b.sock")))
            elif self.setup == "stream":
                # A listens, B connects: QEMU's stream client never retries, so A
                # must be listening (its QMP answers after the netdev is up) first.
                nics = (NicConfig("stream", str(w / "link.sock"), server=True),
                        NicConfig("stream", str(w / "link.sock")))
            else:
                nics = (NicConfig("dgram", str(w / "b.dgram"), local_path=str(w / "a.dgram")),
                        NicConfig("dgram", str(w / "a.dgram"), local_path=str(w / "b.dgram")))
            for name, ip, nic in (("bench-a", A_IP, nics[0]), ("bench-b", B_IP, nics[1])):
                vm = self._vm(name, ip, nic)
                self.vms.append(vm)
                vm.start()
            for vm in self.vms:
                vm.wait_ready(self.boot_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for vm in self.vms:
            vm.stop()
        if self.bg is not None:
            log(f"{self.label}: switch counters\n" + self.bg.summary())
            self.bg.close()
            self.bg = None
        if self.writer is not None:
            self.writer.close()
            log(f"{self.label}: {self.writer.records} trace records")

    @property
    def label(self) -> str:
        if self.setup != "switch":
            return self.setup
        return f"switch poll={self.poll}" + (f" trace={self.traced}" if self.traced else "")

    @property
    def a(self):
        return self.vms[0]

    @property
    def b(self):
        return self.vms[1]

    def switch_frames(self) -> int:
        """Frames the switch has delivered to both guests so far (0 for the anchor)."""
        if self.bg is None:
            return 0
        ports = self.bg.stats()["ports"]
        return sum(ports[p]["tx_frames"] for p in ("a", "b"))

    def device_counters(self) -> dict:
        """Kicks, calls and frames of both ports' devices, summed (empty for the anchor)."""
        if self.bg is None:
            return {}

        def read() -> dict:
            total = {"tx_kicks": 0, "rx_kicks": 0, "calls": 0, "tx_frames": 0, "rx_frames": 0,
                     "poll_turns": 0, "polls": 0}
            for name in ("a", "b"):
                device = self.bg.switch.ports[name].device
                c = device.counters
                for key in ("tx_kicks", "rx_kicks", "calls", "tx_frames", "rx_frames"):
                    total[key] += getattr(c, key)
                total["poll_turns"] += device.poller.counters.turns
                total["polls"] += device.poller.counters.polls
            return total
        return self.bg.call(read)

    def switch_drops(self) -> dict:
        """Each port's drop reasons so far (e.g. the guest had no RX buffers posted)."""
        if self.bg is None:
            return {}
        ports = self.bg.stats()["ports"]
        return {f"{p}: {reason}": n for p in ("a", "b") for reason, n in ports[p]["errors"].items()}


def run_checked(vm, command: str, timeout: float) -> str:
    r = vm.run(command, timeout=timeout)
    if r.status != 0:
        raise BenchError(f"{vm.name}: `{command}` failed with status {r.status}:\n{r.output.strip()}")
    return r.output


def ping_rtt(src, dst_ip: str, count: int, interval: float) -> dict:
    """busybox ping from `src`; min/avg/max RTT in ms and the loss."""
    deadline = int(count * interval + 15)
    out = run_checked(src, f"ping -c {count} -i {interval:g} -w {deadline} {shlex.quote(dst_ip)}", deadline + 20)
    counts = re.search(r"(\d+) packets transmitted, (\d+) packets received", out)
    rtt = re.search(r"min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    if not counts or not rtt:
        raise BenchError(f"{src.name}: cannot read ping's summary:\n{out}")
    return {"min_ms": float(rtt.group(1)), "avg_ms": float(rtt.group(2)), "max_ms": float(rtt.group(3)),
            "sent": int(counts.group(1)), "received": int(counts.group(2))}


def iperf3(pair: GuestPair, seconds: int, reverse: bool) -> dict:
    """TCP from A to B (B to A with `reverse`); the receiver's bit rate."""
    before, drops_before = pair.switch_frames(), pair.switch_drops()
    cpu0, wall0 = time.process_time(), time.monotonic()
    out = run_checked(pair.a, f"iperf3 -c {B_IP} -p {IPERF_PORT} -t {seconds} -J --connect-timeout 5000"
                              + (" -R" if reverse else ""), seconds + 90)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    frames = pair.switch_frames() - before
    try:
        report = json.loads(out)
        end = report["end"]
        received = end["sum_received"]
        result = {
            "bits_per_second": received["bits_per_second"],
            "sender_bits_per_second": end["sum_sent"]["bits_per_second"],
            "bytes": received["bytes"],
            "seconds": received["seconds"],
            # Full-size segments: the MSS less 12 bytes of TCP timestamps.
            "data_frames_per_second_est": received["bytes"] / (MTU - 52) / received["seconds"],
            "retransmits": end["sum_sent"].get("retransmits"),
            "cpu_sender_percent": end["cpu_utilization_percent"]["host_total" if not reverse else "remote_total"],
            "cpu_receiver_percent": end["cpu_utilization_percent"]["remote_total" if not reverse else "host_total"],
        }
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise BenchError(f"iperf3 gave no usable JSON ({exc!r}):\n{out[-2000:]}") from None
    if pair.bg is not None:
        # Every frame the switch delivered (data and ACKs, both guests), over
        # iperf3's own test time (the connection set-up adds a few frames).
        result["switch_frames"] = frames
        result["switch_frames_per_second"] = frames / received["seconds"]
        result["switch_drops"] = _delta(drops_before, pair.switch_drops())
        # This process is the switch (its other threads sleep): the share of
        # one CPU it used while iperf3 ran, connection set-up included.
        result["switch_cpu_percent"] = round(100 * cpu, 1)
    return result


def _delta(before: dict, after: dict) -> dict:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def with_kicks(pair: GuestPair, measure_case) -> dict:
    """`measure_case()`'s result and, through our switch, the guests' kicks
    (available-buffer notifications) and our calls during it, per frame moved."""
    before = pair.device_counters()
    result = measure_case()
    if before:
        delta = _delta(before, pair.device_counters())
        kicks = delta.get("tx_kicks", 0) + delta.get("rx_kicks", 0)
        frames = delta.get("tx_frames", 0) + delta.get("rx_frames", 0)
        result.update({f"dev_{k}": delta.get(k, 0) for k in before})
        result["kicks_per_frame"] = round(kicks / frames, 4) if frames else None
    return result


def measure(pair: GuestPair, args: argparse.Namespace) -> dict[str, dict]:
    a, b = pair.a, pair.b
    # ARP and the first-packet path warm: the RTT figures are steady state.
    run_checked(a, f"ping -c 2 -w 20 {B_IP}", 40)
    run_checked(b, f"ping -c 2 -w 20 {A_IP}", 40)
    results = {}
    log(f"{pair.label}: ping, {args.pings} each way")
    results["ping a->b"] = with_kicks(pair, lambda: ping_rtt(a, B_IP, args.pings, args.interval))
    results["ping b->a"] = with_kicks(pair, lambda: ping_rtt(b, A_IP, args.pings, args.interval))
    run_checked(b, f"iperf3 -s -D -p {IPERF_PORT}", 20)
    try:
        wait_in_guest(b, f"netstat -ltn | grep -q ':{IPERF_PORT} '", 20, "iperf3 server listening")
    except GuestTimeout as exc:
        raise BenchError(str(exc)) from None
    for case, reverse in (("tcp a->b", False), ("tcp b->a", True)):
        log(f"{pair.label}: iperf3 {case}, {args.seconds} s")
        results[case] = with_kicks(pair, lambda: iperf3(pair, args.seconds, reverse))
    return results


CASES = {
    "tcp a->b": ("bits_per_second", "bit/s", "higher"),
    "tcp b->a": ("bits_per_second", "bit/s", "higher"),
    "ping a->b": ("avg_ms", "ms", "lower"),
    "ping b->a": ("avg_ms", "ms", "lower"),
}


def median_result(runs: list[dict]) -> dict:
    """Per key, the median over rounds for numbers; other values (drop
    reasons) as a list with one entry per round, or the value if one round."""
    out = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs if r.get(key) is not None]
        if isinstance(value, (int, float)) and values:
            out[key] = statistics.median(values)
        else:
            out[key] = values if len(runs) > 1 else value
    return out


class BusyLoad:
    """`n` CPU-bound processes (a Python loop each, normal priority) while the block runs."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    @property
    def description(self) -> str:
        if not self.n:
            return "none"
        return f"{self.n} busy process{'es' if self.n > 1 else ''} (python3 -c 'while True: pass', nice 0)"

    def __enter__(self) -> "BusyLoad":
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def poll_modes(text: str) -> list:
    modes = []
    for item in text.split(","):
        try:
            modes.append(parse_poll(item))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return modes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 duration per direction (default 10)")
    ap.add_argument("--pings", type=int, default=20, help="pings per direction (default 20)")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between pings (default 0.2)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the setups N times, report medians")
    ap.add_argument("--anchor", choices=("stream", "dgram"), default="stream", help="QEMU's link (default stream)")
    ap.add_argument("--memory", type=int, default=256, metavar="MB", help="guest RAM (default 256)")
    ap.add_argument("--boot-timeout", type=float, default=240.0, metavar="SECONDS")
    ap.add_argument("--poll", type=poll_modes, default=[DEFAULT_POLL], metavar="MODE[,MODE...]",
                    help=f"our ports' poll modes to measure, each a setup (default {DEFAULT_POLL}: the default)")
    ap.add_argument("--load", type=int, default=0, metavar="N", help="N busy processes during the run (default 0)")
    ap.add_argument("--tracing", action="store_true",
                    help="the switch with ring tracing off, on for one port and on for both")
    args = ap.parse_args()
    if args.seconds < 1 or args.pings < 1 or args.interval <= 0 or args.rounds < 1 or args.load < 0:
        ap.error("--seconds, --pings, --rounds must be >= 1, --interval > 0, --load >= 0")


    try:
        find_qemu()
        log("guest image (built on first use; this downloads Debian's kernel package)")
        image = build_image(progress=lambda line: log(f"guest image: {line}"))
    except (GuestError, QemuError) as exc:
        print(f"guest_throughput: {exc}", file=sys.stderr)
        return 1

    # (label, setup, poll mode): the anchor first, then our switch per mode.
    # (label, setup, poll mode, traced ports): the anchor first, then our switch per mode or tracing.
    setups = [(args.anchor, args.anchor, DEFAULT_POLL, 0)]
    if args.tracing:
        setups += [(f"switch trace={t}", "switch", args.poll[0], t) for t in (0, 1, 2)]
    else:
        setups += [(f"switch poll={m}", "switch", m, 0) for m in args.poll]
    runs: dict[str, list[dict]] = {label: [] for label, _, _, _ in setups}
    started = time.monotonic()
    load = BusyLoad(args.load)
    with tempfile.TemporaryDirectory(prefix="mnet-bench-") as tmp, load:
        try:
            for round_no in range(args.rounds):
                for n, (label, setup, mode, traced) in enumerate(setups):
                    log(f"round {round_no + 1}/{args.rounds}: {label}: booting two guests (load: {load.description})")
                    with GuestPair(setup, image, Path(tmp) / f"{setup}{n}-{round_no}", args.memory,
                                   args.boot_timeout, poll=mode, traced=traced) as pair:
                        runs[label].append(measure(pair, args))
        except (BenchError, GuestError, QemuError) as exc:
            print(f"guest_throughput: {exc}", file=sys.stderr)
            return 1
    log(f"done in {time.monotonic() - started:.0f} s")
    anchor = {case: median_result([r[case] for r in runs[args.anchor]]) for case in CASES}
    for label, setup, mode, traced in setups[1:]:
        report(args, image, label, mode, load, runs[label], runs[args.anchor], anchor, traced)
    return 0


def report(args, image, label: str, mode, load: BusyLoad, mine_runs: list, anchor_runs: list, anchor: dict,
           traced: int = 0) -> None:
    """One JSON line per case for our switch with poll mode `mode`."""
    ours = {case: median_result([r[case] for r in mine_runs]) for case in CASES}
    common = {
        "bench": "guest_throughput",
        "setup": SETUPS["switch"],
        "anchor_setup": SETUPS[args.anchor],
        "cpu": cpu_model(),
        "host_cpus": os.cpu_count(),
        "guests": {"accel": "tcg", "vcpus": 1, "memory_mb": args.memory, "kernel": image.kernel_version,
                   "mtu": MTU},
        "rounds": args.rounds,
        "poll": str(mode),
        "poll_is_default": mode == DEFAULT_POLL,
        "load": load.description,
        "tracing_ports": traced,
        "source": source_version(),
    }
    for case, (key, units, better) in CASES.items():
        mine, theirs = ours[case], anchor[case]
        if case.startswith("tcp"):
            sizes = {"duration_s": args.seconds, "protocol": "TCP", "mss": MTU - 40,
                     "write_bytes": 131072, "streams": 1}
        else:
            sizes = {"count": args.pings, "interval_s": args.interval, "icmp_payload": PING_PAYLOAD,
                     "frame_bytes": PING_PAYLOAD + 8 + 20 + 14}
        line = {
            **common, "case": case, "figure": mine[key], "units": units, "better": better,
            "anchor": theirs[key], "ratio": round(mine[key] / theirs[key], 3) if theirs[key] else None,
            "sizes": sizes, "detail": mine, "anchor_detail": theirs,
            "rounds_figures": [r[case][key] for r in mine_runs],
            "rounds_anchor": [r[case][key] for r in anchor_runs],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
