"""Reliable file transfer over UDP (docs/filetransfer.md): how fast a file
crosses a lossy link with the MultiOS stack at one end, with the same
protocol between two kernels through the same link as the anchor, all in
one run.

One switch on a thread of this process with three ports:
  stack  vhost-user -> `mnet transfer` on a MultiOS stack (its own process)   10.0.0.9
  host   TAP into namespace A, impaired: --loss of the frames each way       10.0.0.254
  peer   TAP into namespace B, unimpaired                                   10.0.0.1
Cases (every round runs each once; the figure is the median):
  anchor         `mnet transfer send --kernel` in B -> `receive --kernel` in A
                 (the protocol in Python on kernel sockets; same lossy link)
  stack-kernel   `mnet transfer send` on the stack -> `receive --kernel` in A
  kernel-stack   `mnet transfer send --kernel` in A -> `receive` on the stack
Each line: MB/s of the sender's transfer time (from START to DONE; the
stack's start is not counted), datagrams sent and retransmitted, frames the
switch dropped, the anchor's MB/s and the ratio (of the medians, and per
round against that round's anchor). Root only (namespaces, TAP).

    .venv/bin/python scripts/bench/udp_file.py [--size 20] [--loss 5] [--window 256] [--rounds 1]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from machine import cpu_model, source_version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from nicdev.net import netns as ns  # noqa: E402

MNET = [sys.executable, "-m", "mnet.cli.main"]
STACK_IP, HOST_IP, PEER_IP = "10.0.0.9", "10.0.0.254", "10.0.0.1"
STACK_MAC = "52:54:00:00:09:19"
PORT = 6969
WAIT = 300.0
SUMMARY = re.compile(r"^sent \S+: (\d+) bytes in ([\d.]+) s .*?; (\d+) datagrams sent, (\d+) retransmitted, "
                     r"(\d+) timeouts; sha256 [0-9a-f]+ match$", re.M)


class Lab:
    def __init__(self, workdir: str, a: str, b: str, loss: float) -> None:
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.impair import ImpairedPort
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort
        from nicdev.virtio.impairment import Impairment

        self.workdir, self.a, self.b = workdir, a, b
        self.sock = os.path.join(workdir, "stack.sock")
        self.bg = BackgroundSwitch()
        try:
            self.bg.add_port(VhostUserPort("stack", self.sock))
            tap_a = TapPort("host", "mnfta%d", netns=a)
            self.host = self.bg.add_port(ImpairedPort(tap_a))
            tap_b = self.bg.add_port(TapPort("peer", "mnftb%d", netns=b))
            ns.set_address(tap_a.ifname, f"{HOST_IP}/24", netns=a)
            ns.set_address(tap_b.ifname, f"{PEER_IP}/24", netns=b)
            if loss:
                out, in_ = Impairment(loss=loss, seed=1), Impairment(loss=loss, seed=2)
                self.bg.call(lambda: self.host.set_impairments(out, in_))
        except BaseException:
            self.bg.close()
            raise

    def dropped(self) -> int:
        stats = self.bg.call(self.host.impairment_stats)
        return stats["out"]["impaired_dropped"] + stats["in"]["impaired_dropped"]

    def close(self) -> None:
        self.bg.close()


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def stack_opts(lab: Lab) -> list[str]:
    return ["--nic", f"vhost-user:{lab.sock}", "--ip", f"{STACK_IP}/24", "--mac", STACK_MAC]


def transfer(lab: Lab, path: str, window: int, sender: tuple, receiver: tuple) -> dict:
    """One file from `sender` to `receiver`, each (netns or None for the stack, extra options)."""
    inbox = tempfile.mkdtemp(dir=lab.workdir)
    rx_ns, rx_opts, rx_ip = receiver
    tx_ns, tx_opts, _ = sender
    rx = subprocess.Popen(in_netns(rx_ns, [*MNET, "transfer", "receive", "--port", str(PORT), "--dir", inbox,
                                           "--window", str(window), "--quiet", *rx_opts]),
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = rx.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"the receiver did not start: {line}{rx.stderr.read()}")
        before = lab.dropped()
        tx = subprocess.run(in_netns(tx_ns, [*MNET, "transfer", "send", path, "--to", f"{rx_ip}:{PORT}",
                                             "--window", str(window), "--quiet", *tx_opts]),
                            cwd=REPO, capture_output=True, text=True, timeout=WAIT)
        rx.wait(WAIT)
    finally:
        rx.kill()
        rx.wait()
    found = SUMMARY.search(tx.stdout)
    if tx.returncode != 0 or rx.returncode != 0 or found is None:
        raise RuntimeError(f"transfer failed: {tx.stdout}{tx.stderr}{rx.stderr.read()}")
    size, seconds, sent, again, timeouts = (float(x) for x in found.groups())
    return {"mb_per_s": size / seconds / 1e6, "seconds": seconds, "datagrams_sent": int(sent),
            "retransmitted": int(again), "timeouts": int(timeouts), "frames_dropped": lab.dropped() - before}


def cases(lab: Lab) -> dict:
    stack = (None, stack_opts(lab), STACK_IP)
    host = (lab.a, ["--kernel"], HOST_IP)
    peer = (lab.b, ["--kernel"], PEER_IP)
    return {
        "anchor": ("kernel -> kernel (the protocol on kernel sockets), through the lossy TAP port", peer, host),
        "stack-kernel": ("MultiOS stack -> kernel, through the lossy TAP port", stack, host),
        "kernel-stack": ("kernel -> MultiOS stack, through the lossy TAP port", host, stack),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=20.0, help="megabytes per transfer (default 20)")
    parser.add_argument("--loss", type=float, default=5.0, help="percent of frames lost each way (default 5)")
    parser.add_argument("--window", type=int, default=256, help="chunks in flight (default 256)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the figure is the median (default 1)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("udp_file.py needs root (network namespaces, TAP)", file=sys.stderr)
        return 2
    if not 0 <= args.loss < 100 or args.size <= 0 or args.rounds < 1:
        print("need 0 <= --loss < 100, --size > 0 and --rounds >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mnet-ftp-") as workdir, contextlib.ExitStack() as cleanup:
        path = os.path.join(workdir, "file.bin")
        with open(path, "wb") as f:
            f.write(random.Random(1).randbytes(int(args.size * 1e6)))
        a = cleanup.enter_context(ns.temporary_netns("mnft-a"))
        b = cleanup.enter_context(ns.temporary_netns("mnft-b"))
        lab = Lab(workdir, a, b, args.loss / 100)
        cleanup.callback(lab.close)
        table = cases(lab)
        samples = {name: [] for name in table}
        for _ in range(args.rounds):
            for name, (_, sender, receiver) in table.items():
                samples[name].append(transfer(lab, path, args.window, sender, receiver))
                time.sleep(0.5)  # let the switch's and the kernel's queues drain between cases
    anchor = statistics.median(s["mb_per_s"] for s in samples["anchor"])
    for name, runs in samples.items():
        rate = statistics.median(s["mb_per_s"] for s in runs)
        print(json.dumps({
            "case": name, "what": table[name][0], "megabytes": args.size, "loss_percent": args.loss,
            "window": args.window, "mb_per_s": round(rate, 2), "anchor_mb_per_s": round(anchor, 2),
            "ratio_to_anchor": round(rate / anchor, 3),
            "ratio_by_round": [round(s["mb_per_s"] / a["mb_per_s"], 3) for s, a in zip(runs, samples["anchor"])],
            "samples": runs, "rounds": args.rounds, "cpu": f"{cpu_model()} x{os.cpu_count()}",
            "source": source_version(),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
