"""Options shared by the commands that run a MultiOS stack (`mnet stack`, `mnet ping`)."""
from __future__ import annotations

import argparse

# Ring entries of the stack's NIC: thousands of connections answering at once
# make bursts a 256-entry ring drops (like Linux's txqueuelen of 1000), and a
# burst of handshakes as large as a listener's queues (SOMAXCONN) must fit
# too: with 1024 entries, 10,000 kernel connections lost 10,000-20,000 frames
# to an empty RX ring and the kernel resent 600-2,000 SYNs a second later.
STACK_QUEUE_SIZE = 4096


def add_stack_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--nic, --ip, --gateway, --mac (--nic and --ip optional with ``required=False``:
    for a command that can also run on the host kernel's sockets)."""
    p.add_argument("--nic", required=required, metavar="vhost-user:PATH",
                   help="the vhost-user socket of a switch port (ours or DPDK's net_vhost)")
    p.add_argument("--ip", required=required, metavar="ADDR/LEN", help="the stack's address, e.g. 10.0.0.9/24")
    p.add_argument("--gateway", metavar="ADDR", help="default route via ADDR (must be in the subnet)")
    p.add_argument("--mac", metavar="MAC", help="the NIC's MAC (default: random, locally administered)")


def open_stack(args: argparse.Namespace, *, privileged: bool = False, trace_sink=None):
    """Build the virtio NIC and a started Stack from the parsed options;
    `trace_sink` gets the NIC driver's ring trace records from the start."""
    from mnet.cli.addresses import parse_ip_and_gateway
    from mnet.cli.errors import CliError
    from stack import Stack
    from stack.wire import MacAddress

    kind, sep, path = args.nic.partition(":")
    if kind != "vhost-user" or not sep or not path:
        raise CliError(f"bad --nic '{args.nic}': expected vhost-user:PATH")
    iface = parse_ip_and_gateway(args.ip, args.gateway)
    mac = None
    if args.mac:
        try:
            mac = MacAddress(args.mac)
        except ValueError:
            raise CliError(f"bad --mac '{args.mac}': expected six hex pairs like 52:54:00:12:34:56") from None
    from stack.drivers.virtio_driver import VirtioNetNic

    nic = VirtioNetNic(path, mac=mac, queue_size=STACK_QUEUE_SIZE, trace_sink=trace_sink)
    stack = Stack(nic, str(iface), gateway=args.gateway, privileged=privileged)
    stack.start()
    return stack, nic


def format_counters(counters: dict[str, dict[str, int]], indent: str = "  ") -> str:
    """One line per protocol, non-zero counters only: `udp  rx 5, tx 5, drop.no socket 1`."""
    width = max((len(proto) for proto in counters), default=0)
    lines = []
    for proto, values in counters.items():
        shown = ", ".join(f"{name} {value}" for name, value in values.items() if value)
        if shown:
            lines.append(f"{indent}{proto:<{width}}  {shown}")
    return "\n".join(lines)
