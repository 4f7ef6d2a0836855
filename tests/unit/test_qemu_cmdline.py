"""qemu.cmdline: exact argv for each NIC kind and console mode, and every
validation error."""
from pathlib import Path

import pytest

from qemu import cmdline
from qemu.cmdline import NicConfig, VmConfig, build_argv, mac_for, validate_mac
from qemu.errors import QemuConfigError, QemuError


@pytest.fixture
def images(tmp_path):
    kernel = tmp_path / "vmlinuz"
    initrd = tmp_path / "initrd.gz"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    return kernel, initrd


def make(images, tmp_path, **kw):
    kernel, initrd = images
    base = dict(name="vm0", kernel=kernel, initrd=initrd, append="console=ttyS0",
                console_log=tmp_path / "console.log")
    base.update(kw)
    return VmConfig(**base)


def head(kernel, initrd, log, *, mem=256, machine="pc", accel="tcg", name="vm0"):
    """The argv every VM starts with (console in a log file)."""
    argv = ["qemu-system-x86_64", "-name", name, "-accel", accel]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    return argv + [
        "-m", str(mem), "-smp", "1", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot",
        "-object", f"memory-backend-memfd,id=mem,size={mem}M,share=on",
        "-machine", f"{machine},memory-backend=mem",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", "console=ttyS0",
        "-chardev", f"file,id=con,path={log}", "-serial", "chardev:con"]


def test_minimal_vm_argv(images, tmp_path):
    kernel, initrd = images
    log = tmp_path / "console.log"
    assert build_argv(make(images, tmp_path)) == head(kernel, initrd, log)


def test_full_vhost_user_vm_argv(images, tmp_path):
    kernel, initrd = images
    log = tmp_path / "console.log"
    cfg = make(images, tmp_path, memory_mb=512,
               command_channel="/run/t/cmd.sock", qmp_socket="/run/t/qmp.sock",
               nics=[NicConfig("vhost-user", "/run/t/vm0.sock", mac="52:54:00:12:34:56")],
               extra_args=["-trace", "vhost_user_*"])
    assert build_argv(cfg) == head(kernel, initrd, log, mem=512) + [
        "-chardev", "socket,id=mnetcmd,path=/run/t/cmd.sock,server=on,wait=off",
        "-serial", "chardev:mnetcmd",
        "-chardev", "socket,id=qmp,path=/run/t/qmp.sock,server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", "socket,id=net0-chr,path=/run/t/vm0.sock,reconnect=1",
        "-netdev", "vhost-user,id=net0,chardev=net0-chr",
        "-device", "virtio-net-pci,id=net0-dev,netdev=net0,mac=52:54:00:12:34:56,vectors=0,romfile=",
        "-trace", "vhost_user_*"]


def test_command_channel_is_the_second_serial_port(images, tmp_path):
    argv = build_argv(make(images, tmp_path, command_channel="/run/t/cmd.sock"))
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == ["chardev:con", "chardev:mnetcmd"]


def test_vhost_user_server_mode(images, tmp_path):
    cfg = make(images, tmp_path, nics=[NicConfig("vhost-user", "/run/vu.sock", server=True,
                                                 mac="52:54:00:00:00:01")])
    argv = build_argv(cfg)
    assert "socket,id=net0-chr,path=/run/vu.sock,server=on" in argv


def test_stream_and_dgram_nics(images, tmp_path):
    cfg = make(images, tmp_path, nics=[
        NicConfig("stream", "/run/s.sock", mac="52:54:00:00:00:01"),
        NicConfig("stream", "/run/l.sock", id="net1", server=True, mac="52:54:00:00:00:02"),
        NicConfig("dgram", "/run/remote.sock", id="net2", local_path="/run/local.sock",
                  mac="52:54:00:00:00:03", device_props={"mrg_rxbuf": "off"}),
    ])
    tail = build_argv(cfg)[len(head(*images, tmp_path / "console.log")):]
    assert tail == [
        "-netdev", "stream,id=net0,server=off,addr.type=unix,addr.path=/run/s.sock",
        "-device", "virtio-net-pci,id=net0-dev,netdev=net0,mac=52:54:00:00:00:01,romfile=",
        "-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=/run/l.sock",
        "-device", "virtio-net-pci,id=net1-dev,netdev=net1,mac=52:54:00:00:00:02,romfile=",
        "-netdev", "dgram,id=net2,local.type=unix,local.path=/run/local.sock,"
                   "remote.type=unix,remote.path=/run/remote.sock",
        "-device", "virtio-net-pci,id=net2-dev,netdev=net2,mac=52:54:00:00:00:03,romfile=,mrg_rxbuf=off",
    ]


def test_q35_puts_each_nic_on_its_own_root_port(images, tmp_path):
    cfg = make(images, tmp_path, machine="q35", nics=[
        NicConfig("vhost-user", "/run/a.sock", mac="52:54:00:00:00:01"),
        NicConfig("stream", "/run/b.sock", id="net1", mac="52:54:00:00:00:02")])
    argv = build_argv(cfg)
    assert "q35,memory-backend=mem" in argv
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert devices == [
        "pcie-root-port,id=net0-rp,chassis=1",
        "virtio-net-pci,id=net0-dev,netdev=net0,mac=52:54:00:00:00:01,bus=net0-rp,vectors=0,romfile=",
        "pcie-root-port,id=net1-rp,chassis=2",
        "virtio-net-pci,id=net1-dev,netdev=net1,mac=52:54:00:00:00:02,bus=net1-rp,romfile="]


def test_device_props_override_defaults(images, tmp_path):
    nic = NicConfig("vhost-user", "/run/a.sock", mac="52:54:00:00:00:01",
                    device_props={"vectors": "3", "mrg_rxbuf": "off"})
    props = cmdline.device_props(nic, "52:54:00:00:00:01", "pc")
    assert props == {"id": "net0-dev", "netdev": "net0", "mac": "52:54:00:00:00:01",
                     "vectors": "3", "romfile": "", "mrg_rxbuf": "off"}


def test_kvm_adds_host_cpu(images, tmp_path):
    kernel, initrd = images
    argv = build_argv(make(images, tmp_path, accel="kvm"))
    assert argv == head(kernel, initrd, tmp_path / "console.log", accel="kvm")


def test_stdio_console_with_and_without_log(images, tmp_path):
    argv = build_argv(make(images, tmp_path, console="stdio", console_log=None))
    assert argv[argv.index("-chardev") + 1] == "stdio,id=con,mux=on,signal=off"
    log = tmp_path / "c.log"
    argv = build_argv(make(images, tmp_path, console="stdio", console_log=log))
    assert argv[argv.index("-chardev") + 1] == \
        f"stdio,id=con,mux=on,signal=off,logfile={log},logappend=off"


def test_commas_in_paths_are_doubled(images, tmp_path):
    cfg = make(images, tmp_path, qmp_socket="/run/a,b/qmp.sock",
               console_log="/run/a,b/console.log",
               nics=[NicConfig("vhost-user", "/run/a,b/vu.sock", mac="52:54:00:00:00:01")])
    argv = build_argv(cfg)
    assert "file,id=con,path=/run/a,,b/console.log" in argv
    assert "socket,id=qmp,path=/run/a,,b/qmp.sock,server=on,wait=off" in argv
    assert "socket,id=net0-chr,path=/run/a,,b/vu.sock,reconnect=1" in argv


def test_generated_mac_is_stable_local_and_unicast(images, tmp_path):
    cfg = make(images, tmp_path, nics=[NicConfig("stream", "/run/s.sock"),
                                       NicConfig("stream", "/run/t.sock", id="net1")])
    argv = build_argv(cfg)
    mac0, mac1 = mac_for("vm0", 0), mac_for("vm0", 1)
    assert f"virtio-net-pci,id=net0-dev,netdev=net0,mac={mac0},romfile=" in argv
    assert f"virtio-net-pci,id=net1-dev,netdev=net1,mac={mac1},romfile=" in argv
    assert mac0 != mac1 and mac0 == mac_for("vm0", 0) and mac0 != mac_for("vm1", 0)
    for mac in (mac0, mac1):
        assert mac.startswith("52:54:00:")
        assert validate_mac(mac) == mac
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01


def test_validate_mac():
    assert validate_mac("52:54:00:AB:cd:EF") == "52:54:00:ab:cd:ef"
    for bad in ("52:54:00:ab:cd", "52-54-00-ab-cd-ef", "52:54:00:ab:cd:eg",
                "52:54:00:ab:cd:ef:00", "", None):
        with pytest.raises(QemuConfigError, match="invalid MAC"):
            validate_mac(bad)
    with pytest.raises(QemuConfigError, match="multicast"):
        validate_mac("01:00:5e:00:00:01")


def test_missing_kernel_and_initrd(images, tmp_path):
    with pytest.raises(QemuConfigError, match="kernel image .*nope.* does not exist"):
        build_argv(make(images, tmp_path, kernel=tmp_path / "nope"))
    with pytest.raises(QemuConfigError, match="initrd image"):
        build_argv(make(images, tmp_path, initrd=tmp_path))   # a directory


@pytest.mark.parametrize("field,value,message", [
    ("accel", "hvf", "unknown accelerator 'hvf'"),
    ("machine", "virt", "unknown machine"),
    ("console", "vnc", "unknown console mode"),
    ("memory_mb", 16, "memory_mb must be"),
    ("memory_mb", "256", "memory_mb must be"),
    ("memory_mb", True, "memory_mb must be"),
    ("cpus", 0, "cpus must be"),
    ("name", "vm 0", "invalid VM name"),
    ("name", "0vm", "invalid VM name"),
    ("name", "vm,0", "invalid VM name"),
    ("append", "a\nb", "newline"),
    ("console_log", None, "needs a console_log"),
    ("qmp_socket", "/tmp/" + "x" * 120, "longer than the 107 bytes"),
    ("command_channel", "/tmp/" + "y" * 120, "longer than the 107 bytes"),
    ("extra_args", ["-S", 3], "list of strings"),
])
def test_invalid_vm_fields(images, tmp_path, field, value, message):
    with pytest.raises(QemuConfigError, match=message):
        build_argv(make(images, tmp_path, **{field: value}))


@pytest.mark.parametrize("nic,message", [
    (NicConfig("tap", "/run/x"), "unknown NIC kind 'tap'"),
    (NicConfig("stream", "/run/x", mac="zz:54:00:00:00:01"), "invalid MAC"),
    (NicConfig("stream", "/run/x", id="net 0"), "invalid NIC id"),
    (NicConfig("stream", ""), "socket path is required"),
    (NicConfig("stream", "/run/" + "z" * 110), "longer than"),
    (NicConfig("dgram", "/run/x"), "needs local_path"),
    (NicConfig("dgram", "/run/x", local_path="/run/y", server=True), "no meaning for dgram"),
    (NicConfig("stream", "/run/x", local_path="/run/y"), "only for dgram"),
    (NicConfig("stream", "/run/x", device_props={"netdev": "other"}), "managed by NicConfig"),
    (NicConfig("stream", "/run/x", device_props={"bad key": "1"}), "is invalid"),
    (NicConfig("stream", "/run/x", device_props={"vectors": 0}), "must be a string"),
])
def test_invalid_nics(images, tmp_path, nic, message):
    with pytest.raises(QemuConfigError, match=message):
        build_argv(make(images, tmp_path, nics=[nic]))


def test_duplicate_nic_ids(images, tmp_path):
    nics = [NicConfig("stream", "/run/a"), NicConfig("stream", "/run/b")]
    with pytest.raises(QemuConfigError, match="two NICs have the id 'net0'"):
        build_argv(make(images, tmp_path, nics=nics))


def test_config_error_is_a_value_error_and_a_qemu_error(images, tmp_path):
    with pytest.raises(ValueError):
        build_argv(make(images, tmp_path, accel="xen"))
    with pytest.raises(QemuError):
        build_argv(make(images, tmp_path, accel="xen"))


def test_nic_ids():
    nic = NicConfig("vhost-user", Path("/run/x.sock"), id="up1")
    assert (nic.netdev_id, nic.device_id, nic.chardev_id, nic.port_id) == \
        ("up1", "up1-dev", "up1-chr", "up1-rp")


def test_an_extra_qmp_monitor_for_the_switch():
    from qemu.cmdline import extra_qmp_monitor_args

    assert extra_qmp_monitor_args("/tmp/a,b/qmp.sock") == [
        "-chardev", "socket,id=qmp-extra,path=/tmp/a,,b/qmp.sock,server=on,wait=off",
        "-mon", "chardev=qmp-extra,mode=control"]
    with pytest.raises(QemuConfigError, match="longer than"):
        extra_qmp_monitor_args("/tmp/" + "x" * 200)
