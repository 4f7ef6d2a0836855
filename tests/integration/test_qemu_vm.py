"""VirtualMachine against a real QEMU (TCG) and the real guest image.

The guest's NIC is a stream netdev connected to a unix socket this test
listens on (`StreamPeer`), so every frame the guest sends is seen here and
nothing leaves the machine. Checked: boot and command channel, the MAC, frames
on the wire, QMP link down/up (guest carrier and frames), hot-unplug and
re-plug, reboot, a clean stop, and the error text of a boot timeout. A
second VM uses a vhost-user NIC with DPDK's testpmd as the back-end.
Boot times are printed (run with -s or -rA to see them).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from guest.errors import GuestTimeout
from qemu.cmdline import NicConfig
from qemu.vm import VirtualMachine

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 180          # TCG on a busy 2-core machine; a quiet one boots in ~6 s
GUEST_IP = "10.77.0.2/24"
PEER_IP = "10.77.0.1"
BOOT_TIMES: list[tuple[str, float]] = []


class StreamPeer:
    """The other end of a QEMU `-netdev stream`: 4-byte big-endian length +
    Ethernet frame. Collects every frame the guest sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.frames: list[bytes] = []
        self._cond = threading.Condition()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conn = conn
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 4:
                (length,) = struct.unpack("!I", buf[:4])
                if len(buf) < 4 + length:
                    break
                with self._cond:
                    self.frames.append(buf[4:4 + length])
                    self._cond.notify_all()
                buf = buf[4 + length:]

    def arp_requests_for(self, ip: str) -> list[bytes]:
        target = socket.inet_aton(ip)
        with self._cond:
            return [f for f in self.frames
                    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == target]

    def wait_arp_request(self, ip: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.arp_requests_for(ip)
                if found:
                    return found[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no ARP request for {ip} from the guest within "
                                         f"{timeout:g} s ({len(self.frames)} frames seen)")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._listener.close()
        if self._conn is not None:
            self._conn.close()
        self._thread.join(5)


def diagnostics(vm: VirtualMachine) -> str:
    return "\nlast console lines:\n  " + "\n  ".join(vm.console_tail(20))


def run_ok(vm: VirtualMachine, command: str, timeout: float = 60) -> str:
    result = vm.run(command, timeout=timeout)
    assert result.ok, f"{command!r} -> {result.status}: {result.output}{diagnostics(vm)}"
    return result.output


def guest_wait(vm: VirtualMachine, path: str, value: str, timeout: float = 10) -> None:
    """Poll a sysfs file in the guest until it reads `value` (bounded)."""
    tries = int(timeout * 10)
    script = (f"i=0; while [ \"$(cat {path} 2>/dev/null)\" != {value!r} ]; do "
              f"i=$((i+1)); if [ $i -gt {tries} ]; then cat {path}; exit 1; fi; "
              "usleep 100000; done")
    result = vm.run(script, timeout=timeout + 10)
    assert result.ok, (f"{path} did not become {value!r} within {timeout:g} s "
                       f"(last: {result.output.strip()!r}){diagnostics(vm)}")


@pytest.fixture(scope="module")
def lab(guest_image):
    # A short directory: unix socket paths are limited to 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="mnet-qvm-"))
    peer = StreamPeer(workdir / "peer.sock")
    vm = VirtualMachine("qvm", guest_image, nic=NicConfig("stream", peer.path),
                        ip=GUEST_IP, workdir=workdir, progress=print)
    try:
        vm.start()
        BOOT_TIMES.append(("first boot", vm.wait_ready(BOOT_TIMEOUT)))
        yield vm, peer, guest_image
    finally:
        vm.stop()
        peer.close()
        for entry in workdir.iterdir():
            entry.unlink()
        workdir.rmdir()
        print("boot times: " + ", ".join(f"{what} {secs:.1f} s" for what, secs in BOOT_TIMES))


def test_guest_runs_commands_and_has_our_mac(lab):
    vm, peer, image = lab
    assert run_ok(vm, "uname -r").strip() == image.kernel_version
    assert run_ok(vm, "cat /sys/class/net/eth0/address").strip() == vm.mac
    assert GUEST_IP in run_ok(vm, "ip -4 addr show eth0")
    status = vm.qmp.query_status()
    assert status["running"] and status["status"] == "running"


def test_guest_frames_reach_the_stream_peer(lab):
    vm, peer, _ = lab
    run_ok(vm, f"arping -c 1 -w 1 -I eth0 {PEER_IP} || true")
    frame = peer.wait_arp_request(PEER_IP, 10)
    assert frame[:6] == b"\xff" * 6
    assert frame[6:12] == bytes.fromhex(vm.mac.replace(":", ""))


def test_link_down_and_up(lab):
    vm, peer, _ = lab
    guest_wait(vm, "/sys/class/net/eth0/carrier", "1")
    vm.set_link(False)
    guest_wait(vm, "/sys/class/net/eth0/carrier", "0")
    guest_wait(vm, "/sys/class/net/eth0/operstate", "down")
    # Sent while the link is down: QEMU must drop it.
    run_ok(vm, "arping -c 1 -w 1 -I eth0 10.77.0.99 || true")
    vm.set_link(True)
    guest_wait(vm, "/sys/class/net/eth0/carrier", "1")
    guest_wait(vm, "/sys/class/net/eth0/operstate", "up")
    run_ok(vm, "arping -c 1 -w 1 -I eth0 10.77.0.98 || true")
    # The stream keeps order: once the later request is here, the earlier
    # one would have been too.
    peer.wait_arp_request("10.77.0.98", 10)
    assert peer.arp_requests_for("10.77.0.99") == []


def test_hot_unplug_and_plug(lab):
    vm, peer, _ = lab
    vm.unplug_nic(timeout=30)
    assert run_ok(vm, "ls /sys/class/net").split() == ["lo"]
    vm.plug_nic(timeout=30)
    assert run_ok(vm, "cat /sys/class/net/eth0/address").strip() == vm.mac
    assert GUEST_IP in run_ok(vm, "ip -4 addr show eth0")
    run_ok(vm, "arping -c 1 -w 1 -I eth0 10.77.0.97 || true")
    peer.wait_arp_request("10.77.0.97", 10)


def test_reboot(lab):
    vm, _, _ = lab
    run_ok(vm, "echo before > /run/marker")
    BOOT_TIMES.append(("reboot", vm.reboot(BOOT_TIMEOUT)))
    # /run is a tmpfs: a real reboot forgets the marker.
    assert run_ok(vm, "cat /run/marker 2>/dev/null || echo gone").strip() == "gone"
    assert float(run_ok(vm, "cut -d' ' -f1 /proc/uptime")) < BOOT_TIMEOUT
    assert vm.qmp.query_status()["running"]


def test_stop_leaves_no_qemu_behind(lab):
    vm, _, _ = lab
    pid = vm.process.pid
    assert vm.stop() == 0        # QMP quit: QEMU exits by itself
    assert not vm.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(vm.config.qmp_socket)
    assert not os.path.exists(vm.config.command_channel)


def test_boot_timeout_quotes_the_console(guest_image, tmp_path):
    vm = VirtualMachine("qvm-timeout", guest_image, workdir=tmp_path, progress=None)
    try:
        vm.start()
        pid = vm.process.pid
        # Far too short for a TCG boot; the error must show the console.
        with pytest.raises(GuestTimeout, match="(?s)did not answer PING.*console") as info:
            vm.wait_ready(timeout=0.5)
        assert "qvm-timeout" in str(info.value)
    finally:
        vm.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


TESTPMD = shutil.which("dpdk-testpmd") or "/usr/bin/dpdk-testpmd"


def test_vhost_user_nic_against_testpmd(guest_image):
    """The argv facts for vhost-user (memfd share=on, vectors=0 under TCG)
    hold with a real back-end: DPDK's testpmd in icmpecho mode answers the
    guest's ARP and ping, also after a hot-unplug and re-plug."""
    workdir = Path(tempfile.mkdtemp(prefix="mnet-qvu-"))
    sock = workdir / "vu.sock"
    log_path = workdir / "testpmd.log"
    with open(log_path, "wb") as log:
        testpmd = subprocess.Popen(
            [TESTPMD, "--no-huge", "-m", "256", "--no-pci", "--file-prefix",
             f"mnet-qvu-{os.getpid()}", "--lcores", "0@0,1@1",
             "--vdev", f"net_vhost0,iface={sock}", "--",
             "--forward-mode=icmpecho", "--stats-period", "60", "--total-num-mbufs=4096"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    vm = VirtualMachine("qvu", guest_image, nic=NicConfig("vhost-user", str(sock)),
                        ip="10.78.0.2/24", workdir=workdir, progress=print)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert testpmd.poll() is None and time.monotonic() < deadline, \
                f"testpmd did not create {sock}:\n{log_path.read_text(errors='replace')}"
            time.sleep(0.05)
        vm.start()
        BOOT_TIMES.append(("vhost-user boot", vm.wait_ready(BOOT_TIMEOUT)))
        assert "vectors=0" in " ".join(vm.argv())
        assert " 2 packets received" in run_ok(vm, "ping -c 2 -W 5 10.78.0.1", timeout=60)
        vm.unplug_nic(timeout=30)
        vm.plug_nic(timeout=30)
        assert " 2 packets received" in run_ok(vm, "ping -c 2 -W 5 10.78.0.1", timeout=60)
        assert vm.stop() == 0
    finally:
        vm.stop()
        testpmd.send_signal(signal.SIGINT)
        try:
            testpmd.wait(15)
        except subprocess.TimeoutExpired:
            testpmd.kill()
            testpmd.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
