"""Build a qemu-system-x86_64 command line from a VM description (pure).

No process is started and nothing is read here except the existence checks
in `VmConfig.validate()`; `build_argv()` turns a validated `VmConfig` into
the exact argument vector, so the unit tests can pin it down.

Facts the argv honours (see docs/qemu.md):

- Guest RAM always comes from a shared memfd backend the size of ``-m``:
  a vhost-user backend maps it, and without ``share=on`` no packet passes.
- A vhost-user NIC gets ``vectors=0`` (INTx): QEMU 7.2 under TCG segfaults
  when the guest enables a vhost-user NIC that uses MSI-X.
- A vhost-user chardev in client mode gets ``reconnect=1``, otherwise QEMU
  exits at once when the backend's socket is not there yet.
- The command channel is the guest's second serial port (ttyS1), so its
  ``-serial`` comes after the console's.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from qemu.errors import QemuConfigError

__all__ = [
    "extra_qmp_monitor_args",
    "ACCELS",
    "CONSOLES",
    "MACHINES",
    "NIC_KINDS",
    "NicConfig",
    "VmConfig",
    "build_argv",
    "device_args",
    "mac_for",
    "validate_mac",
]

QEMU_BINARY = "qemu-system-x86_64"
ACCELS = ("tcg", "kvm")
MACHINES = ("pc", "q35")
CONSOLES = ("log", "stdio")
NIC_KINDS = ("vhost-user", "stream", "dgram")
COMMAND_CHANNEL_ID = "mnetcmd"

# sun_path is 108 bytes including the terminating NUL.
MAX_UNIX_PATH = 107

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_PROP_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def mac_for(name: str, index: int = 0) -> str:
    """A stable MAC for NIC number `index` of VM `name`: 52:54:00:xx:xx:xx.

    52:54:00 is QEMU's usual prefix; its first octet has the locally
    administered bit set and the multicast bit clear. The last three octets
    come from a hash, so the same VM gets the same MAC on every run.
    """
    digest = hashlib.sha256(f"{name}#{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def validate_mac(mac: str) -> str:
    """Return `mac` in lower case, or raise QemuConfigError if it is not a
    unicast MAC written as six colon-separated hex octets."""
    if not isinstance(mac, str) or not _MAC_RE.match(mac):
        raise QemuConfigError(f"invalid MAC address {mac!r}: expected six "
                              "hex octets like 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise QemuConfigError(f"invalid MAC address {mac!r}: it is a multicast "
                              "address (lowest bit of the first octet set)")
    return mac.lower()


def _escape(value: str | os.PathLike) -> str:
    """Quote a value for QEMU's key=value option syntax (',' is written ',,')."""
    return os.fspath(value).replace(",", ",,")


def extra_qmp_monitor_args(path: str | os.PathLike, id: str = "qmp-extra") -> list[str]:
    """QEMU options for one more QMP monitor on unix socket `path`, for a
    second client (QEMU serves one per monitor): `mnet vm --qmp` gives it
    to the switch, which tells the guest of link changes through it."""
    _check_unix_path("QMP socket", path)
    return ["-chardev", f"socket,id={id},path={_escape(path)},server=on,wait=off",
            "-mon", f"chardev={id},mode=control"]


def _check_unix_path(what: str, path: str | os.PathLike) -> None:
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise QemuConfigError(f"{what} {os.fspath(path)!r} is longer than the "
                              f"{MAX_UNIX_PATH} bytes a unix socket path may have")


@dataclass
class NicConfig:
    """One virtio-net-pci NIC and the netdev behind it.

    kind:
      ``vhost-user``: `path` is the vhost-user socket. QEMU connects to it
        (and reconnects) unless `server` is set, in which case QEMU listens
        and waits for the backend before the guest starts.
      ``stream``: `path` is a unix stream socket carrying length-prefixed
        frames; QEMU connects to it, or listens on it if `server` is set.
      ``dgram``: QEMU binds `local_path` and sends datagrams to `path`.
    id: the netdev id; the device is ``<id>-dev``, a vhost-user chardev is
      ``<id>-chr`` and on q35 the PCIe root port is ``<id>-rp``.
    mac: None means a stable MAC derived from the VM name (`mac_for`).
    device_props: extra ``-device virtio-net-pci`` properties, e.g.
      ``{"mrg_rxbuf": "off"}``; they override the defaults (``vectors``,
      ``romfile``).
    """

    kind: str
    path: str | os.PathLike
    mac: str | None = None
    id: str = "net0"
    server: bool = False
    local_path: str | os.PathLike | None = None
    device_props: dict[str, str] = field(default_factory=dict)

    @property
    def netdev_id(self) -> str:
        return self.id

    @property
    def device_id(self) -> str:
        return f"{self.id}-dev"

    @property
    def chardev_id(self) -> str:
        return f"{self.id}-chr"

    @property
    def port_id(self) -> str:
        return f"{self.id}-rp"

    def validate(self) -> None:
        """Raise QemuConfigError if this NIC description cannot work."""
        if self.kind not in NIC_KINDS:
            raise QemuConfigError(f"unknown NIC kind {self.kind!r}; "
                                  f"expected one of {', '.join(NIC_KINDS)}")
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise QemuConfigError(f"invalid NIC id {self.id!r}: use a letter then "
                                  "letters, digits, '-', '_' or '.' (max 32)")
        if self.mac is not None:
            validate_mac(self.mac)
        if not os.fspath(self.path):
            raise QemuConfigError(f"NIC {self.id}: a socket path is required")
        _check_unix_path(f"NIC {self.id} socket path", self.path)
        if self.kind == "dgram":
            if self.local_path is None:
                raise QemuConfigError(f"NIC {self.id}: a dgram NIC needs local_path "
                                      "(the unix socket QEMU binds)")
            _check_unix_path(f"NIC {self.id} local path", self.local_path)
            if self.server:
                raise QemuConfigError(f"NIC {self.id}: server= has no meaning for dgram")
        elif self.local_path is not None:
            raise QemuConfigError(f"NIC {self.id}: local_path is only for dgram NICs")
        for key, value in self.device_props.items():
            if not _PROP_RE.match(key) or key in ("id", "netdev", "mac", "bus"):
                raise QemuConfigError(f"NIC {self.id}: device property {key!r} "
                                      "is invalid or managed by NicConfig")
            if not isinstance(value, str):
                raise QemuConfigError(f"NIC {self.id}: device property {key!r} "
                                      f"must be a string, not {type(value).__name__}")


@dataclass
class VmConfig:
    """Everything that goes on one QEMU command line.

    console: ``log`` writes the guest's first serial port to `console_log`;
    ``stdio`` puts it on the terminal (Ctrl-A X quits QEMU) and, if
    `console_log` is set, also copies it there.
    command_channel: unix socket QEMU serves as the guest's ttyS1.
    qmp_socket: unix socket QEMU serves QMP on.
    """

    name: str
    kernel: str | os.PathLike
    initrd: str | os.PathLike
    append: str = ""
    memory_mb: int = 256
    cpus: int = 1
    accel: str = "tcg"
    machine: str = "pc"
    nics: list[NicConfig] = field(default_factory=list)
    console: str = "log"
    console_log: str | os.PathLike | None = None
    command_channel: str | os.PathLike | None = None
    qmp_socket: str | os.PathLike | None = None
    extra_args: list[str] = field(default_factory=list)
    qemu_binary: str = QEMU_BINARY

    def validate(self) -> None:
        """Raise QemuConfigError with a clear message for the first problem."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise QemuConfigError(f"invalid VM name {self.name!r}: use a letter then "
                                  "letters, digits, '-', '_' or '.' (max 63)")
        for what, path in (("kernel", self.kernel), ("initrd", self.initrd)):
            p = Path(path)
            if not p.is_file():
                raise QemuConfigError(f"{what} image {os.fspath(p)!r} does not exist "
                                      "or is not a file (build the guest image first)")
        if "\n" in self.append:
            raise QemuConfigError("kernel command line must not contain a newline")
        if self.accel not in ACCELS:
            raise QemuConfigError(f"unknown accelerator {self.accel!r}; "
                                  f"expected one of {', '.join(ACCELS)}")
        if self.machine not in MACHINES:
            raise QemuConfigError(f"unknown machine {self.machine!r}; "
                                  f"expected one of {', '.join(MACHINES)}")
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int) \
                or not 64 <= self.memory_mb <= 65536:
            raise QemuConfigError(f"memory_mb must be an integer from 64 to 65536, "
                                  f"not {self.memory_mb!r}")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, int) \
                or not 1 <= self.cpus <= 64:
            raise QemuConfigError(f"cpus must be an integer from 1 to 64, not {self.cpus!r}")
        if self.console not in CONSOLES:
            raise QemuConfigError(f"unknown console mode {self.console!r}; "
                                  f"expected one of {', '.join(CONSOLES)}")
        if self.console == "log" and self.console_log is None:
            raise QemuConfigError("console='log' needs a console_log path")
        for what, path in (("command channel", self.command_channel),
                           ("QMP socket", self.qmp_socket)):
            if path is not None:
                _check_unix_path(what, path)
        seen: set[str] = set()
        for nic in self.nics:
            nic.validate()
            if nic.id in seen:
                raise QemuConfigError(f"two NICs have the id {nic.id!r}")
            seen.add(nic.id)
        if not all(isinstance(a, str) for a in self.extra_args):
            raise QemuConfigError("extra_args must be a list of strings")

    def nic_mac(self, index: int) -> str:
        """The MAC NIC number `index` gets: its own, or one derived from the name."""
        nic = self.nics[index]
        return validate_mac(nic.mac) if nic.mac else mac_for(self.name, index)


def netdev_args(nic: NicConfig) -> list[str]:
    """The -chardev/-netdev options for `nic` (everything but the device)."""
    path = _escape(nic.path)
    if nic.kind == "vhost-user":
        mode = "server=on" if nic.server else "reconnect=1"
        return ["-chardev", f"socket,id={nic.chardev_id},path={path},{mode}",
                "-netdev", f"vhost-user,id={nic.netdev_id},chardev={nic.chardev_id}"]
    if nic.kind == "stream":
        server = "on" if nic.server else "off"
        return ["-netdev", f"stream,id={nic.netdev_id},server={server},"
                           f"addr.type=unix,addr.path={path}"]
    return ["-netdev", f"dgram,id={nic.netdev_id},"
                       f"local.type=unix,local.path={_escape(nic.local_path)},"
                       f"remote.type=unix,remote.path={path}"]


def device_props(nic: NicConfig, mac: str, machine: str) -> dict[str, str]:
    """The virtio-net-pci properties for `nic`, as QMP device_add wants them."""
    props = {"id": nic.device_id, "netdev": nic.netdev_id, "mac": mac}
    if machine == "q35":
        # A PCIe device can only be unplugged from a hot-plug capable port.
        props["bus"] = nic.port_id
    if nic.kind == "vhost-user":
        props["vectors"] = "0"
    # No iPXE option ROM: the kernel is booted directly, and SeaBIOS would
    # spend about a second initialising a ROM nobody uses.
    props["romfile"] = ""
    props.update(nic.device_props)
    return props


def device_args(nic: NicConfig, mac: str, machine: str, index: int = 0) -> list[str]:
    """The -device options for NIC number `index` (plus its root port on q35)."""
    args = []
    if machine == "q35":
        # Each root port needs its own chassis number.
        args += ["-device", f"pcie-root-port,id={nic.port_id},chassis={index + 1}"]
    props = device_props(nic, mac, machine)
    args += ["-device", "virtio-net-pci," + ",".join(f"{k}={_escape(v)}"
                                                     for k, v in props.items())]
    return args


def build_argv(cfg: VmConfig) -> list[str]:
    """Validate `cfg` and return the full QEMU argument vector."""
    cfg.validate()
    mem = cfg.memory_mb
    argv = [cfg.qemu_binary, "-name", cfg.name,
            "-accel", cfg.accel]
    if cfg.accel == "kvm":
        argv += ["-cpu", "host"]
    argv += ["-m", str(mem), "-smp", str(cfg.cpus),
             "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
             "-object", f"memory-backend-memfd,id=mem,size={mem}M,share=on",
             "-machine", f"{cfg.machine},memory-backend=mem",
             "-kernel", os.fspath(cfg.kernel),
             "-initrd", os.fspath(cfg.initrd),
             "-append", cfg.append]
    if cfg.console == "log":
        argv += ["-chardev", f"file,id=con,path={_escape(cfg.console_log)}"]
    else:
        # signal=off: Ctrl-C goes to the guest; Ctrl-A X still quits QEMU.
        stdio = "stdio,id=con,mux=on,signal=off"
        if cfg.console_log is not None:
            stdio += f",logfile={_escape(cfg.console_log)},logappend=off"
        argv += ["-chardev", stdio]
    argv += ["-serial", "chardev:con"]
    if cfg.command_channel is not None:
        argv += ["-chardev", f"socket,id={COMMAND_CHANNEL_ID},"
                             f"path={_escape(cfg.command_channel)},server=on,wait=off",
                 "-serial", f"chardev:{COMMAND_CHANNEL_ID}"]
    if cfg.qmp_socket is not None:
        argv += ["-chardev", f"socket,id=qmp,path={_escape(cfg.qmp_socket)},"
                             "server=on,wait=off",
                 "-mon", "chardev=qmp,mode=control"]
    for index, nic in enumerate(cfg.nics):
        argv += netdev_args(nic)
        argv += device_args(nic, cfg.nic_mac(index), cfg.machine, index)
    argv += list(cfg.extra_args)
    return argv
