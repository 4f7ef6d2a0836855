"""What http_serve.py and lb_relay.py share: the path users run, as processes.

`mnet switch` (its own process) with a vhost-user port for `mnet stack` (its
own process, 10.0.0.9) and a TAP port into a namespace this program creates,
where the kernel is 10.0.0.254 and runs the load generator (wrk), the
kernel's HTTP servers (http_kernel_server.py) and a socat relay. Each piece
is stopped on the way out, on an error or Ctrl-C too. The JSON lines the two
programs print are made here as well. Root only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import BenchError, is_root, switch_process
from machine import cpu_model, source_version

BENCH = Path(__file__).resolve().parent
HOST_IP, STACK_IP = "10.0.0.254", "10.0.0.9"
STACK_MAC = "52:54:00:00:09:19"
WAIT = 30.0
# wrk prints its own report first; this prints one JSON line after it.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "bytes": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.bytes,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def mnet_program() -> str:
    """The `mnet` command of this Python's environment (what a user runs); BenchError if it is not installed."""
    path = Path(sys.executable).parent / "mnet"
    if not path.exists():
        raise BenchError(f"no mnet command next to {sys.executable}: run `make setup` and use .venv/bin/python")
    return str(path)


PACKAGES = {"ss": "iproute2", "ip": "iproute2"}   # a program's Debian package, where the names differ


def require_tools(*names: str) -> None:
    """BenchError naming the Debian package of each program that is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        packages = " ".join(dict.fromkeys(PACKAGES.get(name, name) for name in missing))
        raise BenchError(f"missing {', '.join(missing)}: apt-get install {packages} (`make setup` does)")


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class UserPath:
    """The switch and stack processes and the namespace's programs; `close()` stops them all, newest first."""

    def __init__(self, workdir: Path, netns: str) -> None:
        from nicdev.net import netns as ns

        self.workdir, self.netns = workdir, netns
        self.sock = str(workdir / "stack.sock")
        self.procs: list[subprocess.Popen] = []
        self.cleanup = contextlib.ExitStack()
        ifname = f"mnhb{os.getpid() % 100000}"
        try:
            self.cleanup.enter_context(switch_process(
                [f"stack=vhost-user:{self.sock}", f"host=tap:{ifname},netns={netns}"], [self.sock], (ifname, netns)))
            ns.set_address(ifname, f"{HOST_IP}/24", netns=netns)
            ns.link_up("lo", netns=netns)
        except BaseException:
            self.close()
            raise

    def _start(self, argv: list[str], log: str, stdout=None) -> subprocess.Popen:
        with open(self.workdir / log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or out, stderr=out,
                                    cwd=str(BENCH.parents[1]))
        self.procs.append(proc)
        return proc

    def _failed(self, what: str, log: str, why: str) -> BenchError:
        tail = (self.workdir / log).read_text(errors="replace").strip().splitlines()[-5:]
        return BenchError(f"{what} {why}: {' | '.join(tail) or 'no output'}")

    def start_stack(self, *serve: str) -> None:
        """`mnet stack` with these --serve specs; returns once it says "stack up" (its access log goes to a file)."""
        argv = [mnet_program(), "stack", "--nic", f"vhost-user:{self.sock}", "--ip", f"{STACK_IP}/24",
                "--mac", STACK_MAC, "--control", "off"]
        for spec in serve:
            argv += ["--serve", spec]
        proc = self._start(argv, "stack.log")
        deadline = time.monotonic() + WAIT
        while "stack up: " not in (self.workdir / "stack.log").read_text(errors="replace"):
            if proc.poll() is not None:
                raise self._failed("mnet stack", "stack.log", f"exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise self._failed("mnet stack", "stack.log", f"did not say 'stack up' within {WAIT:.0f} s")
            time.sleep(0.05)

    def start_kernel_server(self, port: int, root: Path) -> None:
        """http_kernel_server.py in the namespace on HOST_IP:port serving `root`; returns once it listens."""
        log = f"kernel-{port}.log"
        argv = in_netns(self.netns, [sys.executable, str(BENCH / "http_kernel_server.py"), "--bind", HOST_IP,
                                     "--port", str(port), "--directory", str(root)])
        proc = self._start(argv, log, stdout=subprocess.PIPE)
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise self._failed(f"the kernel's HTTP server on port {port}", log, "did not start")

    def start_socat(self, port: int, backend_port: int) -> None:
        """socat in the namespace relaying HOST_IP:port to HOST_IP:backend_port, a process per connection,
        with TCP_NODELAY both ways (without it, an answer's head and body, written apart by the backend,
        wait 40 ms for the client's delayed ACK on every reused connection)."""
        log = f"socat-{port}.log"
        self._start(in_netns(self.netns, [
            "socat", f"TCP-LISTEN:{port},bind={HOST_IP},fork,reuseaddr,backlog=128,nodelay",
            f"TCP:{HOST_IP}:{backend_port},nodelay"]), log)
        self.wait_listening(port, f"socat on port {port}", log)

    def wait_listening(self, port: int, what: str, log: str) -> None:
        deadline = time.monotonic() + WAIT
        while not subprocess.run(in_netns(self.netns, ["ss", "-Hltn", f"sport = :{port}"]), capture_output=True,
                                 text=True, timeout=WAIT).stdout.strip():
            if time.monotonic() > deadline:
                raise self._failed(what, log, f"did not listen within {WAIT:.0f} s")
            time.sleep(0.05)

    def wait_served(self, url: str) -> None:
        """curl from the namespace until `url` answers 200 (ARP, the stack's first connections), bounded."""
        deadline = time.monotonic() + WAIT
        while True:
            r = subprocess.run(in_netns(self.netns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                     "--max-time", "5", url]), capture_output=True, text=True,
                               timeout=WAIT)
            if r.stdout == "200":
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not answer 200 within {WAIT:.0f} s (curl: {r.stdout or r.returncode})")
            time.sleep(0.2)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)    # `ip netns exec` execs, so this reaches the program itself
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        self.cleanup.close()


def make_files(root: Path, small: int, large: int) -> dict[str, tuple[str, int]]:
    """A small and a large file of random bytes under `root`: {"small": (url path, size), "large": ...}."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, size in (("small", small), ("large", large)):
        (root / f"{name}.bin").write_bytes(os.urandom(size))
        files[name] = (f"/{name}.bin", size)
    return files


def wrk(netns: str, workdir: Path, url: str, seconds: int, connections: int, keep_alive: bool) -> dict:
    """wrk in the namespace against `url`: requests/s, MB/s (bodies and headers), latency and its error counts."""
    script = workdir / "done.lua"
    if not script.exists():
        script.write_text(WRK_DONE)
    argv = ["wrk", "--threads", "1", "--connections", str(connections), "--duration", f"{seconds}s",
            "--timeout", "30s", "--script", str(script), url]
    if not keep_alive:
        argv[1:1] = ["--header", "Connection: close"]
    r = subprocess.run(in_netns(netns, argv), capture_output=True, text=True, timeout=seconds + 60)
    found = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not found:
        said = " ".join((r.stderr or r.stdout).split())   # one line, as every error of these programs
        raise BenchError(f"wrk {url} failed (status {r.returncode}): {said[-500:]}")
    got = json.loads(found[-1])
    if not keep_alive:
        got["read"] = 0   # wrk counts the server's close after each answer as a read error; answers are counted apart
    if got["requests"] == 0:
        raise BenchError(f"wrk {url}: no request was answered in {seconds:g} s; errors {errors_of(got)}")
    elapsed = got["duration_us"] / 1e6
    return {"requests_per_s": got["requests"] / elapsed, "mb_per_s": got["bytes"] / elapsed / 1e6,
            "requests": got["requests"], "p50_ms": got["p50_us"] / 1e3, "p99_ms": got["p99_us"] / 1e3,
            "errors": errors_of(got)}


def errors_of(got: dict) -> dict:
    """wrk's non-zero error counts (status: answers other than 2xx/3xx)."""
    return {k: got[k] for k in ("connect", "read", "write", "status", "timeout") if got[k]}


def measure(path: UserPath, args, start) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """The files, the servers `start(path, root, args)` starts (it returns {server: (base URL, what it is)}),
    then the rounds: each file, with and without keep-alive, against each server in turn."""
    root = path.workdir / "www"
    files = make_files(root, args.small_bytes, int(args.large_mbytes * 1e6))
    began = time.monotonic()
    servers = start(path, root, args)
    for base, _ in servers.values():
        path.wait_served(base + files["small"][0])
    progress(f"servers up and answering in {time.monotonic() - began:.1f} s; {len(servers) * 4} cases of "
             f"{args.seconds:g} s per round")
    described, samples = {}, {}
    for server, (_, where) in servers.items():
        for name, (_, size) in files.items():
            for mode in ("keep-alive", "close"):
                described[f"{server} {name} {mode}"] = {
                    "what": f"wrk -> {where}, GET of {size} bytes, {mode}",
                    "unit": "requests/s" if name == "small" else "MB/s", "file_bytes": size}
                samples[f"{server} {name} {mode}"] = []
    for n in range(1, args.rounds + 1):
        for name, (url_path, _) in files.items():
            for mode in ("keep-alive", "close"):
                for server, (base, _) in servers.items():
                    case = f"{server} {name} {mode}"
                    got = wrk(path.netns, path.workdir, base + url_path, args.seconds, args.connections,
                              mode == "keep-alive")
                    samples[case].append(got)
                    progress(f"round {n}/{args.rounds} {case}: {got['requests_per_s']:.0f} requests/s, "
                             f"{got['mb_per_s']:.1f} MB/s" + (f", errors {got['errors']}" if got["errors"] else ""))
                    time.sleep(0.3)  # let closing connections finish before the next case
    return samples, described


def print_lines(samples: dict[str, list[dict]], described: dict[str, dict], anchor: str, args) -> None:
    """One JSON line per case: the median over the rounds of its figure, the same for its anchor (the
    `anchor` server's case with the same file and mode), their ratio and the ratio in each round."""
    for case, runs in samples.items():
        info = described[case]
        key = "requests_per_s" if info["unit"] == "requests/s" else "mb_per_s"
        anchor_case = anchor + case[case.index(" "):]
        anchor_runs = samples[anchor_case]
        figure = statistics.median(r[key] for r in runs)
        middle = statistics.median(r[key] for r in anchor_runs)
        print(json.dumps({
            "case": case, **info, "figure": round(figure, 2), "anchor_case": anchor_case,
            "anchor": round(middle, 2), "ratio": round(figure / middle, 3),
            "ratio_by_round": [round(r[key] / a[key], 3) for r, a in zip(runs, anchor_runs)],
            "rounds": [round(r[key], 2) for r in runs], "p50_ms": [round(r["p50_ms"], 2) for r in runs],
            "p99_ms": [round(r["p99_ms"], 2) for r in runs], "errors": [r["errors"] for r in runs],
            "connections": args.connections, "seconds": args.seconds, "cpu": f"{cpu_model()} x{os.cpu_count()}",
            "source": source_version(),
        }), flush=True)


def bench_main(program: str, doc: str, tools: tuple[str, ...], start, anchor: str) -> int:
    """A whole benchmark program: its arguments, the root and tool checks (one line each), the lab in a
    namespace of its own, the rounds, the lines; everything started is stopped on the way out."""
    parser = argparse.ArgumentParser(prog=program, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="length of each case, whole seconds as wrk takes them "
                                                                "(default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the figure is the median (default 1)")
    parser.add_argument("--connections", type=int, default=8, help="wrk's connections (default 8)")
    parser.add_argument("--small-bytes", type=int, default=1024, help="size of the small file (default 1024)")
    parser.add_argument("--large-mbytes", type=float, default=4.0, help="size of the large file in MB (default 4)")
    args = parser.parse_args()
    if args.seconds < 1 or args.rounds < 1 or not 1 <= args.connections <= 256 or args.small_bytes < 1 \
            or args.large_mbytes <= 0:
        parser.error("need --seconds >= 1, --rounds >= 1, --connections in 1..256 and positive file sizes")
    if not is_root(program):
        return 2
    from nicdev.net.netns import temporary_netns

    try:
        require_tools("wrk", "curl", "ip", "ss", *tools)
        mnet_program()
        with tempfile.TemporaryDirectory(prefix="mnet-http-bench-") as tmp, temporary_netns("mnhb") as netns:
            progress(f"{program}: starting mnet switch, with a TAP port into namespace {netns}")
            path = UserPath(Path(tmp), netns)
            try:
                samples, described = measure(path, args, start)
            finally:
                path.close()
    except (BenchError, OSError) as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted; stopped everything it started", file=sys.stderr)
        return 130
    print_lines(samples, described, anchor, args)
    return 0
