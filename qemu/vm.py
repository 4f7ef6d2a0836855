"""One guest VM: QEMU process + QMP + the guest command channel.

    image = guest.image.build_image()
    nic = NicConfig("vhost-user", "/run/mnet/vm0.sock")
    with VirtualMachine("vm0", image, nic=nic, ip="10.0.0.2/24",
                        workdir=Path("/tmp/vm0")) as vm:
        vm.wait_ready()
        print(vm.run("ping -c 1 10.0.0.1").output)
        vm.set_link(False)

This is the layer the CLI, the demo and the integration tests use. Every
wait is bounded; a failure message carries what QEMU wrote on stderr and
the last lines of the guest console, because "timed out" alone never says
why a guest did not come up.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from guest.channel import CommandResult, GuestChannel
from guest.errors import GuestChannelError, GuestTimeout
from guest.image import GuestImage, kernel_cmdline

from qemu import cmdline
from qemu.cmdline import NicConfig, VmConfig
from qemu.control import QmpControl
from qemu.errors import QemuConfigError, QemuError, QemuExitedError, QmpError
from qemu.launcher import QemuProcess

__all__ = ["VirtualMachine", "CommandResult"]

Progress = Callable[[str], None]

# How long QEMU gets to answer on QMP after it starts. QEMU does not answer
# while it waits for a vhost-user backend, hence more than a few seconds.
QMP_CONNECT_TIMEOUT = 30.0
CONSOLE_TAIL_LINES = 15


class VirtualMachine:
    """A guest booted from a `GuestImage` with at most one NIC.

    nic: the NIC (None for no network); `mac` overrides its MAC, and with
    neither a stable MAC is derived from `name`. ip ("ADDR/PREFIX"),
    gateway: eth0's configuration inside the guest. workdir: console log,
    QEMU's stderr and (if the path is short enough) the sockets live there.
    console: 'log' (to workdir/console.log) or 'stdio' (the terminal, also
    copied to the log). progress: called with one line per slow step.
    """

    def __init__(self, name: str, image: GuestImage, *, nic: NicConfig | None = None,
                 ip: str | None = None, gateway: str | None = None,
                 mac: str | None = None, workdir: str | os.PathLike,
                 accel: str = "tcg", memory_mb: int = 256, console: str = "log",
                 machine: str = "pc", cpus: int = 1, append: Iterable[str] = (),
                 extra_args: Iterable[str] = (), progress: Progress | None = print) -> None:
        self.name = name
        self.image = image
        self.workdir = Path(workdir)
        self.progress: Progress = progress or (lambda _line: None)
        if mac is not None:
            mac = cmdline.validate_mac(mac)
        if nic is not None:
            nic = dataclasses.replace(nic, mac=mac or nic.mac or cmdline.mac_for(name, 0))
        elif mac is not None:
            raise QemuConfigError("a MAC was given but the VM has no NIC")
        self.nic = nic
        self.ip = ip
        try:
            append_line = kernel_cmdline(ip=ip, gateway=gateway, hostname=_hostname(name),
                                         extra=tuple(append))
        except ValueError as exc:
            raise QemuConfigError(str(exc)) from None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sockdir = self._socket_dir()
        self.config = VmConfig(
            name=name, kernel=image.kernel, initrd=image.initrd, append=append_line,
            memory_mb=memory_mb, cpus=cpus, accel=accel, machine=machine,
            nics=[nic] if nic is not None else [], console=console,
            console_log=self.workdir / "console.log",
            command_channel=self._sockdir / "cmd.sock",
            qmp_socket=self._sockdir / "qmp.sock", extra_args=list(extra_args))
        try:
            self.config.validate()
        except QemuConfigError:
            if self._own_sockdir:
                shutil.rmtree(self._sockdir, ignore_errors=True)
            raise
        self.process: QemuProcess | None = None
        self.qmp: QmpControl | None = None
        self._channel: GuestChannel | None = None
        self._ready = False
        self._started_at = 0.0
        #: Seconds from the last start or reset until the guest answered.
        self.boot_time: float | None = None

    # -- properties ----------------------------------------------------------

    @property
    def mac(self) -> str | None:
        return self.nic.mac if self.nic is not None else None

    @property
    def console_log(self) -> Path:
        return Path(self.config.console_log)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive

    def argv(self) -> list[str]:
        """The QEMU command line this VM runs (validated)."""
        return cmdline.build_argv(self.config)

    def console_tail(self, n: int = CONSOLE_TAIL_LINES) -> list[str]:
        """The last `n` lines of the guest console."""
        return self.process.console_tail(n) if self.process is not None else []

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Start QEMU and connect QMP; the guest is still booting afterwards.

        Raises QemuExitedError (with QEMU's stderr) if QEMU fails to start.
        """
        if self.process is not None:
            raise QemuError(f"VM {self.name} was already started")
        argv = self.argv()
        for sock in (self.config.command_channel, self.config.qmp_socket):
            _unlink(sock)   # a stale socket file from a killed run would fool the waits
        self.progress(f"{self.name}: starting QEMU ({self.config.accel}, "
                      f"{self.config.memory_mb} MiB, console in {self.console_log})")
        self.process = QemuProcess(argv, self.console_log,
                                   stderr_log=self.workdir / "qemu.stderr",
                                   interactive=self.config.console == "stdio")
        self._started_at = time.monotonic()
        self.process.start()
        self.qmp = QmpControl(self.config.qmp_socket)
        try:
            self.qmp.connect(QMP_CONNECT_TIMEOUT, alive=lambda: self.process.alive)
        except QmpError as exc:
            self._fail_start(exc)

    def _fail_start(self, exc: Exception) -> None:
        assert self.process is not None
        if not self.process.alive:
            message = f"VM {self.name}: " + self.process.describe_exit()
            self._teardown()
            raise QemuExitedError(message, self.process.returncode,
                                  self.process.stderr_text()) from None
        hint = ""
        if self.nic is not None and self.nic.kind == "vhost-user" and not self.nic.server:
            hint = (f"; QEMU does not answer while it waits for the vhost-user backend "
                    f"at {os.fspath(self.nic.path)} (is it running?)")
        self._teardown()
        raise QemuError(f"VM {self.name}: no QMP answer from QEMU: {exc}{hint}") from None

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the guest answers on its command channel; returns the
        boot time in seconds (from start or reset). On timeout raises
        GuestTimeout quoting the console; if QEMU died, QemuExitedError."""
        self._require_started()
        self.progress(f"{self.name}: booting (up to {timeout:g} s)...")
        # One connection for the VM's whole life: QEMU's chardev serves one
        # client at a time, and a reconnect right after a close can be reset
        # by QEMU before it has noticed the close. The connection survives a
        # guest reset; PINGs are simply repeated until the new guest answers.
        if self._channel is None:
            self._channel = GuestChannel(os.fspath(self.config.command_channel))
        try:
            self._channel.wait_ready(timeout)
        except GuestTimeout as exc:
            self._raise_if_dead()
            raise GuestTimeout(f"VM {self.name}: {exc}\n{self._console_text()}") from None
        except GuestChannelError as exc:
            self._channel.close()
            self._channel = None
            self._raise_if_dead(settle=2.0)
            raise GuestChannelError(f"VM {self.name}: {exc}\n{self._console_text()}") from None
        self._ready = True
        self.boot_time = time.monotonic() - self._started_at
        self.progress(f"{self.name}: ready after {self.boot_time:.1f} s")
        return self.boot_time

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run a shell command in the guest (after wait_ready)."""
        if self._channel is None or not self._ready:
            raise GuestChannelError(f"VM {self.name}: the guest is not ready "
                                    "(call wait_ready() first)")
        try:
            return self._channel.run(command, timeout)
        except GuestChannelError:
            self._raise_if_dead(settle=2.0)
            raise

    def set_link(self, up: bool) -> None:
        """Switch the NIC's link (carrier) on or off, as a cable pull would."""
        nic = self._require_nic()
        self._require_qmp().set_link(nic.device_id, up)

    def reboot(self, timeout: float = 120.0) -> float:
        """Hard-reset the guest and wait until it answers again; returns the
        boot time.

        QEMU runs with -no-reboot (so a guest panic ends QEMU instead of
        looping), under which a reset would end QEMU too. So the reset action
        is 'reset' from the reset until the guest is up again: SeaBIOS, seeing
        that it has run before, resets the machine once more by itself
        (a SHUTDOWN 'guest-reset' a few ms after our RESET).
        """
        qmp = self._require_qmp()
        self._ready = False
        self.progress(f"{self.name}: resetting")
        mark = qmp.event_mark()
        qmp.set_action(reboot="reset")
        try:
            self._started_at = time.monotonic()
            qmp.system_reset()
            qmp.wait_event("RESET", 10.0, after=mark)
            return self.wait_ready(timeout)
        finally:
            if self.running:
                qmp.set_action(reboot="shutdown")

    def unplug_nic(self, timeout: float = 30.0) -> None:
        """Hot-unplug the NIC (the netdev stays, for plug_nic)."""
        nic = self._require_nic()
        self.progress(f"{self.name}: unplugging {nic.device_id}")
        self._require_qmp().device_del(nic.device_id, timeout)

    def plug_nic(self, timeout: float = 30.0) -> None:
        """Hot-plug the NIC back onto its netdev; if the guest is ready, wait
        for eth0 to appear and give it the VM's address again."""
        nic = self._require_nic()
        props = cmdline.device_props(nic, nic.mac, self.config.machine)
        driver_props = {k: v for k, v in props.items() if k != "id"}
        self._require_qmp().device_add("virtio-net-pci", id=props["id"], **driver_props)
        if not self._ready:
            return
        # The guest's hot-plug handling is asynchronous: poll for eth0 (bounded).
        script = (f"i=0; while [ ! -e /sys/class/net/eth0 ]; do i=$((i+1)); "
                  f"if [ $i -gt {int(timeout * 10)} ]; then echo 'no eth0'; exit 1; fi; "
                  "usleep 100000; done; ip link set eth0 up")
        if self.ip is not None:
            script += f" && ip addr add {shlex.quote(self.ip)} dev eth0"
        result = self.run(script, timeout=timeout + 10)
        if not result.ok:
            raise QemuError(f"VM {self.name}: eth0 did not come back after plug_nic: "
                            f"{result.output.strip()}")

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop QEMU (QMP quit, then SIGTERM, then SIGKILL; about 2*grace+2 s
        at most) and release everything; returns QEMU's exit code."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._ready = False
        if self.process is None:
            self._teardown()
            return None
        if self.process.alive:
            self.progress(f"{self.name}: stopping")
        qmp = self.qmp
        code = self.process.terminate(qmp.quit if qmp is not None and qmp.connected else None,
                                      grace=grace)
        self._teardown()
        return code

    def __enter__(self) -> "VirtualMachine":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<VirtualMachine {self.name} {state}>"

    # -- helpers -------------------------------------------------------------

    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to 107 bytes; pytest's tmp_path and
        # deep work directories exceed that, so fall back to a short temp dir.
        if len(os.fsencode(self.workdir / "cmd.sock")) <= cmdline.MAX_UNIX_PATH:
            self._own_sockdir = False
            return self.workdir
        self._own_sockdir = True
        return Path(tempfile.mkdtemp(prefix=f"mnet-{self.name[:16]}-"))

    def _teardown(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
        if self.process is not None and self.process.alive:
            self.process.terminate()
        for sock in (self.config.command_channel, self.config.qmp_socket):
            _unlink(sock)
        if self._own_sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)

    def _require_started(self) -> QemuProcess:
        if self.process is None:
            raise QemuError(f"VM {self.name} has not been started")
        self._raise_if_dead()
        return self.process

    def _require_qmp(self) -> QmpControl:
        self._require_started()
        assert self.qmp is not None
        return self.qmp

    def _require_nic(self) -> NicConfig:
        if self.nic is None:
            raise QemuConfigError(f"VM {self.name} has no NIC")
        return self.nic

    def _raise_if_dead(self, settle: float = 0.0) -> None:
        """Raise QemuExitedError if QEMU has exited (or does within `settle` s:
        a broken channel is often the first sign of a QEMU going away)."""
        if self.process is not None and settle > 0:
            self.process.wait(settle)
        if self.process is not None and self.process.returncode is not None:
            raise QemuExitedError(f"VM {self.name}: " + self.process.describe_exit(),
                                  self.process.returncode, self.process.stderr_text())

    def _console_text(self) -> str:
        tail = self.console_tail()
        if not tail:
            return f"(console log {self.console_log} is empty)"
        return f"last console lines ({self.console_log}):\n  " + "\n  ".join(tail)


def _hostname(name: str) -> str:
    # VM names allow '_' and '.', hostnames do not.
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    return host[:63] or "mnet-guest"


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
