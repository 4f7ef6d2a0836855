"""`mnet guest build`: the kernel + initramfs that `mnet vm` boots."""
from __future__ import annotations

import argparse

DESCRIPTION = (
    "Build (or reuse from the cache) a bootable Linux guest: Debian's kernel from "
    "linux-image-amd64 (downloaded and unpacked, not installed), the virtio modules it "
    "needs (dependencies read from each module's .modinfo), busybox, and host programs "
    "with their shared libraries (iperf3 and socat by default)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="guest_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build the guest image (cached)", description=DESCRIPTION)
    b.add_argument("--add", action="append", default=[], metavar="PROGRAM",
                   help="also copy this host program (name on PATH or a path) and its libraries; repeatable")
    b.add_argument("--module", action="append", default=[], metavar="NAME",
                   help="also load this kernel module (and its dependencies) at boot; repeatable")
    b.add_argument("--netem", action="store_true",
                   help="add tc, ethtool and the modules for netem impairments in the guest (sch_netem, ifb, ...); call them by path (/usr/sbin/tc): a bare tc is busybox's applet")
    b.add_argument("--cache-dir", metavar="DIR", help="where images are kept (default ~/.cache/multios-net/guest)")
    b.add_argument("--force", action="store_true", help="rebuild even if a cached image matches")


def run(args: argparse.Namespace) -> int:
    from guest.image import DEFAULT_MODULES, NETEM_MODULES, NETEM_PROGRAMS, build_image

    programs = [*args.add, *(NETEM_PROGRAMS if args.netem else ())]
    modules = [*DEFAULT_MODULES, *(NETEM_MODULES if args.netem else ()), *args.module]
    image = build_image(cache_dir=args.cache_dir, extra_programs=tuple(programs), force=args.force,
                        modules=tuple(dict.fromkeys(modules)))
    print(f"kernel  {image.kernel}")
    print(f"initrd  {image.initrd}")
    print(f"version {image.kernel_version}")
    return 0
