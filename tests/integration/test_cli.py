"""`mnet` end to end, as a user runs it: `mnet switch` as a process, guests
booted with `mnet vm` (--run and the interactive console through a pty), a
peer guest booted through the Python API.

  mnet switch: port a (P1), port b (P2), port c (P3)
  guest B 10.0.0.2 on b (qemu.vm.VirtualMachine, for the whole module)
  `mnet vm` guests on a and c, one boot per test

The last test interrupts the switch, so it stays last in this file.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from support.cli import MNET, MnetProcess, assert_one_line_error, mnet

pytestmark = pytest.mark.integration

BOOT = "240"        # --boot-timeout: TCG boots take 6-15 s here, more under load


class CliLab:
    def __init__(self, image, tmp: Path) -> None:
        from qemu.cmdline import NicConfig
        from qemu.vm import VirtualMachine

        self.tmp = tmp
        self.paths = {name: str(tmp / f"{name}.sock") for name in ("a", "b", "c")}
        self.switch = MnetProcess("switch", *(f"--port={n}=vhost-user:{p}" for n, p in self.paths.items()))
        self.guest_b = None
        try:
            self.switch.expect("switch running")
            self.guest_b = VirtualMachine("vm-b", image, nic=NicConfig("vhost-user", self.paths["b"]),
                                          ip="10.0.0.2/24", workdir=tmp / "vm-b",
                                          progress=lambda line: print(line, flush=True))
            self.guest_b.start()
            self.guest_b.wait_ready(240)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.guest_b is not None:
            self.guest_b.stop()
        self.switch.close()


@pytest.fixture(scope="module")
def lab(guest_image, tmp_path_factory):
    lab = CliLab(guest_image, tmp_path_factory.mktemp("cli"))
    try:
        yield lab
    finally:
        lab.close()


def test_vm_run_prints_the_output_and_exits_with_the_status(lab):
    # Two `mnet vm` at once with the default name: their MACs differ (they
    # derive from the socket path), so both reach guest B through the switch.
    args = ["--ip", "10.0.0.1/24", "--boot-timeout", BOOT, "--timeout", "120"]
    ping = subprocess.Popen([*MNET, "vm", "--nic", f"vhost-user:{lab.paths['a']}", *args,
                             "--run", "ping -c 2 10.0.0.2"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seven = subprocess.Popen([*MNET, "vm", "--nic", f"vhost-user:{lab.paths['c']}", "--ip", "10.0.0.3/24",
                              "--boot-timeout", BOOT, "--run", "ping -c 1 -W 10 10.0.0.2 >/dev/null && exit 7"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = ping.communicate(timeout=420)
        out7, err7 = seven.communicate(timeout=420)
    finally:
        for p in (ping, seven):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert ping.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "2 packets transmitted, 2 packets received, 0% packet loss" in out, out
    assert "mnet vm:" not in out, "progress lines belong on stderr"
    assert "ready after" in err and "Traceback" not in err, err
    assert seven.returncode == 7, f"stdout:\n{out7}\nstderr:\n{err7}"
    assert out7 == "", out7


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_sigterm_to_mnet_vm_stops_its_qemu(lab):
    vm = MnetProcess("vm", "--nic", f"vhost-user:{lab.paths['c']}", "--ip", "10.0.0.3/24",
                     "--boot-timeout", BOOT, "--run", "sleep 300")
    try:
        vm.expect("ready after", 300, stderr=True)
        workdir = re.search(r"console in (/\S+)/console\.log", vm.err.decode()).group(1)
        assert _processes_mentioning(workdir), "no QEMU found for the VM"
        status, _, err = vm.interrupt(60, sig=signal.SIGTERM)
    finally:
        vm.close()
    assert status == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert not _processes_mentioning(workdir), f"QEMU outlived `mnet vm` ({workdir})"


def test_vm_on_a_port_with_a_guest_already_is_refused(lab):
    r = mnet("vm", "--nic", f"vhost-user:{lab.paths['b']}", "--ip", "10.0.0.4/24", "--run", "true")
    assert_one_line_error(r, "vm", "hung up at once", "another VM")
    assert lab.guest_b.run("ping -c 1 -W 5 10.0.0.2").status == 0, "guest B disturbed by the refused probe"


def test_interactive_console_through_a_pty(lab):
    master, slave = os.openpty()
    before = termios.tcgetattr(master)
    proc = subprocess.Popen([*MNET, "vm", "--nic", f"vhost-user:{lab.paths['a']}", "--ip", "10.0.0.1/24"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()

    def read_until(pattern: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([master], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no {pattern!r} on the console within {timeout:g} s; "
                                     f"last output:\n{seen[-2000:].decode(errors='replace')}")
            try:
                data = os.read(master, 4096)
            except OSError:         # EIO: every writer is gone
                data = b""
            if not data:
                raise AssertionError(f"console closed before {pattern!r} (exit {proc.poll()}); "
                                     f"output:\n{seen[-2000:].decode(errors='replace')}")
            seen.extend(data)

    try:
        read_until(b"console shell ready", 240)
        read_until(b"# ", 60)                               # the shell's prompt
        os.write(master, b"echo hi-$((1+1))\r")
        read_until(b"hi-2", 60)                             # the shell's answer, not our echo
        os.write(master, b"\x01x")                          # QEMU's mux: Ctrl-A X quits
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        after = termios.tcgetattr(master)
        os.close(master)
    assert status == 0, seen[-2000:].decode(errors="replace")
    # QEMU had the terminal in raw mode; it is back as it was.
    assert after[3] == before[3], "terminal local modes (echo, canonical) not restored"


def test_switch_sigint_prints_port_status_and_counters(lab):
    # Traffic of its own, so the counters are not zero whatever ran before:
    # guest B asks for an address nobody has (flooded ARP requests).
    lab.guest_b.run("ping -c 2 -W 1 10.0.0.99")
    status, out, err = lab.switch.interrupt()
    assert status == 0, err
    assert "Traceback" not in err, err
    final = out.split("switch running", 1)[1]
    for name in ("a", "b", "c"):
        assert re.search(rf"^port {name}: ", final, re.M), final
    rows = {line.split()[0]: line.split()[-6:] for line in final.splitlines()
            if line.split() and line.split()[0] in ("a", "b", "c") and len(line.split()) >= 8}
    assert set(rows) == {"a", "b", "c"}, final
    rx_frames_b = int(rows["b"][0])
    assert rx_frames_b > 0, final
    m = re.search(r"^switch: forwarded (\d+), flooded (\d+)", final, re.M)
    assert m and int(m.group(2)) > 0, final
