"""DPDK's testpmd as a second vhost-user implementation to test against.

It lives with the protocol it speaks (either side of it) so that the tests,
the `mnet_testpmd` pytest fixture and scripts/bench/ring_datapath.py share
one launcher; it imports nothing of the project.

    pmd = Testpmd.frontend("/tmp/vu.sock", "txonly", workdir)   # net_virtio_user: we are the backend
    pmd = Testpmd.backend("/tmp/vh.sock", "icmpecho", workdir)  # net_vhost: we are the frontend
    pmd.wait_for(lambda: sum(pmd.numbers("RX-packets")) > 0, "traffic")
    print(pmd.stop())                                          # SIGINT, final statistics

Flags that matter on a machine without hugepages or NICs (checked here):
`--no-huge -m 256 --no-pci`; `--total-num-mbufs=16384` or the default mbuf
pool does not fit those 256 MiB; a per-run `--file-prefix` keeps runs
apart; without a terminal testpmd exits at once unless it has
`--stats-period`; SIGINT stops it and prints the final statistics. Its
forwarding lcore busy-polls one CPU: `lcores` says which (two testpmds
should use different ones).
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["Testpmd", "TestpmdError", "find_testpmd"]

_runs = itertools.count()


class TestpmdError(RuntimeError):
    """testpmd is missing, died, or did not do what was waited for."""

    __test__ = False   # not a pytest test class, despite the name


def find_testpmd() -> str:
    path = shutil.which("dpdk-testpmd") or "/usr/bin/dpdk-testpmd"
    if not os.path.exists(path):
        raise TestpmdError("dpdk-testpmd not found: install Debian's dpdk-dev package")
    return path


class Testpmd:
    """One dpdk-testpmd process; its output goes to a file readable while it runs."""

    __test__ = False

    def __init__(self, vdev: str | Iterable[str], mode: str, workdir: str | os.PathLike, *, tag: str = "pmd",
                 lcores: str = "0@0,1@1", extra: Iterable[str] = ()) -> None:
        # One device, or several (testpmd's io mode forwards between pairs of them).
        vdevs = [vdev] if isinstance(vdev, str) else list(vdev)
        self.prefix = f"mnet-{tag}-{os.getpid()}-{next(_runs)}"
        self.log = Path(workdir) / f"testpmd-{self.prefix}.log"
        self._out = open(self.log, "w")
        argv = [find_testpmd(), "--no-huge", "-m", "256", "--no-pci", "--file-prefix", self.prefix,
                "--lcores", lcores, *(a for v in vdevs for a in ("--vdev", v)), "--", "--stats-period", "1",
                f"--forward-mode={mode}",
                "--total-num-mbufs=16384", *extra]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT)

    @classmethod
    def frontend(cls, path: str, mode: str, workdir, **kw) -> "Testpmd":
        """testpmd's virtio-user driver connecting to our vhost-user backend at `path`."""
        return cls(f"net_virtio_user0,path={path},queues=1", mode, workdir, **kw)

    @classmethod
    def backend(cls, path: str, mode: str, workdir, *, timeout: float = 30.0, **kw) -> "Testpmd":
        """testpmd's vhost-user backend listening on `path` (waits until the socket exists)."""
        pmd = cls(f"net_vhost0,iface={path},queues=1", mode, workdir, **kw)
        pmd.path = path
        try:
            pmd.wait_for(lambda: os.path.exists(path), f"testpmd to create {path}", timeout)
        except TestpmdError:
            pmd.stop()
            raise
        return pmd

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def numbers(self, label: str) -> list[int]:
        """Every value printed after `label:` so far (e.g. "RX-packets")."""
        return [int(n) for n in re.findall(rf"{label}:\s+(\d+)", self.output())]

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 30.0, step: float = 0.02) -> None:
        """Poll `cond` until true; TestpmdError with testpmd's output if not in time or if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(step)
        if cond():
            return
        raise TestpmdError(f"timed out waiting for {what} (testpmd exit code {self.proc.poll()});\n"
                           f"testpmd output:\n{self.output()[-4000:]}")

    def stop(self) -> str:
        """SIGINT (then SIGKILL if it hangs); returns all its output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._out.closed:
            self._out.close()
        shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)
        return self.log.read_text(errors="replace")

    def __enter__(self) -> "Testpmd":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
