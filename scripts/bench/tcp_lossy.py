"""TCP bulk throughput over an impaired link: the MultiOS stack's senders
(CUBIC, NewReno) against the Linux kernel's (CUBIC, BBR, Reno), over the
same link to the same receiver, all in one run.

The lab (our switch on a thread of this program):

  port "stack"  vhost-user -> a MultiOS Stack on its VirtioNetNic     10.0.0.9
  port "a"      TAP (vnet header) -> namespace A, the kernel sending  10.0.0.1
  port "b"      TAP (vnet header) -> namespace B, the kernel          10.0.0.2
                receiving, wrapped in an ImpairedPort: the bad link

Port b is impaired both ways (nicdev.net.impair): frames to the receiver
(the data) and frames from it (the ACKs), by default 2 % loss, 1 %
reordering, 1 % duplication, 0.5 % corruption and 5 ms delay each way
(10 ms round trip), as in tests/integration/test_tcp_kernel.py. Every
sender's data therefore meets the same impairments on the same wire into
the same kernel.

Senders:

  stack-cubic    the MultiOS stack in this process, SocketOption.CONGESTION "cubic"
  stack-newreno  the same, "newreno"
  linux-cubic    a Python program in namespace A, setsockopt(TCP_CONGESTION, "cubic")
                 (the anchor: every line carries its figure from the same run)
  linux-bbr      the same, "bbr"
  linux-reno     the same, "reno"

The receiver is one Python program in namespace B on the kernel's sockets,
alive for the whole run: it takes one connection at a time, hashes what
arrives and reports bytes, SHA-256 and the seconds from the first byte to
the end of the stream. That time is the figure (Mbit/s = bytes * 8 / s).
Each sender writes --mbytes in 1 MiB writes (a random block with the
write's number in front, so a misplaced write changes the hash), shuts
down its side and waits for the receiver's close. A transfer whose byte
count or SHA-256 differs from the sender's is a failure: it is reported
on stderr and in that sender's line, and the exit status is 1.

Before each transfer the impairments are set afresh with fixed seeds
(--seed + 2 * round for the data direction, + 1 for the ACKs), so within a
round every sender starts from the same random pattern, and the kernel's
TCP metrics cache (ssthresh and RTT remembered per destination) is flushed
in both namespaces, so no sender inherits what an earlier one learnt. The
order of the senders rotates from round to round.

Prints one JSON line per sender: Mbit/s (median over --rounds), the
anchor's Mbit/s, the ratio, each round's figure, retransmitted segments
(the stack's tcp_info; the kernel's TCP_INFO read by the sender program
after the transfer), and what the impairments did to that sender's frames.
Progress goes to stderr. Root only (namespaces, TAP); traffic stays in the
namespaces and the switch.

    .venv/bin/python scripts/bench/tcp_lossy.py [--mbytes 20] [--rounds 1] [--senders stack-cubic,linux-bbr,...]
                                        [--loss 0.02] [--delay 0.005] [--reorder 0.01] [--duplicate 0.01]
                                        [--corrupt 0.005]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
THIS = str(Path(__file__).resolve())

CHUNK = 1 << 20
PREFIX = 24
STACK_IP, A_IP, B_IP = "10.0.0.9", "10.0.0.1", "10.0.0.2"
STACK_MAC = "02:00:00:00:00:09"
PORT = 5001
ANCHOR = "linux-cubic"
# name -> (whose TCP, congestion control, what)
SENDERS = {
    "stack-cubic": ("multios", "cubic", "MultiOS stack, CUBIC (this process, vhost-user port)"),
    "stack-newreno": ("multios", "newreno", "MultiOS stack, NewReno (this process, vhost-user port)"),
    "linux-cubic": ("linux", "cubic", "Linux kernel, CUBIC (namespace A, TAP port)"),
    "linux-bbr": ("linux", "bbr", "Linux kernel, BBR (namespace A, TAP port)"),
    "linux-reno": ("linux", "reno", "Linux kernel, Reno (namespace A, TAP port)"),
}
WARMUP_BYTES = 1_000_000


def log(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


def pattern(total: int):
    """`total` bytes in 1 MiB writes: a random block with the write's number in front."""
    block = bytearray(os.urandom(CHUNK))
    sent, i = 0, 0
    while sent < total:
        block[:8] = i.to_bytes(8, "big")
        chunk = bytes(block[:min(CHUNK, total - sent)])
        yield chunk
        sent += len(chunk)
        i += 1


# =====================================================================================================
# Programs run in the namespaces (this file again, on the kernel's sockets).
# =====================================================================================================

def receiver_main(argv: list[str]) -> int:
    """`--receiver IP PORT TIMEOUT`: print "ready", then one JSON line per
    connection (bytes, sha256, seconds, peer), one connection at a time,
    until stdin ends."""
    ip, port, timeout = argv[0], int(argv[1]), float(argv[2])
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((ip, port))
    lst.listen(4)
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([lst, sys.stdin], [], [])
        if sys.stdin in readable and not sys.stdin.readline():
            return 0                          # the benchmark is done with us
        if lst not in readable:
            continue
        conn, peer = lst.accept()
        conn.settimeout(timeout)
        h, n, t0 = hashlib.sha256(), 0, None
        result = {"peer": f"{peer[0]}:{peer[1]}"}
        try:
            while data := conn.recv(CHUNK):
                if t0 is None:
                    t0 = time.monotonic()
                n += len(data)
                h.update(data)
            result.update(bytes=n, sha256=h.hexdigest(), seconds=time.monotonic() - (t0 or time.monotonic()))
        except OSError as exc:                # a stalled sender: say so, and serve the next one
            result.update(bytes=n, error=f"receive failed after {n} bytes: {exc!r}")
        print(json.dumps(result), flush=True)
        conn.close()


# struct tcp_info (linux/tcp.h) up to tcpi_reord_seen: 8 one-byte fields,
# rto .. total_retrans (24 x u32), pacing_rate .. bytes_received (4 x u64),
# segs_out .. data_segs_out (6 x u32), delivery_rate .. sndbuf_limited
# (4 x u64), delivered, delivered_ce, bytes_sent, bytes_retrans,
# dsack_dups, reord_seen; then (Linux 6.7 on) rcv_ooopack .. total_rto_time,
# read only when the kernel fills them in.
TCP_INFO = struct.Struct("=8B24I4Q6I4Q2I2Q2I")
TCP_INFO_RTO = struct.Struct("=4I2HI")
TCP_INFO_RTO_FIELDS = ("rcv_ooopack", "snd_wnd", "rcv_wnd", "rehash", "total_rto", "total_rto_recoveries",
                       "total_rto_time")
TCP_INFO_FIELDS = ("state ca_state retransmits probes backoff options wscale app_limited "
                   "rto ato snd_mss rcv_mss unacked sacked lost retrans fackets "
                   "last_data_sent last_ack_sent last_data_recv last_ack_recv "
                   "pmtu rcv_ssthresh rtt rttvar snd_ssthresh snd_cwnd advmss reordering rcv_rtt rcv_space "
                   "total_retrans pacing_rate max_pacing_rate bytes_acked bytes_received "
                   "segs_out segs_in notsent_bytes min_rtt data_segs_in data_segs_out "
                   "delivery_rate busy_time rwnd_limited sndbuf_limited delivered delivered_ce "
                   "bytes_sent bytes_retrans dsack_dups reord_seen").split()


def kernel_sender_main(argv: list[str]) -> int:
    """`--kernel-sender IP PORT BYTES CONGESTION TIMEOUT`: send, wait for the
    receiver's close, print one JSON line (bytes, sha256, the congestion
    control in use, TCP_INFO's counters)."""
    ip, port, total, cc, timeout = argv[0], int(argv[1]), int(argv[2]), argv[3], float(argv[4])
    s = socket.socket()
    # Per socket: the namespace's default (this host's: bbr) stays as it is.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    in_use = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0", 1)[0].decode()
    if in_use != cc:
        print(f"TCP_CONGESTION is {in_use!r}, not {cc!r}", file=sys.stderr)
        return 1
    s.settimeout(timeout)
    s.connect((ip, port))
    local = "%s:%d" % s.getsockname()
    h, sent = hashlib.sha256(), 0
    for chunk in pattern(total):
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):                      # the receiver closes once it has everything
        pass
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO.size + TCP_INFO_RTO.size)
    s.close()
    info = dict(zip(TCP_INFO_FIELDS, TCP_INFO.unpack_from(raw)))
    keep = ["total_retrans", "bytes_retrans", "data_segs_out", "lost", "min_rtt", "rtt", "snd_cwnd", "snd_mss",
            "reord_seen", "dsack_dups"]
    if len(raw) >= TCP_INFO.size + TCP_INFO_RTO.size:
        info.update(zip(TCP_INFO_RTO_FIELDS, TCP_INFO_RTO.unpack_from(raw, TCP_INFO.size)))
        keep += ["total_rto", "total_rto_time"]
    print(json.dumps({"bytes": sent, "sha256": h.hexdigest(), "congestion": in_use, "local": local,
                      "tcp_info": {k: info[k] for k in keep}}), flush=True)
    return 0


# =====================================================================================================
# The driver.
# =====================================================================================================

class BenchError(Exception):
    """A step failed; the message says which."""


class Receiver:
    """The receiver program in namespace B; a thread turns its output into a queue of lines."""

    def __init__(self, netns: str, timeout: float) -> None:
        self.p = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, THIS, "--receiver", B_IP, str(PORT),
                                   str(timeout)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, name="receiver-output", daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)                  # ended

    def line(self, timeout: float, what: str) -> str:
        try:
            text = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"receiver: no {what} within {timeout:.0f} s") from None
        if text is None:
            self.p.wait(10)
            raise BenchError(f"receiver ended (status {self.p.returncode}): {self.p.stderr.read().strip()[-2000:]}")
        return text

    def result(self, peer: str, timeout: float) -> dict:
        """The report on the connection from `peer` ("ip:port"); reports on
        others (left by an earlier transfer that failed) are passed over."""
        while True:
            out = json.loads(self.line(timeout, f"report on the connection from {peer}"))
            if out["peer"] == peer:
                break
            log(f"receiver: passing over its report on an earlier connection: {out}")
        if "error" in out:
            raise BenchError(f"receiver: {out['error']}")
        return out

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()              # its signal to end
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)


class Lab:
    """The switch with its three ports, the two namespaces, the stack, the receiver."""

    def __init__(self, workdir: Path, timeout: float) -> None:
        self.workdir, self.timeout = workdir, timeout
        self.netns_ctx: list = []
        self.bg = self.port_b = self.stack = self.nic = self.receiver = None

    def __enter__(self) -> "Lab":
        try:
            self._setup()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ns(self, prefix: str) -> str:
        from nicdev.net.netns import temporary_netns

        ctx = temporary_netns(prefix)
        name = ctx.__enter__()
        self.netns_ctx.append(ctx)
        return name

    def _setup(self) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.impair import ImpairedPort
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort
        from stack import Stack
        from stack.arp_cache import ArpCache
        from stack.drivers import VirtioNetNic

        self.ns_a, self.ns_b = self._ns("mntl-a"), self._ns("mntl-b")
        self.bg = BackgroundSwitch()
        sock = str(self.workdir / "stack.sock")
        self.bg.add_port(VhostUserPort("stack", sock))
        tap_a = self.bg.add_port(TapPort("a", "mntla%d", netns=self.ns_a, vnet_hdr=True))
        tap_b = TapPort("b", "mntlb%d", netns=self.ns_b, vnet_hdr=True)
        self.port_b = self.bg.add_port(ImpairedPort(tap_b))
        for tap, where, ip in ((tap_a, self.ns_a, A_IP), (tap_b, self.ns_b, B_IP)):
            ns.set_address(tap.ifname, f"{ip}/{PREFIX}", netns=where)
            ns.link_up("lo", netns=where)
        self.nic = VirtioNetNic(sock, mac=STACK_MAC, timeout=10.0)
        # ARP requests retried every 0.5 s: one lost to the impairments costs little.
        self.stack = Stack(self.nic, f"{STACK_IP}/{PREFIX}", arp_cache=ArpCache(retry_interval=0.5)).start()
        self.receiver = Receiver(self.ns_b, self.timeout)
        ready = self.receiver.line(30, "ready line")
        if ready != "ready":
            raise BenchError(f"receiver: expected 'ready', got {ready!r}")

    def impair(self, link: dict | None, seed: int = 0) -> None:
        from nicdev.virtio.impairment import Impairment

        if link is None:
            self.bg.call(lambda: self.port_b.set_impairments(None, None))
            return
        out, in_ = Impairment(**link, seed=seed), Impairment(**link, seed=seed + 1)
        self.bg.call(lambda: self.port_b.set_impairments(out, in_))

    def impair_counters(self) -> dict:
        c = self.bg.call(lambda: {k: v.as_dict() for k, v in self.port_b.impair_counters.items()})
        return {"data": c["out"], "acks": c["in"]}

    def flush_tcp_metrics(self) -> None:
        for where in (self.ns_a, self.ns_b):
            r = subprocess.run(["ip", "netns", "exec", where, "ip", "tcp_metrics", "flush", "all"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                raise BenchError(f"ip tcp_metrics flush in {where}: {r.stderr.strip()}")

    def __exit__(self, *exc) -> None:
        try:
            if self.receiver is not None:
                self.receiver.close()
            if self.stack is not None:
                log(f"stack tcp counters: {self.stack.counters().get('tcp', {})}")
                self.stack.stop()
            if self.nic is not None:
                self.nic.close()
            if self.bg is not None:
                log(self.bg.summary().replace("\n", "\n# "))
                self.bg.close()
        finally:
            for ctx in reversed(self.netns_ctx):
                ctx.__exit__(None, None, None)


def stack_send(lab: Lab, cc: str, total: int, timeout: float) -> dict:
    from stack import IpAddress, Shutdown, SocketOption, SocketType

    with lab.stack.socket(SocketType.STREAM) as s:
        s.set_option(SocketOption.CONGESTION, cc)
        s.set_timeout(timeout)
        s.connect(IpAddress(B_IP, PORT))
        local = f"{STACK_IP}:{s.local_address().port}"
        h, sent = hashlib.sha256(), 0
        for chunk in pattern(total):
            s.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
        s.shutdown(Shutdown.WRITE)
        while s.recv(65536):                  # the receiver closes once it has everything
            pass
        info = s.tcp_info()
    if info.congestion != cc:
        raise BenchError(f"the stack's connection used {info.congestion!r}, not {cc!r}")
    return {"bytes": sent, "sha256": h.hexdigest(), "local": local, "retransmits": info.retransmits,
            "tcp_info": {"retransmits": info.retransmits, "fast_retransmits": info.fast_retransmits,
                         "rto_timeouts": info.timeouts, "segs_out": info.segs_out, "lost": info.lost,
                         "srtt_ms": round(info.srtt * 1000, 2) if info.srtt is not None else None,
                         "cwnd": info.cwnd, "snd_mss": info.snd_mss}}


def kernel_send(lab: Lab, cc: str, total: int, timeout: float) -> dict:
    argv = ["ip", "netns", "exec", lab.ns_a, sys.executable, THIS, "--kernel-sender", B_IP, str(PORT), str(total),
            cc, str(timeout)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout * 2 + 30, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        raise BenchError(f"kernel sender ({cc}) did not finish within {timeout * 2 + 30:.0f} s") from None
    if r.returncode != 0 or not r.stdout.strip():
        raise BenchError(f"kernel sender ({cc}) failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ti = out["tcp_info"]
    out["retransmits"] = ti["total_retrans"]
    ti["min_rtt_ms"] = round(ti.pop("min_rtt") / 1000, 2)     # the kernel reports microseconds
    ti["srtt_ms"] = round(ti.pop("rtt") / 1000, 2)
    ti["rto_timeouts"] = ti.pop("total_rto", None)             # None: a kernel before 6.7 does not count them
    if "total_rto_time" in ti:
        ti["rto_time_ms"] = ti.pop("total_rto_time")
    return out


def transfer(lab: Lab, name: str, total: int, timeout: float, link: dict | None, seed: int) -> dict:
    """One verified transfer from sender `name` to the receiver over the link as `link` says."""
    tcp, cc, _ = SENDERS[name]
    lab.flush_tcp_metrics()
    lab.impair(link, seed)
    before = lab.impair_counters()
    sent = (stack_send if tcp == "multios" else kernel_send)(lab, cc, total, timeout)
    got = lab.receiver.result(sent["local"], 30)
    after = lab.impair_counters()
    if got["bytes"] != total or sent["bytes"] != total or got["sha256"] != sent["sha256"]:
        raise BenchError(f"{name}: DATA MISMATCH: sent {sent['bytes']} bytes sha256 {sent['sha256']}, "
                         f"received {got['bytes']} bytes sha256 {got['sha256']}")
    return {"bytes": total, "seconds": got["seconds"], "mbit_per_s": total * 8 / got["seconds"] / 1e6,
            "retransmits": sent["retransmits"], "rto_timeouts": sent["tcp_info"]["rto_timeouts"],
            "tcp_info": sent["tcp_info"],
            "impaired": {way: {k: after[way][k] - before[way][k] for k in after[way]} for way in after}}


def run_rounds(lab: Lab, args, wanted: list[str], link: dict, total: int, samples: dict, errors: dict) -> None:
    """The warm-up, then every sender once per round; a sender that fails once is left out after."""
    # Unimpaired warm-up: ARP is resolved everywhere and the path is known to work.
    for name in ("stack-cubic", "linux-cubic"):
        s = transfer(lab, name, WARMUP_BYTES, 30, None, 0)
        log(f"warm-up {name}, clean link: {s['mbit_per_s']:.0f} Mbit/s")
    for r in range(args.rounds):
        order = wanted[r % len(wanted):] + wanted[:r % len(wanted)]
        for name in order:
            if name in errors:
                continue
            log(f"round {r + 1}/{args.rounds}: {name}")
            try:
                s = transfer(lab, name, total, args.timeout, link, args.seed + 2 * r)
            except (BenchError, OSError) as exc:
                errors[name] = str(exc)
                log(f"  FAILED: {exc}")
                continue
            log(f"  {s['mbit_per_s']:.2f} Mbit/s in {s['seconds']:.1f} s, {s['retransmits']} retransmits "
                f"({s['rto_timeouts']} RTO), impaired data {s['impaired']['data']}")
            samples[name].append(s)
        lab.impair(None)


def link_text(link: dict) -> str:
    parts = [f"{k} {link[k] * 100:g}%" for k in ("loss", "reorder", "duplicate", "corrupt") if link[k]]
    if link["delay"]:
        parts.append(f"delay {link['delay'] * 1000:g} ms")
    return (", ".join(parts) or "nothing") + " each way (data and ACKs), on the receiver's port"


class OneLineParser(argparse.ArgumentParser):
    """A bad argument is one line on stderr (what was wrong and where to look), status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def bounded(convert, low, high, what: str):
    """An argparse type: ``convert(text)`` within [low, high], else one clear line."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if convert is int else 'a number'}") \
                from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


fraction = bounded(float, 0.0, 1.0, "a fraction from 0 to 1 (0.02 = 2 %)")
seconds = bounded(float, 0.0, 10.0, "a delay from 0 to 10 seconds")
positive = bounded(int, 1, float("inf"), "at least 1")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--receiver"]:
        return receiver_main(argv[1:])
    if argv[:1] == ["--kernel-sender"]:
        try:
            return kernel_sender_main(argv[1:])
        except OSError as exc:                # one line for the benchmark's report
            print(f"sending failed: {exc!r}", file=sys.stderr)
            return 1
    parser = OneLineParser(prog="tcp_lossy.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", default=",".join(SENDERS),
                        help=f"comma-separated subset of {','.join(SENDERS)} ({ANCHOR}, the anchor, always runs)")
    parser.add_argument("--mbytes", type=positive, default=20, help="MB per transfer (default 20)")
    parser.add_argument("--rounds", type=positive, default=1, help="rounds; figures are medians (default 1)")
    parser.add_argument("--loss", type=fraction, default=0.02, help="fraction of frames lost (default 0.02)")
    parser.add_argument("--reorder", type=fraction, default=0.01,
                        help="fraction of frames sent after the next one (default 0.01)")
    parser.add_argument("--duplicate", type=fraction, default=0.01,
                        help="fraction of frames sent twice (default 0.01)")
    parser.add_argument("--corrupt", type=fraction, default=0.005,
                        help="fraction of frames with one bit flipped (default 0.005)")
    parser.add_argument("--delay", type=seconds, default=0.005, help="seconds of delay each way (default 0.005)")
    parser.add_argument("--seed", type=int, default=1, help="first impairment seed (default 1)")
    parser.add_argument("--timeout", type=positive, default=300,
                        help="seconds a transfer may stall (per socket call) before it fails (default 300)")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.senders.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SENDERS]
    if unknown or not wanted:
        parser.error(f"unknown sender(s) {','.join(unknown) or '(none given)'}; choose from {','.join(SENDERS)}")
    if os.geteuid() != 0:
        print("tcp_lossy.py needs root (network namespaces, TAP)", file=sys.stderr)
        return 2
    if ANCHOR not in wanted:
        wanted.insert(0, ANCHOR)              # every line carries the anchor of the same run
    wanted = list(dict.fromkeys(wanted))
    link = {"loss": args.loss, "reorder": args.reorder, "duplicate": args.duplicate, "corrupt": args.corrupt,
            "delay": args.delay}
    total = args.mbytes * 1_000_000
    samples: dict[str, list[dict]] = {s: [] for s in wanted}
    errors: dict[str, str] = {}
    log(f"link: {link_text(link)}; {args.mbytes} MB per transfer; senders {', '.join(wanted)}")
    try:
        with tempfile.TemporaryDirectory(prefix="mnet-tcpl-") as workdir, Lab(Path(workdir), args.timeout) as lab:
            run_rounds(lab, args, wanted, link, total, samples, errors)
    except BenchError as exc:                  # the lab or the warm-up failed: nothing to compare
        print(f"tcp_lossy.py: {exc}", file=sys.stderr)
        return 1
    cpu = f"{cpu_model()} x{os.cpu_count()}"
    version = source_version()
    anchor_runs = samples[ANCHOR]
    anchor = statistics.median(s["mbit_per_s"] for s in anchor_runs) if anchor_runs else None
    for name in wanted:
        tcp, cc, what = SENDERS[name]
        runs = samples[name]
        line = {"sender": name, "tcp": tcp, "congestion": cc, "what": what, "link": link_text(link),
                "bytes": total, "write_bytes": CHUNK, "rounds": len(runs), "source": version, "cpu": cpu}
        if name in errors:
            line["error"] = errors[name]
        if runs:
            figure = statistics.median(s["mbit_per_s"] for s in runs)
            line.update({"mbit_per_s": round(figure, 2), "anchor": ANCHOR,
                         "anchor_mbit_per_s": round(anchor, 2) if anchor else None,
                         "ratio_to_anchor": round(figure / anchor, 3) if anchor else None,
                         "per_round": [round(s["mbit_per_s"], 2) for s in runs],
                         "seconds_per_round": [round(s["seconds"], 2) for s in runs],
                         "retransmits": statistics.median(s["retransmits"] for s in runs),
                         "retransmits_per_round": [s["retransmits"] for s in runs],
                         "rto_timeouts_per_round": [s["rto_timeouts"] for s in runs],
                         "tcp_info_last_round": runs[-1]["tcp_info"],
                         "impaired_frames": {way: {k: sum(s["impaired"][way][k] for s in runs)
                                                   for k in runs[0]["impaired"][way]} for way in ("data", "acks")},
                         "timed_by": "receiver (first byte to end of stream)", "sha256": "verified"})
        print(json.dumps(line), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
