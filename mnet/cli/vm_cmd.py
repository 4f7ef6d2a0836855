"""`mnet vm`: boot a Linux guest whose only NIC is a switch port."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys
import tempfile

DESCRIPTION = """\
Boot the guest image (built by `mnet guest build`, built on first use) under
QEMU with one virtio-net NIC:

  --nic vhost-user:PATH   our virtio-net device: a `mnet switch` vhost-user port
  --nic stream:PATH       QEMU's own virtio-net, linked to a `mnet switch` stream port

With --run CMD, boot, run CMD in the guest, print its output, power off and
exit with CMD's status (progress lines go to stderr, CMD's output to stdout).
Without it, attach the guest's serial console to this terminal: Ctrl-A X
quits QEMU (Ctrl-A H lists the other keys), `poweroff -f` in the guest too;
the exit status is 0 when QEMU ended normally.
"""

NIC_KINDS = ("vhost-user", "stream")

# How long the back-end probe waits to see whether a busy port hangs up on it.
_BUSY_PROBE_SECONDS = 0.3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--nic", required=True, metavar="KIND:PATH", help="vhost-user:PATH or stream:PATH")
    p.add_argument("--ip", required=True, metavar="ADDR/LEN", help="eth0 address, e.g. 10.0.0.1/24")
    p.add_argument("--gateway", metavar="ADDR", help="default route via ADDR (in --ip's subnet)")
    p.add_argument("--mac", metavar="MAC",
                   help="NIC MAC (default: derived from --name and the NIC's socket path, "
                        "so two VMs on two ports differ and each keeps its MAC across runs)")
    p.add_argument("--name", default="guest", help="VM name, also the guest's hostname (default guest)")
    p.add_argument("--memory", type=int, default=256, metavar="MB", help="guest RAM (default 256)")
    p.add_argument("--accel", default="tcg", choices=["tcg", "kvm"], help="default tcg (KVM hangs guests here)")
    p.add_argument("--kernel", metavar="FILE", help="boot this kernel instead of the built image (with --initrd)")
    p.add_argument("--initrd", metavar="FILE", help="boot this initramfs instead of the built image (with --kernel)")
    p.add_argument("--qmp", metavar="PATH",
                   help="also serve QMP on unix socket PATH for the switch: give the port qmp=PATH "
                        "and `mnet ctl link PORT down` shows as a carrier change in the guest")
    p.add_argument("--run", metavar="CMD", help="run CMD in the guest, print its output, exit with its status")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="limit for --run's command (default 300)")
    p.add_argument("--boot-timeout", type=float, default=180.0, metavar="SECONDS",
                   help="limit for the guest to boot (default 180)")


def parse_nic(text: str):
    """`KIND:PATH` -> NicConfig (CliError if malformed)."""
    from mnet.cli.errors import CliError
    from qemu.cmdline import NicConfig

    kind, sep, path = text.partition(":")
    if not sep or not path or kind not in NIC_KINDS:
        raise CliError(f"bad --nic '{text}': expected vhost-user:PATH or stream:PATH")
    return NicConfig(kind=kind, path=path)


def check_options(args: argparse.Namespace):
    """Validate everything that needs no I/O; returns (interface, NicConfig with its MAC).

    Raises CliError with one line naming the option at fault."""
    from mnet.cli.addresses import parse_ip_and_gateway
    from mnet.cli.errors import CliError
    from qemu.cmdline import mac_for, validate_mac
    from qemu.errors import QemuConfigError

    iface = parse_ip_and_gateway(args.ip, args.gateway)
    nic = parse_nic(args.nic)
    if args.mac:
        try:
            nic.mac = validate_mac(args.mac)
        except QemuConfigError as exc:
            raise CliError(f"bad --mac: {exc}") from None
    else:
        # From the name alone, two `mnet vm` with the default name would share
        # a MAC and confuse the switch; the socket path tells them apart.
        nic.mac = mac_for(f"{args.name}@{os.path.abspath(nic.path)}")
    if (args.kernel is None) != (args.initrd is None):
        raise CliError("--kernel and --initrd go together: give both or neither")
    if not 64 <= args.memory <= 65536:
        raise CliError(f"bad --memory {args.memory}: give 64 to 65536 (MiB)")
    if not (args.timeout > 0 and args.boot_timeout > 0):
        raise CliError("--timeout and --boot-timeout must be positive")
    return iface, nic


def check_backend(nic) -> None:
    """Fail early, in one line, when nothing serves the NIC's socket.

    QEMU would not say so itself: a vhost-user NIC keeps reconnecting without
    booting the guest, a stream NIC boots without a link. A port of our switch
    that already has a peer accepts and hangs up at once; that is reported too.
    """
    from mnet.cli.errors import CliError

    path = os.fspath(nic.path)
    start = f"start `mnet switch --port NAME={nic.kind}:{path}` first"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CliError(f"no {nic.kind} socket at {path}: {start}") from None
    except OSError as exc:
        raise CliError(f"cannot use {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise CliError(f"{path} is not a unix socket (--nic {nic.kind}:PATH wants a switch port's socket)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            raise CliError(f"nothing is listening on {path} (a stale socket file?): {start}") from None
        except OSError as exc:
            raise CliError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        probe.settimeout(_BUSY_PROBE_SECONDS)
        try:
            hung_up = probe.recv(1) == b""
        except TimeoutError:
            hung_up = False         # it waits for us to speak: free
        except ConnectionResetError:
            hung_up = True
        if hung_up:
            raise CliError(f"the port at {path} hung up at once: another VM is probably connected to it")
    finally:
        probe.close()


def wait_console(vm) -> int:
    """Wait while QEMU owns the terminal (until Ctrl-A X or a guest power-off).

    Returns the status for `mnet vm`: 0 after a normal QEMU exit, QEMU's own
    status (said on stderr, with QEMU's last words) after a failure, and
    128+N if a signal N killed it, as a shell would report it.
    """
    code = vm.process.wait(None)
    if code == 0:
        return 0
    print(f"mnet vm: {vm.process.describe_exit()}", file=sys.stderr)
    return 128 - code if code < 0 else code


def _progress(line: str) -> None:
    # stderr: stdout carries the guest's output (--run) or console.
    print(f"mnet vm: {line}", file=sys.stderr, flush=True)


def _image(args: argparse.Namespace):
    from guest.image import GuestImage, build_image
    from pathlib import Path

    if args.kernel is not None:
        return GuestImage(kernel=Path(args.kernel), initrd=Path(args.initrd), kernel_version="(given)")
    return build_image(progress=_progress)


def _exit_on_signal(signum, frame) -> None:
    # QEMU runs in a session of its own and would outlive us (atexit handlers
    # do not run when a signal kills Python): unwind instead, so the VM stops.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    iface, nic = check_options(args)
    check_backend(nic)

    from qemu.launcher import find_qemu
    from qemu.vm import VirtualMachine

    find_qemu()     # before anything slow (an image build): QemuNotFoundError, one line

    from qemu.cmdline import extra_qmp_monitor_args

    extra_args = extra_qmp_monitor_args(os.path.abspath(args.qmp)) if args.qmp else []
    image = _image(args)
    interactive = args.run is None
    with tempfile.TemporaryDirectory(prefix="mnet-vm-") as workdir:
        vm = VirtualMachine(args.name, image, nic=nic, ip=str(iface), gateway=args.gateway,
                            workdir=workdir, accel=args.accel, memory_mb=args.memory,
                            console="stdio" if interactive else "log", progress=_progress,
                            extra_args=extra_args)
        if interactive:
            _progress(f"serial console of {args.name} ({iface} on {args.nic}): "
                      "Ctrl-A X quits, Ctrl-A H for help")
        with vm:
            if interactive:
                return wait_console(vm)
            vm.wait_ready(timeout=args.boot_timeout)
            result = vm.run(args.run, timeout=args.timeout)
            sys.stdout.write(result.output)
            if result.output and not result.output.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
            return result.status

