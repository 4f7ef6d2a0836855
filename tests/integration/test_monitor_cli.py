"""`mnet monitor` against a running `mnet stack`, with the host kernel as the peer.

  `mnet switch` (a process), ports:
    stack  vhost-user -> `mnet stack --serve tcp-echo:7 --control PATH` (a process)   10.0.0.9
    host   TAP into a namespace this module creates, where the kernel runs nc        10.0.0.254

The kernel opens a TCP connection to the echo service and keeps it open;
`mnet monitor --once` must show the kernel's address (with its MAC) in the
neighbour table, the connection ESTABLISHED in the ss view, and the rings
with frames, kicks and interrupts counted; `--interval` refreshes until
SIGINT and exits 0; a stack that is gone is one clear error line.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from nicdev.net.netns import run_in_netns

from support.cli import MnetProcess, assert_one_line_error, mnet
from support.kernel_peer import KernelPeerSwitchProcessLab

pytestmark = pytest.mark.integration

HOST_IP = "10.0.0.254"
STACK_IP = "10.0.0.9"


class MonitorLab(KernelPeerSwitchProcessLab):
    def kernel_mac(self) -> str:
        out = subprocess.run(["ip", "-n", self.netns, "link", "show", self.ifname], capture_output=True, text=True,
                             timeout=10).stdout
        return re.search(r"link/ether ([0-9a-f:]{17})", out).group(1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor")
    with MonitorLab(tmp, "mon", host_ips=(HOST_IP,), vhost_ports=("stack",), switch_options=("--control=off",)) as lab:
        lab.control = str(tmp / "ctl" / "stack.sock")
        lab.stack = lab.own(MnetProcess("stack", "--nic", f"vhost-user:{lab.sockets['stack']}", "--ip",
                                        f"{STACK_IP}/24", "--serve", "tcp-echo:7", "--control", lab.control),
                            MnetProcess.close)
        lab.stack.expect("stack up: ")
        yield lab


@pytest.fixture(scope="module")
def kernel_connection(lab):
    """A kernel nc connected to the echo service, held open; yields its local port."""
    holder = run_in_netns(lab.netns, ["nc", "-N", STACK_IP, "7"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        holder.stdin.write(b"hello\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == b"hello\n"      # (nc's own timeout bounds this)
        ss = subprocess.run(["ip", "netns", "exec", lab.netns, "ss", "-tnH", "state", "established",
                             f"dst {STACK_IP}:7"], capture_output=True, text=True, timeout=10).stdout
        port = re.search(rf"{re.escape(HOST_IP)}:(\d+)", ss).group(1)
        yield int(port)
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_once_shows_the_kernel_as_neighbour_its_connection_and_the_rings(lab, kernel_connection):
    r = mnet("monitor", "--control", lab.control, "--once")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = r.stdout
    assert re.search(rf"^{re.escape(HOST_IP)} +{lab.kernel_mac()} +REACHABLE +\d+\.\ds +\d+\.\ds +0$", out, re.M), out
    assert re.search(rf"^tcp +ESTABLISHED +0 +0 +{re.escape(STACK_IP)}:7 +{re.escape(HOST_IP)}:{kernel_connection} ",
                     out, re.M), out
    assert re.search(r"^tcp +LISTEN +0 +\d+ +0\.0\.0\.0:7 +0\.0\.0\.0:\* ", out, re.M), out
    assert re.search(rf"^{re.escape(STACK_IP)}/32 +local ", out, re.M) and f"inet {STACK_IP}/24" in out, out
    rings = {m.group(1): [int(v) for v in m.group(2).split()]
             for m in re.finditer(r"^(rx|tx) +((?:\d+ +){10}\d+)$", out, re.M)}
    assert set(rings) == {"rx", "tx"}, out
    size, avail, used, reaped, in_flight, pending, kicks, interrupts, frames, nbytes, drops = rings["rx"]
    assert size == 4096 and in_flight == size and frames > 0 and nbytes > 0 and interrupts > 0, out
    size, avail, used, reaped, in_flight, pending, kicks, interrupts, frames, nbytes, drops = rings["tx"]
    assert frames > 0 and kicks > 0 and avail > 0, out


def test_interval_refreshes_until_sigint_with_rates(lab, kernel_connection):
    live = MnetProcess("monitor", "--control", lab.control, "--interval", "0.3", "--view", "rings")
    try:
        live.expect("rates over ")          # printed from the second refresh on
        status, out, err = live.interrupt()
    finally:
        live.close()
    assert status == 0 and "Traceback" not in err, err
    stamps = re.findall(rf"^--- stack at {re.escape(lab.control)} at \d{{4}}-\d\d-\d\d [\d:.]+ UTC ---$", out, re.M)
    assert len(stamps) >= 2, out
    assert re.search(r"^rates over 0\.\d s: rx \d+ frames/s [\d.]+ k?B/s, tx \d+ frames/s", out, re.M), out


def test_a_stack_that_is_gone_is_one_error_line(lab):
    status, out, err = lab.stack.interrupt()
    assert status == 0, err
    assert not os.path.exists(lab.control)              # the stack removed its socket
    assert_one_line_error(mnet("monitor", "--control", lab.control), "monitor",
                          f"no stack listening at {lab.control} (no such socket)")
