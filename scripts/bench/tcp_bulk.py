"""TCP bulk throughput and request/response rate of the MultiOS stack, with
the Linux kernel <-> kernel over a veth pair as the anchor, all in one run.

Cases (side a first, side b second):

  anchor        namespace A -- veth -- namespace B: the kernel's TCP at both
                ends (the same Python endpoint program as every other case)
  stack-kernel  a MultiOS stack (its own process, VirtioNetNic) -- vhost-user --
                our switch -- TAP with the kernel's offloads (vnet header) --
                the kernel in a namespace
  stack-stack   a MultiOS stack -- vhost-user -- our switch -- vhost-user --
                another MultiOS stack (two processes)
  stack-guest   a MultiOS stack -- vhost-user -- our switch -- vhost-user --
                a Linux guest under QEMU (TCG, 1 vCPU): socat (or busybox nc,
                --guest-tool nc) for bulk data, socat as the echo server

Each case runs three tests:

  bulk a->b, bulk b->a   one connection moving --mbytes (--anchor-mbytes for
                the anchor, --guest-mbytes with the guest) in 1 MiB writes;
                the figure is bytes * 8 / time, timed by the receiver from the
                first byte to the end of the stream (by the sender from
                connect to the receiver's close when the receiver is busybox)
  rr            one 64-byte request in flight at a time (TCP_NODELAY), the
                client on side a, an echo server on side b, for --seconds;
                round trips per second

Our switch runs on a thread of this program (`--switch process`: as its own
process, `mnet switch`, as a user runs it; stack-kernel and stack-stack only);
side a's stack runs on a thread beside it unless `--stack process` (the second
stack of stack-stack is always a process: `tcp_bulk.py --endpoint stack:...`,
as a user runs `mnet stack`), started per test. `--switch process --stack
process` is the path a user runs: `mnet switch` and `mnet stack` as separate
processes. The kernel's endpoints are the same program
with `--endpoint kernel`, run in a namespace. Offloads: the stack's NIC
negotiates checksum and TCP segmentation offloads with our device (CSUM,
GUEST_CSUM, HOST_TSO4, GUEST_TSO4) and the TAP port passes them to the kernel;
`--offloads off` turns all of them off. Every line says what was negotiated
(and, for a stack, its average frame size: above 1514 bytes means TSO frames).

Prints one JSON line per case and test: the figure, the anchor's figure from
the same run, the ratio, each round's figure. With --rounds N every case and
test runs N times (interleaved) and the figure is the median. Progress goes
to stderr. Root only (namespaces, TAP, veth); traffic stays in the
namespaces, the switch and the guest.

    .venv/bin/python scripts/bench/tcp_bulk.py [--rounds 1] [--mbytes 100] [--cases anchor,stack-kernel,...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from machine import cpu_model, source_version
from lab import BenchError, Proc, add_tap, is_root, pick_cases, switch_process, veth_pair
from tcp_endpoint import CHUNK, OFFLOAD_BITS, RR_SIZE, StackNet, endpoint_main, run_role

THIS = str(Path(__file__).resolve())

PREFIX = 24
A_IP, B_IP = "10.1.0.1", "10.1.0.2"                 # the anchor's two namespaces
STACK_IP, STACK2_IP, HOST_IP, VM_IP = "10.0.0.9", "10.0.0.10", "10.0.0.254", "10.0.0.1"
STACK_MAC, STACK2_MAC = "02:00:00:00:00:09", "02:00:00:00:00:0a"   # fixed: the peers' ARP caches stay right
BULK_PORT, RR_PORT = 5001, 5002


def log(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


class InProc:
    """An endpoint role on a thread of this program (the stack beside the
    switch's thread, as in the tests), with Proc's interface."""

    def __init__(self, make_net, role: str, args: list, verify: bool, what: str) -> None:
        import queue
        import threading

        self.what = what
        self.lines: queue.Queue = queue.Queue()
        self.error: BaseException | None = None

        def body() -> None:
            try:
                run_role(make_net(), role, [str(a) for a in args], verify, self.lines.put)
            except BaseException as exc:        # handed to the waiting thread
                self.error = exc
                self.lines.put(None)

        self.thread = threading.Thread(target=body, name=what, daemon=True)
        self.thread.start()

    def line(self, timeout: float) -> str:
        import queue

        try:
            text = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.what}: no output within {timeout:.0f} s") from None
        if text is None:
            raise BenchError(f"{self.what}: {self.error!r}")
        return text

    def ready(self, timeout: float = 30.0) -> None:
        text = self.line(timeout)
        if text != "ready":
            raise BenchError(f"{self.what}: expected 'ready', got {text!r}")

    def result(self, timeout: float) -> dict:
        out = json.loads(self.line(timeout))
        self.thread.join(30)
        return out

    def kill(self) -> None:
        # A role thread ends by its own timeouts; the stack it made is stopped in run_role.
        self.thread.join(0)


class Side:
    """How to run an endpoint role on one side of a case: `kind` is kernel
    (a process in `netns`), stack (a process of its own) or stack-thread (a
    thread of this program)."""

    def __init__(self, kind: str, ip: str, *, netns: str | None = None, path: str | None = None,
                 mac: str | None = None, offloads: bool = True, verify: bool = False) -> None:
        self.kind, self.ip, self.netns, self.path, self.mac = kind, ip, netns, path, mac
        self.offloads, self.verify = offloads, verify

    def start(self, role: str, *args) -> "Proc | InProc":
        if self.kind == "stack-thread":
            return InProc(lambda: StackNet(self.path, f"{self.ip}/{PREFIX}", self.mac, self.offloads), role,
                          list(args), self.verify, f"stack {role} at {self.ip} (thread)")
        common = ["--offloads", "on" if self.offloads else "off"] + (["--verify"] if self.verify else [])
        if self.kind == "kernel":
            argv = ["ip", "netns", "exec", self.netns, sys.executable, THIS, "--endpoint", "kernel"]
        else:
            argv = [sys.executable, THIS, "--endpoint", f"stack:{self.path},{self.ip}/{PREFIX},{self.mac}"]
        return Proc(argv + common + [role, *map(str, args)], f"{self.kind} {role} at {self.ip}")


class GuestSide:
    """busybox nc / socat in a guest as side b."""

    def __init__(self, vm, ip: str) -> None:
        self.vm, self.ip = vm, ip

    def run(self, command: str, timeout: float = 60) -> str:
        r = self.vm.run(command, timeout=timeout)
        if r.status != 0:
            raise BenchError(f"guest: {command!r} failed ({r.status}): {r.output.strip()[-500:]}")
        return r.output

    def wait_listening(self, port: int) -> None:
        from guest.wait import wait_in_guest

        wait_in_guest(self.vm, f"netstat -ltn | grep -q ':{port} '", 20, f"a listener on {port}")

    def offloads(self) -> list[str]:
        from nicdev.virtio.features import describe

        out = self.run("for d in /sys/bus/virtio/devices/*; do "
                       "[ \"$(cat $d/device)\" = 0x0001 ] && cat $d/features; done; true")
        bits = out.strip().splitlines()[0] if out.strip() else ""
        word = sum(1 << i for i, c in enumerate(bits) if c == "1")
        return [n for n in describe(word) if n in OFFLOAD_BITS]


def bulk(sender: Side, receiver: Side, total: int, timeout: float) -> dict:
    rx = receiver.start("recv", BULK_PORT, timeout)
    try:
        rx.ready()
        tx = sender.start("send", receiver.ip, BULK_PORT, total, timeout)
        try:
            sent = tx.result(timeout + 30)
        finally:
            tx.kill()
        got = rx.result(30)
    finally:
        rx.kill()
    if got["bytes"] != total or sent["bytes"] != total or got["sha256"] != sent["sha256"]:
        raise BenchError(f"bulk {sender.ip} -> {receiver.ip}: sent {sent['bytes']}, got {got['bytes']} bytes, "
                         f"hashes {sent['sha256']} / {got['sha256']}")
    return {"bytes": total, "seconds": got["seconds"], "timed_by": "receiver",
            "gbit_per_s": total * 8 / got["seconds"] / 1e9, "sender": sent["net"], "receiver": got["net"]}


def rr(client: Side, server: Side, seconds: float, timeout: float) -> dict:
    srv = server.start("echo", RR_PORT, timeout)
    try:
        srv.ready()
        cl = client.start("rr", server.ip, RR_PORT, seconds, timeout)
        try:
            out = cl.result(seconds + timeout)
        finally:
            cl.kill()
        srv.result(30)
    finally:
        srv.kill()
    return {"rr_per_s": out["rr_per_s"], "p50_us": out["p50_us"], "p99_us": out["p99_us"], "client": out["net"]}


# What moves the bytes in the guest. busybox nc copies through a small
# buffer, so under TCG the guest's system calls limit it; socat with 256 KiB
# blocks shows what the path itself carries.
GUEST_SEND = {"nc": "nc {ip} {port}", "socat": "socat -u -b 262144 - TCP:{ip}:{port}"}
GUEST_RECV = {"nc": "nc -l -p {port} < /tmp/b.fifo", "socat": "socat -u -b 262144 TCP-LISTEN:{port},reuseaddr -"}


def guest_bulk_to_stack(guest: GuestSide, stack: Side, total: int, timeout: float, tool: str) -> dict:
    rx = stack.start("recv", BULK_PORT, timeout)
    try:
        rx.ready()
        send = GUEST_SEND[tool].format(ip=stack.ip, port=BULK_PORT)
        guest.run(f"dd if=/dev/zero bs=65536 count={total // 65536} 2>/dev/null | {send}", timeout=timeout)
        got = rx.result(30)
    finally:
        rx.kill()
    if got["bytes"] != total:
        raise BenchError(f"guest -> stack: sent {total}, got {got['bytes']} bytes")
    return {"bytes": total, "seconds": got["seconds"], "timed_by": "receiver",
            "gbit_per_s": total * 8 / got["seconds"] / 1e9, "receiver": got["net"]}


def stack_bulk_to_guest(stack: Side, guest: GuestSide, total: int, timeout: float, tool: str) -> dict:
    # busybox nc ends when either input ends: stdin from a fifo held open, so it stops at our FIN.
    recv = GUEST_RECV[tool].format(port=BULK_PORT)
    guest.run(f"rm -f /tmp/b.fifo /tmp/b.count; mkfifo /tmp/b.fifo; (sleep {int(timeout)} > /tmp/b.fifo & s=$!; "
              f"{recv} | wc -c > /tmp/b.count; kill $s) >/dev/null 2>&1 &")
    guest.wait_listening(BULK_PORT)
    tx = stack.start("send", guest.ip, BULK_PORT, total, timeout)
    try:
        sent = tx.result(timeout + 30)
    finally:
        tx.kill()
    from guest.wait import wait_in_guest

    wait_in_guest(guest.vm, "[ -s /tmp/b.count ]", 30, "the byte count")
    got = int(guest.run("cat /tmp/b.count").split()[0])
    if got != total:
        raise BenchError(f"stack -> guest: sent {total}, the guest counted {got} bytes")
    return {"bytes": total, "seconds": sent["seconds"], "timed_by": "sender (connect to the guest's close)",
            "gbit_per_s": total * 8 / sent["seconds"] / 1e9, "sender": sent["net"]}


def stack_rr_with_guest(stack: Side, guest: GuestSide, seconds: float, timeout: float) -> dict:
    guest.run(f"socat TCP-LISTEN:{RR_PORT},reuseaddr,nodelay PIPE >/dev/null 2>&1 &")
    guest.wait_listening(RR_PORT)
    cl = stack.start("rr", guest.ip, RR_PORT, seconds, timeout)
    try:
        out = cl.result(seconds + timeout)
    finally:
        cl.kill()
    return {"rr_per_s": out["rr_per_s"], "p50_us": out["p50_us"], "p99_us": out["p99_us"], "client": out["net"]}


class Labs:
    """Everything the cases need, set up once: the anchor's namespaces, our
    switch with its ports, the kernel's namespace, the guest."""

    def __init__(self, args, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.stack_exit = []
        self.netns = []
        self.bg = None
        self.switch = None
        self.vm = None
        self.sides: dict[str, tuple] = {}

    def __enter__(self) -> "Labs":
        try:
            self._setup()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ns(self, prefix: str) -> str:
        from nicdev.net import netns as ns

        ctx = ns.temporary_netns(prefix)
        name = ctx.__enter__()
        self.netns.append(ctx)
        return name

    def _switch_process(self, vhost: list[tuple[str, str]], tap: tuple[str, str] | None) -> None:
        """`mnet switch` in its own process with these vhost-user ports (name, path) and TAP (ifname, netns)."""
        on = "on" if self.args.offloads == "on" else "off"
        ports = [f"{name}=vhost-user:{path},offloads={on}" for name, path in vhost]
        if tap is not None:
            ports.append(f"host=tap:{tap[0]},netns={tap[1]},vnet_hdr={on}")
        ctx = switch_process(ports, [path for _, path in vhost], tap)
        ctx.__enter__()
        self.switch = ctx

    def _setup(self) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.vhost_user_port import VhostUserPort

        a = self.args
        offloads, verify = a.offloads == "on", a.verify
        cases = a.cases
        if "anchor" in cases:
            na, nb = self._ns("mntb-a"), self._ns("mntb-b")
            veth_pair((na, "tba", A_IP), (nb, "tbb", B_IP), PREFIX)
            self.sides["anchor"] = (Side("kernel", A_IP, netns=na, verify=verify),
                                    Side("kernel", B_IP, netns=nb, verify=verify),
                                    {"a": "linux veth defaults (TSO, GSO, GRO, checksum offload)", "b": "same"})
        if not any(c.startswith("stack") for c in cases):
            return
        if a.switch == "process":
            self._setup_switch_process()
            return
        self.bg = BackgroundSwitch()
        s1 = str(self.workdir / "s1.sock")
        self.bg.add_port(VhostUserPort("s1", s1, offloads=offloads))
        stack_a = Side("stack" if a.stack == "process" else "stack-thread", STACK_IP, path=s1, mac=STACK_MAC,
                       offloads=offloads, verify=verify)
        if "stack-kernel" in cases:
            nk = self._ns("mntb-k")
            add_tap(self.bg, "host", "mntb%d", nk, f"{HOST_IP}/{PREFIX}", vnet_hdr=offloads)
            ns.link_up("lo", netns=nk)
            self.sides["stack-kernel"] = (stack_a, Side("kernel", HOST_IP, netns=nk, verify=verify),
                                          {"b": "TAP with vnet header: checksum and TSO offloads to the kernel"
                                           if offloads else "TAP without vnet header: no offloads"})
        if "stack-stack" in cases:
            s2 = str(self.workdir / "s2.sock")
            self.bg.add_port(VhostUserPort("s2", s2, offloads=offloads))
            self.sides["stack-stack"] = (stack_a, Side("stack", STACK2_IP, path=s2, mac=STACK2_MAC, offloads=offloads,
                                                       verify=verify), {})
        if "stack-guest" in cases:
            from guest.image import build_image
            from qemu.cmdline import NicConfig
            from qemu.vm import VirtualMachine

            image = build_image(progress=log)
            vm_sock = str(self.workdir / "vm.sock")
            self.bg.add_port(VhostUserPort("vm", vm_sock, offloads=offloads))
            self.vm = VirtualMachine("vm", image, nic=NicConfig("vhost-user", vm_sock), ip=f"{VM_IP}/{PREFIX}",
                                     workdir=self.workdir / "vm", memory_mb=256, progress=log)
            self.vm.start()
            self.vm.wait_ready(240)
            guest = GuestSide(self.vm, VM_IP)
            self.sides["stack-guest"] = (stack_a, guest, {"b": guest.offloads()})

    def _setup_switch_process(self) -> None:
        """stack-kernel and stack-stack with `mnet switch` as its own process."""
        from nicdev.net import netns as ns

        a = self.args
        offloads, verify = a.offloads == "on", a.verify
        s1, s2 = str(self.workdir / "s1.sock"), str(self.workdir / "s2.sock")
        vhost = [("s1", s1)] + ([("s2", s2)] if "stack-stack" in a.cases else [])
        tap = None
        if "stack-kernel" in a.cases:
            nk = self._ns("mntb-k")
            tap = (f"mntbp{os.getpid() % 100000}", nk)
        self._switch_process(vhost, tap)
        stack_a = Side("stack" if a.stack == "process" else "stack-thread", STACK_IP, path=s1, mac=STACK_MAC,
                       offloads=offloads, verify=verify)
        if tap is not None:
            ns.set_address(tap[0], f"{HOST_IP}/{PREFIX}", netns=tap[1])
            ns.link_up("lo", netns=tap[1])
            self.sides["stack-kernel"] = (stack_a, Side("kernel", HOST_IP, netns=tap[1], verify=verify),
                                          {"b": "mnet switch process, TAP with vnet header" if offloads
                                           else "mnet switch process, TAP without vnet header"})
        if "stack-stack" in a.cases:
            self.sides["stack-stack"] = (stack_a, Side("stack", STACK2_IP, path=s2, mac=STACK2_MAC, offloads=offloads,
                                                       verify=verify), {})

    def __exit__(self, *exc) -> None:
        if self.switch is not None:
            self.switch.__exit__(None, None, None)
        if self.vm is not None:
            self.vm.stop()
        if self.bg is not None:
            log(self.bg.summary().replace("\n", "\n# "))
            self.bg.close()
        for ctx in reversed(self.netns):
            ctx.__exit__(None, None, None)


TESTS = ("bulk a->b", "bulk b->a", "rr")
WHAT = {
    "anchor": "kernel <-> kernel over veth between two namespaces",
    "stack-kernel": "MultiOS stack <-> host kernel over our switch and a TAP",
    "stack-stack": "MultiOS stack <-> MultiOS stack through our switch (two vhost-user ports)",
    "stack-guest": "MultiOS stack <-> Linux guest (QEMU TCG) through our switch",
}


def run_test(labs: Labs, case: str, test: str) -> dict:
    a, b, _ = labs.sides[case]
    args = labs.args
    t = args.timeout
    if case == "stack-guest":
        total = args.guest_mbytes * 1_000_000 // 65536 * 65536     # whole dd blocks
        if test == "bulk a->b":
            return {**stack_bulk_to_guest(a, b, total, t, args.guest_tool), "guest_tool": args.guest_tool}
        if test == "bulk b->a":
            return {**guest_bulk_to_stack(b, a, total, t, args.guest_tool), "guest_tool": args.guest_tool}
        return stack_rr_with_guest(a, b, args.seconds, t)
    total = (args.anchor_mbytes if case == "anchor" else args.mbytes) * 1_000_000
    if test == "bulk a->b":
        return bulk(a, b, total, t)
    if test == "bulk b->a":
        return bulk(b, a, total, t)
    return rr(a, b, args.seconds, t)


def offloads_of(case: str, sample: dict, extra: dict) -> dict:
    out = dict(extra)
    for key in ("sender", "receiver", "client"):
        net = sample.get(key)
        if net and net.get("tcp") == "multios":
            out.setdefault("stack_nic", net["nic_offloads"])
            out[f"{key}_avg_tx_frame"] = net["nic_avg_tx_frame"]
            out[f"{key}_avg_rx_frame"] = net["nic_avg_rx_frame"]
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--endpoint"]:
        return endpoint_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(WHAT), help=f"comma-separated subset of {','.join(WHAT)}")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; figures are medians (default 1)")
    parser.add_argument("--mbytes", type=int, default=100, help="MB per bulk transfer with a stack (default 100)")
    parser.add_argument("--anchor-mbytes", type=int, default=2000, help="MB per anchor transfer (default 2000)")
    parser.add_argument("--guest-mbytes", type=int, default=50, help="MB per transfer with the guest (default 50)")
    parser.add_argument("--seconds", type=float, default=3.0, help="request/response time per test (default 3)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds any one step may take (default 180)")
    parser.add_argument("--offloads", choices=("on", "off"), default="on",
                        help="checksum/TSO offloads for the stacks, our ports and the TAP (default on)")
    parser.add_argument("--verify", action="store_true", help="SHA-256 at both ends of each bulk transfer")
    parser.add_argument("--guest-tool", choices=tuple(GUEST_SEND), default="socat",
                        help="what moves bulk data in the guest: socat with 256 KiB blocks (default) or busybox nc")
    parser.add_argument("--stack", choices=("thread", "process"), default="thread",
                        help="side a's stack on a thread of this program beside the switch (default), or in a "
                             "process of its own; stack-stack's side b is always a process")
    parser.add_argument("--switch", choices=("thread", "process"), default="thread",
                        help="our switch on a thread of this program (default), or as its own process (mnet switch; "
                             "stack-kernel and stack-stack only)")
    args = parser.parse_args(argv)
    if args.switch == "process" and "stack-guest" in args.cases:
        print("--switch process runs stack-kernel and stack-stack only", file=sys.stderr)
        return 2
    if not is_root("tcp_bulk.py"):
        return 2
    wanted = pick_cases(args.cases, WHAT)
    if wanted is None:
        return 2
    args.cases = wanted
    samples: dict[tuple[str, str], list[dict]] = {(c, t): [] for c in wanted for t in TESTS}
    errors: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="mnet-tcpb-") as workdir, Labs(args, Path(workdir)) as labs:
        for r in range(args.rounds):
            for case in wanted:
                for test in TESTS:
                    if (case, test) in errors:
                        continue
                    log(f"round {r + 1}/{args.rounds}: {case} {test}")
                    try:
                        s = run_test(labs, case, test)
                    except BenchError as exc:
                        errors[(case, test)] = str(exc)
                        log(f"  failed: {exc}")
                        continue
                    figure = s.get("gbit_per_s", s.get("rr_per_s"))
                    log(f"  {figure:.4g} {'Gbit/s' if 'gbit_per_s' in s else 'round trips/s'}")
                    samples[(case, test)].append(s)
        extras = {case: labs.sides[case][2] for case in wanted if case in labs.sides}
    cpu = f"{cpu_model()} x{os.cpu_count()}"
    version = source_version()
    for case in wanted:
        for test in TESTS:
            runs = samples[(case, test)]
            line = {"case": case, "test": test, "what": WHAT[case], "source": version, "cpu": cpu,
                    "rounds": len(runs)}
            if not runs:
                line["error"] = errors.get((case, test), "not run")
                print(json.dumps(line), flush=True)
                continue
            anchor_runs = samples[("anchor", test)]
            key = "rr_per_s" if test == "rr" else "gbit_per_s"
            figure = statistics.median(s[key] for s in runs)
            anchor = statistics.median(s[key] for s in anchor_runs) if anchor_runs else None
            line.update({key: round(figure, 4 if key == "gbit_per_s" else 0),
                         f"anchor_{key}": round(anchor, 4 if key == "gbit_per_s" else 0) if anchor else None,
                         "ratio_to_anchor": round(figure / anchor, 4) if anchor else None,
                         "per_round": [round(s[key], 4) for s in runs]})
            if test == "rr":
                line.update({"request_bytes": RR_SIZE, "in_flight": 1,
                             "p50_us": round(statistics.median(s["p50_us"] for s in runs), 1),
                             "p99_us": round(statistics.median(s["p99_us"] for s in runs), 1)})
            else:
                line.update({"bytes": runs[0]["bytes"], "write_bytes": CHUNK, "timed_by": runs[0]["timed_by"]})
                if "guest_tool" in runs[0]:
                    line["guest_tool"] = runs[0]["guest_tool"]
            if case == "anchor":           # --offloads is ours; the veth keeps the kernel's defaults
                line["offloads"] = "linux veth defaults (TSO, GSO, GRO, checksum offload)"
            elif args.offloads == "on":
                line["offloads"] = offloads_of(case, runs[-1], extras.get(case, {}))
            else:
                line["offloads"] = "off (stack NICs, our ports, TAP without vnet header)"
            print(json.dumps(line), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
