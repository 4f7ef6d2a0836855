"""qemu.vm.VirtualMachine without booting anything: configuration, argv,
socket placement, misuse, and a QEMU that dies at start (a stand-in script)."""
import os
import sys
from pathlib import Path

import pytest

from guest.errors import GuestChannelError
from guest.image import GuestImage
from qemu.cmdline import NicConfig, mac_for
from qemu.errors import QemuConfigError, QemuError, QemuExitedError
from qemu.vm import VirtualMachine


@pytest.fixture
def image(tmp_path):
    kernel = tmp_path / "vmlinuz"
    initrd = tmp_path / "initrd.gz"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    return GuestImage(kernel, initrd, "6.1.0-test")


def vm(image, workdir, **kw):
    kw.setdefault("progress", None)
    return VirtualMachine("vm0", image, workdir=workdir, **kw)


def test_argv_carries_image_cmdline_nic_and_sockets(image, tmp_path):
    workdir = Path("/tmp") / f"qvm-{os.getpid()}"
    machine = vm(image, workdir, ip="10.0.0.2/24", gateway="10.0.0.1",
                 nic=NicConfig("vhost-user", "/run/vm0.sock"))
    try:
        argv = machine.argv()
        append = argv[argv.index("-append") + 1]
        assert "mnet.ip=10.0.0.2/24" in append and "mnet.gw=10.0.0.1" in append
        assert "mnet.hostname=vm0" in append and "console=ttyS0" in append
        assert argv[argv.index("-kernel") + 1] == str(image.kernel)
        assert machine.mac == mac_for("vm0", 0)
        assert f"virtio-net-pci,id=net0-dev,netdev=net0,mac={machine.mac},vectors=0,romfile=" in argv
        assert f"socket,id=mnetcmd,path={workdir}/cmd.sock,server=on,wait=off" in argv
        assert machine.console_log == workdir / "console.log"
        assert not machine.running and machine.console_tail() == []
    finally:
        machine.stop()
        workdir.rmdir()


def test_mac_argument_overrides_the_nics(image, tmp_path):
    nic = NicConfig("stream", "/run/s.sock", mac="52:54:00:00:00:01")
    assert vm(image, tmp_path, nic=nic).mac == "52:54:00:00:00:01"
    assert vm(image, tmp_path, nic=nic, mac="52:54:00:AA:00:02").mac == "52:54:00:aa:00:02"
    assert nic.mac == "52:54:00:00:00:01"      # the caller's NicConfig is not changed


def test_long_workdir_gets_short_socket_dir_removed_on_stop(image, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    machine = vm(image, deep)
    sock = Path(machine.config.qmp_socket)
    assert len(os.fsencode(sock)) <= 107 and sock.parent.is_dir()
    assert machine.console_log.parent == deep
    machine.stop()
    assert not sock.parent.exists()


@pytest.mark.parametrize("kw,message", [
    ({"mac": "52:54:00:00:00:01"}, "no NIC"),
    ({"nic": NicConfig("stream", "/run/s"), "mac": "nonsense"}, "invalid MAC"),
    ({"ip": "10.0.0.2"}, "prefix length"),
    ({"gateway": "10.0.0.1"}, "needs an ip"),
    ({"accel": "hax"}, "unknown accelerator"),
    ({"memory_mb": 1}, "memory_mb"),
    ({"console": "serial"}, "console mode"),
])
def test_bad_configuration(image, tmp_path, kw, message):
    with pytest.raises(QemuConfigError, match=message):
        vm(image, tmp_path, **kw)


def test_missing_image_files(tmp_path):
    image = GuestImage(tmp_path / "no-kernel", tmp_path / "no-initrd", "x")
    with pytest.raises(QemuConfigError, match="kernel image .* does not exist"):
        vm(image, tmp_path)


def test_hostname_is_derived_from_a_name_with_dots(image, tmp_path):
    machine = VirtualMachine("lab.vm_1", image, workdir=tmp_path, progress=None)
    assert "mnet.hostname=lab-vm-1" in machine.config.append


def test_misuse_before_start(image, tmp_path):
    machine = vm(image, tmp_path)
    with pytest.raises(QemuError, match="not been started"):
        machine.wait_ready(1)
    with pytest.raises(GuestChannelError, match="not ready"):
        machine.run("true")
    with pytest.raises(QemuConfigError, match="has no NIC"):
        machine.set_link(False)
    with pytest.raises(QemuConfigError, match="has no NIC"):
        machine.unplug_nic()
    with pytest.raises(QemuError, match="not been started"):
        machine.reboot()
    assert machine.stop() is None


def test_qemu_dying_at_start_is_reported_with_its_stderr(image, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "qemu-system-x86_64"
    fake.write_text(f"#!{sys.executable}\nimport sys\n"
                    "sys.stderr.write('qemu-system-x86_64: -netdev vhost-user: "
                    "Failed to connect to socket\\n')\nsys.exit(1)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    lines = []
    machine = VirtualMachine("vm0", image, workdir=tmp_path / "w", progress=lines.append)
    with pytest.raises(QemuExitedError, match="(?s)exit status 1.*Failed to connect") as info:
        machine.start()
    assert info.value.returncode == 1
    assert lines and lines[0].startswith("vm0: starting QEMU")
    assert (tmp_path / "w" / "qemu.stderr").read_text().startswith("qemu-system-x86_64:")
    assert not machine.running
    with pytest.raises(QemuError, match="already started"):
        machine.start()
    machine.stop()
