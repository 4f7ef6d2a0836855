"""Boot the real guest image under QEMU (TCG) and use its command channel.

The NIC is a virtio-net-pci on a stream netdev that points at a unix socket
nobody listens on: the driver binds and eth0 comes up, but no frame can
leave the VM.
"""

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from guest.channel import GuestChannel
from guest.errors import GuestError
from guest.image import build_image, kernel_cmdline
from guest.init import BOOT_DONE_MARKER, CHANNEL_READY_MARKER

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 180  # TCG on a busy 2-core machine; a quiet one boots in about 7 s


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no file)"
    return "\n".join(text.splitlines()[-lines:])


class Vm:
    def __init__(self, workdir: Path, proc: subprocess.Popen, channel: GuestChannel, kernel_version: str):
        self.workdir = workdir
        self.proc = proc
        self.channel = channel
        self.kernel_version = kernel_version
        self.console = workdir / "console.log"
        self.qemu_log = workdir / "qemu.log"
        self.boot_seconds = 0.0

    def diagnostics(self) -> str:
        return (f"\n--- QEMU exit status: {self.proc.poll()}\n--- console tail:\n{tail(self.console)}"
                f"\n--- QEMU output:\n{tail(self.qemu_log, 10)}")

    def run(self, command: str, timeout: float = 60):
        try:
            return self.channel.run(command, timeout=timeout)
        except GuestError as exc:
            pytest.fail(f"{command!r}: {exc}{self.diagnostics()}")


@pytest.fixture(scope="module")
def vm():
    image = build_image()
    # A short directory: unix socket paths are limited to 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="mnet-guest-"))
    sock = workdir / "cmd.sock"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nographic", "-monitor", "none",
        "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", kernel_cmdline(ip="10.0.0.1/24", gateway="10.0.0.254", hostname="mnet-test"),
        "-serial", f"file:{workdir / 'console.log'}",
        "-chardev", f"socket,id=mnetcmd,path={sock},server=on,wait=off",
        "-serial", "chardev:mnetcmd",
        "-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={workdir / 'nobody.sock'}",
        # romfile= skips the iPXE option ROM (and its boot prompt delay).
        "-device", "virtio-net-pci,netdev=n0,vectors=0,romfile=",
    ]
    with open(workdir / "qemu.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    machine = Vm(workdir, proc, GuestChannel(str(sock)), image.kernel_version)
    started = time.monotonic()
    try:
        machine.channel.wait_ready(timeout=BOOT_TIMEOUT)
    except GuestError as exc:
        diagnostics = machine.diagnostics()
        proc.kill()
        proc.wait(10)
        pytest.fail(f"guest did not become ready: {exc}{diagnostics}")
    machine.boot_seconds = time.monotonic() - started
    print(f"\nguest boot (QEMU start to command channel PONG): {machine.boot_seconds:.1f}s")
    yield machine
    machine.channel.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def test_boot_markers_and_time(vm, record_property):
    record_property("boot_seconds", round(vm.boot_seconds, 1))
    console = vm.console.read_text(errors="replace")
    assert "mnet-guest: modules loaded: virtio_ring" in console and "virtio_net" in console, vm.diagnostics()
    assert "mnet-guest: eth0 10.0.0.1/24 up" in console, vm.diagnostics()
    assert BOOT_DONE_MARKER in console and CHANNEL_READY_MARKER in console, vm.diagnostics()
    assert vm.boot_seconds < BOOT_TIMEOUT


def test_uname_and_exit_status(vm):
    result = vm.run("uname -r")
    assert (result.status, result.output) == (0, vm.kernel_version + "\n")
    result = vm.run("echo hello; exit 3")
    assert (result.status, result.output) == (3, "hello\n")


def test_network_configuration(vm):
    assert vm.run("hostname").output == "mnet-test\n"
    addr = vm.run("ip -o -4 addr show dev eth0").output
    assert "10.0.0.1/24" in addr
    assert "default via 10.0.0.254 dev eth0" in vm.run("ip route").output


def test_console_shell_owns_ttyS0(vm):
    # Job control on the console needs the shell to have ttyS0 (4:64) as its controlling tty.
    found = vm.run("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
                   "[ \"$c\" = '/bin/sh -l ' ] && cut -d' ' -f7 $p/stat; done").output.split()
    assert found == [str(4 << 8 | 64)], found


def test_200k_of_binary_output_arrives_intact(vm):
    digest = vm.run("head -c 204800 /dev/urandom > /tmp/blob && md5sum < /tmp/blob")
    assert digest.status == 0, digest.output
    started = time.monotonic()
    result = vm.run("cat /tmp/blob", timeout=120)
    elapsed = time.monotonic() - started
    print(f"\n200 KiB through the serial channel in {elapsed:.1f}s")
    assert result.status == 0
    assert len(result.output_bytes) == 204800
    assert hashlib.md5(result.output_bytes).hexdigest() == digest.output.split()[0]


def test_iperf3_and_socat_run(vm):
    iperf = vm.run("iperf3 --version")
    assert iperf.status == 0 and iperf.output.startswith("iperf 3"), iperf.output
    socat = vm.run("socat -V")
    assert socat.status == 0 and "socat version" in socat.output, socat.output


def test_background_server_and_concurrent_command(vm):
    started = time.monotonic()
    assert vm.run("iperf3 -s -D -p 5201 >/dev/null 2>&1 & echo started").output == "started\n"
    assert time.monotonic() - started < 30
    slow = vm.channel.start("sleep 2; echo slow")
    assert vm.run("echo fast").output == "fast\n"
    assert vm.channel.wait(slow, timeout=60).output == "slow\n"


def test_poweroff_ends_qemu(vm):
    vm.channel.start("poweroff -f")
    try:
        status = vm.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU still running 60 s after poweroff -f{vm.diagnostics()}")
    assert status == 0, vm.diagnostics()
