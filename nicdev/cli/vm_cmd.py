"""`mnet vm`: boot a Linux guest whose only NIC is a switch port."""
from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import tempfile

DESCRIPTION = """\
Boot the guest image (built by `mnet guest build`, built on first use) under
QEMU with one virtio-net NIC:

  --nic vhost-user:PATH   our virtio-net device: a `mnet switch` vhost-user port
  --nic stream:PATH       QEMU's own virtio-net, linked to a `mnet switch` stream port

With --run CMD, boot, run CMD in the guest, print its output, power off and
exit with CMD's status. Without it, attach the serial console (Ctrl-A X quits).
"""

_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--nic", required=True, metavar="KIND:PATH", help="vhost-user:PATH or stream:PATH")
    p.add_argument("--ip", required=True, metavar="ADDR/LEN", help="eth0 address, e.g. 10.0.0.1/24")
    p.add_argument("--gateway", metavar="ADDR", help="default route via ADDR")
    p.add_argument("--mac", metavar="MAC", help="NIC MAC (default: derived from --name)")
    p.add_argument("--name", default="guest", help="VM name (MAC and hostname derive from it)")
    p.add_argument("--memory", type=int, default=256, metavar="MB", help="guest RAM (default 256)")
    p.add_argument("--accel", default="tcg", choices=["tcg", "kvm"], help="default tcg (KVM hangs guests here)")
    p.add_argument("--run", metavar="CMD", help="run CMD in the guest, print its output, exit with its status")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="limit for --run's command (default 300)")
    p.add_argument("--boot-timeout", type=float, default=180.0, metavar="SECONDS",
                   help="limit for the guest to boot (default 180)")


def parse_nic(text: str):
    from nicdev.cli.errors import CliError
    from qemu.cmdline import NicConfig

    kind, sep, path = text.partition(":")
    if not sep or not path or kind not in ("vhost-user", "stream"):
        raise CliError(f"bad --nic '{text}': expected vhost-user:PATH or stream:PATH")
    return NicConfig(kind=kind, path=path)


def run(args: argparse.Namespace) -> int:
    from nicdev.cli.errors import CliError

    try:
        iface = ipaddress.IPv4Interface(args.ip)
    except ValueError:
        raise CliError(f"bad --ip '{args.ip}': expected ADDR/LEN like 10.0.0.1/24") from None
    if "/" not in args.ip:
        raise CliError(f"bad --ip '{args.ip}': give the prefix length too, like {args.ip}/24")
    if args.gateway:
        try:
            ipaddress.IPv4Address(args.gateway)
        except ValueError:
            raise CliError(f"bad --gateway '{args.gateway}'") from None
    if args.mac and not _MAC.match(args.mac):
        raise CliError(f"bad --mac '{args.mac}': expected six hex pairs like 52:54:00:12:34:56")
    nic = parse_nic(args.nic)
    if nic.kind == "vhost-user":
        import os
        if not os.path.exists(nic.path):
            raise CliError(f"no vhost-user socket at {nic.path}: start `mnet switch --port NAME=vhost-user:{nic.path}` first")

    from guest.image import build_image
    from qemu.vm import VirtualMachine

    image = build_image()
    interactive = args.run is None
    with tempfile.TemporaryDirectory(prefix="mnet-vm-") as workdir:
        vm = VirtualMachine(args.name, image, nic=nic, ip=str(iface), gateway=args.gateway, mac=args.mac,
                            workdir=workdir, accel=args.accel, memory_mb=args.memory,
                            console="stdio" if interactive else "log")
        with vm:
            if interactive:
                return vm.wait_exit()
            vm.wait_ready(timeout=args.boot_timeout)
            result = vm.run(args.run, timeout=args.timeout)
            sys.stdout.write(result.output)
            if result.output and not result.output.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
            return result.status
