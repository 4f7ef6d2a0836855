"""UDP request/response rate: the MultiOS stack <-> the host kernel over a TAP
port, with the kernel <-> the kernel over a veth pair as the anchor, all in
one run.

Every case uses the same echo server (Python, the kernel's UDP sockets) in a
network namespace and one 64-byte request in flight at a time (batch 1): the
client sends, waits for the echo, sends the next, for --seconds, and counts
round trips per second. Cases:

  anchor         a Python client in namespace B -> veth -> the echo server in
                 namespace A (kernel <-> kernel; the same Python on both ends)
  stack-thread   the MultiOS Stack (this process) on its VirtioNetNic -> our
                 switch on a thread of this process -> TapPort -> the echo server
                 in namespace A (Python stack + Python switch, one GIL)
  stack-process  the same, with the switch as its own process (`mnet switch`),
                 as a user runs `mnet switch` + `mnet stack`
  loopback       a Python client and the echo server over namespace A's `lo`
                 (what Python's own UDP sockets cost, no NIC at all)

Cases run in --rounds rounds (each round runs every case once, so slow
phases of a noisy machine hit all of them); the figure is the median. Prints
one JSON line per case: round trips/s, packets/s (2 per round trip), bits/s
of those frames, p50/p99 round-trip time, the anchor's rate and the ratio
(of the medians, and per round against that round's anchor).
Root only (namespaces, TAP, veth); nothing leaves the namespaces.

    .venv/bin/python scripts/bench/udp_rr.py [--seconds 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from machine import cpu_model
from lab import Proc, add_tap, is_root, pick_cases, switch_process, veth_pair

from nicdev.net import netns as ns  # importable: lab.py puts the repository on sys.path

PAYLOAD = 64
FRAME_BYTES = 14 + 20 + 8 + PAYLOAD  # Ethernet + IPv4 + UDP + payload (no FCS)
PORT = 7777
SERVER_IP, CLIENT_IP, STACK_IP = "10.0.0.254", "10.0.0.1", "10.0.0.9"

ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"""

# The kernel-side client: the same loop as `rr_loop` below, on the kernel's sockets.
KERNEL_CLIENT = """
import json, socket, sys, time
dst, port, seconds, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
s.connect((dst, port))
msg = bytes(size)
for _ in range(100):                       # warm-up (ARP, caches)
    s.send(msg); s.recv(65535)
rtts = []
clock = time.perf_counter
start = clock(); end = start + seconds
while True:
    t0 = clock()
    if t0 >= end:
        break
    s.send(msg)
    if len(s.recv(65535)) != size:
        raise SystemExit("short echo")
    rtts.append(clock() - t0)
print(json.dumps({"count": len(rtts), "elapsed": clock() - start, "rtts": rtts}))
"""


def summarize(count: int, elapsed: float, rtts: list[float]) -> dict:
    rtts = sorted(rtts)
    return {"rr_per_s": count / elapsed,
            "p50_us": rtts[len(rtts) // 2] * 1e6 if rtts else None,
            "p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1e6 if rtts else None}


@contextlib.contextmanager
def echo_server(netns: str, ip: str):
    server = Proc(["ip", "netns", "exec", netns, sys.executable, "-c", ECHO_SERVER, ip, str(PORT)],
                  f"echo server at {ip}")
    try:
        server.ready(15)
        yield server
    finally:
        server.kill()


def kernel_client(netns: str, dst: str, seconds: float) -> dict:
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", KERNEL_CLIENT, dst, str(PORT),
                        str(seconds), str(PAYLOAD)], capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"kernel client failed: {r.stderr.strip()}")
    out = json.loads(r.stdout)
    return summarize(out["count"], out["elapsed"], out["rtts"])


def rr_loop(sock, seconds: float) -> dict:
    """The stack-side client: one 64-byte request in flight, for `seconds`."""
    msg = bytes(PAYLOAD)
    for _ in range(100):  # warm-up
        sock.send(msg)
        sock.recv(65535)
    rtts = []
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    while True:
        t0 = clock()
        if t0 >= end:
            break
        sock.send(msg)
        if len(sock.recv(65535)) != PAYLOAD:
            raise RuntimeError("short echo")
        rtts.append(clock() - t0)
    return summarize(len(rtts), clock() - start, rtts)


# -- the cases ------------------------------------------------------------------------------------

def case_anchor(seconds: float) -> dict:
    """Kernel to kernel over a veth pair between two namespaces."""
    with ns.temporary_netns("mnrr-a") as a, ns.temporary_netns("mnrr-b") as b:
        veth_pair((a, "rra", SERVER_IP), (b, "rrb", CLIENT_IP), 24)
        with echo_server(a, SERVER_IP):
            return kernel_client(b, SERVER_IP, seconds)


def case_loopback(seconds: float) -> dict:
    """Python's UDP sockets over a namespace's loopback."""
    with ns.temporary_netns("mnrr-lo") as a:
        ns.link_up("lo", netns=a)
        with echo_server(a, "127.0.0.1"):
            return kernel_client(a, "127.0.0.1", seconds)


def _stack_rr(sock_path: str, seconds: float) -> dict:
    from stack import IpAddress, Stack
    from stack.drivers import VirtioNetNic

    nic = VirtioNetNic(sock_path)
    try:
        with Stack(nic, f"{STACK_IP}/24") as st, st.socket() as sock:
            sock.set_timeout(2.0)
            sock.connect(IpAddress(SERVER_IP, PORT))
            result = rr_loop(sock, seconds)
            # every request was answered (rr_loop raises otherwise); show what the stack's UDP saw
            result["stack_udp"] = st.counters().get("udp", {})
            return result
    finally:
        nic.close()


def case_stack_thread(seconds: float, workdir: str) -> dict:
    """Stack -> VirtioNetNic -> our switch on a thread of this process -> TAP -> the kernel."""
    from nicdev.net.background import BackgroundSwitch
    from nicdev.net.vhost_user_port import VhostUserPort

    path = os.path.join(workdir, "rr-thread.sock")
    with ns.temporary_netns("mnrr-t") as a, BackgroundSwitch() as bg:
        bg.add_port(VhostUserPort("stack", path))
        add_tap(bg, "host", "mnrrt%d", a, f"{SERVER_IP}/24")
        with echo_server(a, SERVER_IP):
            return _stack_rr(path, seconds)


def case_stack_process(seconds: float, workdir: str) -> dict:
    """The same, with the switch in its own process (`mnet switch`)."""
    path = os.path.join(workdir, "rr-proc.sock")
    ifname = f"mnrrp{os.getpid() % 100000}"
    with ns.temporary_netns("mnrr-p") as a, \
            switch_process([f"stack=vhost-user:{path}", f"host=tap:{ifname},netns={a}"], [path], (ifname, a), 15):
        ns.set_address(ifname, f"{SERVER_IP}/24", netns=a)
        with echo_server(a, SERVER_IP):
            return _stack_rr(path, seconds)


CASES = {
    "anchor": ("kernel <-> kernel over veth (python client and echo server)", case_anchor),
    "stack-thread": ("MultiOS stack <-> kernel over TAP, switch on a thread of the stack's process",
                     case_stack_thread),
    "stack-process": ("MultiOS stack <-> kernel over TAP, switch in its own process (mnet switch)",
                      case_stack_process),
    "loopback": ("python <-> python UDP over the kernel's loopback", case_loopback),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case and round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the figure is the median (default 3)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    args = parser.parse_args()
    if not is_root("udp_rr.py"):
        return 2
    wanted = pick_cases(args.cases, CASES)
    if wanted is None:
        return 2
    samples: dict[str, list[dict]] = {c: [] for c in wanted}
    with tempfile.TemporaryDirectory(prefix="mnet-rr-") as workdir:
        for _ in range(args.rounds):
            for name in wanted:
                fn = CASES[name][1]
                samples[name].append(fn(args.seconds, workdir) if name.startswith("stack") else fn(args.seconds))
    cpu = f"{cpu_model()} x{os.cpu_count()}"
    anchor = statistics.median(s["rr_per_s"] for s in samples["anchor"])
    for name in wanted:
        runs = samples[name]
        rate = statistics.median(s["rr_per_s"] for s in runs)
        line = {
            "case": name, "what": CASES[name][0], "payload_bytes": PAYLOAD, "frame_bytes": FRAME_BYTES,
            "batch": 1, "rr_per_s": round(rate), "pps": round(2 * rate), "bits_per_s": round(2 * rate * FRAME_BYTES * 8),
            "p50_us": round(statistics.median(s["p50_us"] for s in runs), 1),
            "p99_us": round(statistics.median(s["p99_us"] for s in runs), 1),
            "anchor_rr_per_s": round(anchor), "ratio_to_anchor": round(rate / anchor, 4),
            "samples_rr_per_s": [round(s["rr_per_s"]) for s in runs],
            # the same round's anchor as the yardstick: steadier on a noisy machine
            "ratio_by_round": [round(s["rr_per_s"] / a["rr_per_s"], 4) for s, a in zip(runs, samples["anchor"])],
            "seconds": args.seconds, "rounds": args.rounds, "cpu": cpu,
        }
        if "stack_udp" in runs[-1]:
            line["stack_udp_last_round"] = runs[-1]["stack_udp"]
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
