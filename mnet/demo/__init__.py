"""`mnet demo`: a tour of the MultiOS stack's services on our virtio-net device.

A switch with three ports: a Linux guest under QEMU (vhost-user), the MultiOS
stack (a Python TCP/IP stack driving its own virtio-net NIC, vhost-user) and
the host kernel (a TAP port into a network namespace the demo makes and
removes). The host kernel and the guest use the stack's services: ping, UDP
and TCP echo, HTTP, HTTPS (host: curl checks a certificate made at run
time) and its chat room (nc on both sides); the stack's DNS client resolves
a name against dnsmasq on the host kernel's side. Progress lines as it
goes, then a report: one line per check, PASS or FAIL with a figure; the
exit status is 1 if any check failed.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-logs", metavar="DIR", help="copy the guest's console log and dnsmasq's log to DIR")
    p.add_argument("--boot-timeout", type=float, default=240.0, metavar="SECONDS")


def run(args: argparse.Namespace) -> int:
    from .tour import run_tour

    return run_tour(args)
