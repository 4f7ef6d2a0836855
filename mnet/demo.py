"""`mnet demo`: the project's main job, end to end.

A switch with two vhost-user ports (our virtio-net device, twice), two Linux
guests booted on them under QEMU; guest A pings guest B and fetches a page
from busybox httpd in guest B. Then the MultiOS stack (a Python TCP/IP stack
driving its own virtio-net NIC) joins the switch on a third vhost-user port:
guest A pings it, it pings guest A, and they exchange UDP echo. Prints what
happened, the stack's counters and the switch's.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-logs", metavar="DIR", help="copy the guests' console logs to DIR")
    p.add_argument("--boot-timeout", type=float, default=240.0, metavar="SECONDS")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from guest.image import build_image
    from nicdev.net.background import BackgroundSwitch
    from nicdev.net.vhost_user_port import VhostUserPort
    from qemu.cmdline import NicConfig
    from qemu.vm import VirtualMachine

    step("guest image")
    image = build_image()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="mnet-demo-") as tmp, BackgroundSwitch() as bg:
        tmp = Path(tmp)
        step("switch with two vhost-user ports")
        for name in ("vm-a", "vm-b"):
            port = bg.add_port(VhostUserPort(name, str(tmp / f"{name}.sock")))
            print(f"    port {name}: {port.socket_path}")
        vms = {}
        try:
            for name, ip in (("vm-a", "10.0.0.1/24"), ("vm-b", "10.0.0.2/24")):
                vms[name] = VirtualMachine(name, image, nic=NicConfig(kind="vhost-user", path=str(tmp / f"{name}.sock")),
                                           ip=ip, workdir=str(tmp / name))
            step("booting both guests (QEMU, TCG)")
            started = time.monotonic()
            for vm in vms.values():
                vm.start()
            for vm in vms.values():
                vm.wait_ready(timeout=args.boot_timeout)
            print(f"    both guests up in {time.monotonic() - started:.1f} s")
            a, b = vms["vm-a"], vms["vm-b"]

            step("vm-b: busybox httpd on port 80")
            r = b.run("mkdir -p /www && echo 'hello from vm-b over a Python virtio-net device' > /www/index.html"
                      " && httpd -p 80 -h /www && echo started")
            print("    " + r.output.strip())

            step("vm-a: ping -c 3 10.0.0.2")
            r = a.run("ping -c 3 -W 5 10.0.0.2", timeout=60)
            print(_indent(r.output))
            failures += r.status != 0

            step("vm-a: wget http://10.0.0.2/")
            r = a.run("timeout 30 wget -q -O - http://10.0.0.2/", timeout=60)
            print(_indent(r.output))
            failures += r.status != 0

            failures += _stack_steps(bg, tmp, a)
        finally:
            for vm in vms.values():
                vm.stop()
                if args.keep_logs:
                    dest = Path(args.keep_logs)
                    dest.mkdir(parents=True, exist_ok=True)
                    log = Path(vm.console_log)
                    if log.exists():
                        (dest / f"{vm.name}-console.log").write_text(log.read_text(errors="replace"))
            step("switch counters")
            print(bg.summary())
    step("demo " + ("succeeded" if not failures else f"had {failures} failing step(s)"))
    return 1 if failures else 0


STACK_IP = "10.0.0.9"
ECHO_PORT = 7


def _stack_steps(bg, tmp: Path, guest) -> int:
    """The MultiOS stack joins the running switch and talks to `guest`; returns the failed steps."""
    import threading

    from mnet.cli.ping_cmd import echo
    from mnet.cli.stack_common import format_counters
    from mnet.services.runner import start_service
    from mnet.services.spec import Service
    from nicdev.net.vhost_user_port import VhostUserPort
    from stack import SocketType, Stack
    from stack.drivers import VirtioNetNic
    from stack.wire import IpProtocol

    failures = 0
    step(f"MultiOS stack joins the switch: port stack, {STACK_IP}/24, serving udp-echo:{ECHO_PORT}")
    port = bg.add_port(VhostUserPort("stack", str(tmp / "stack.sock")))
    nic = VirtioNetNic(port.socket_path)
    stack = Stack(nic, f"{STACK_IP}/24", privileged=True).start()   # privileged: RAW sockets for ping
    print(f"    {nic.describe()}")
    stopping = threading.Event()
    svc = Service("udp-echo", ECHO_PORT)
    service = start_service(stack, svc, stopping, lambda line: print(f"    {line}"))
    try:
        step(f"{guest.name}: ping -c 3 {STACK_IP} (the stack)")
        r = guest.run(f"ping -c 3 -W 5 {STACK_IP}", timeout=60)
        print(_indent(r.output))
        failures += r.status != 0

        guest_ip = guest.ip.split("/")[0]
        step(f"stack: ping {guest_ip} ({guest.name}) from a RAW ICMP socket")
        with stack.socket(SocketType.RAW, IpProtocol.ICMP) as sock:
            replies = 0
            for seq in range(1, 4):
                line, rtt = echo(sock, STACK_IP, guest_ip, 0x4D4F, seq, bytes(56), wait=5.0)
                print(f"    {line or f'no reply to icmp_seq={seq}'}")
                replies += rtt is not None
        failures += replies != 3

        step(f"{guest.name}: socat sends a line to the stack's udp-echo:{ECHO_PORT} and reads it back")
        r = guest.run(f"echo 'hello MultiOS, from {guest.name}' | socat -t2 - UDP:{STACK_IP}:{ECHO_PORT}", timeout=30)
        print(_indent(r.output or "(nothing came back)"))
        failures += r.status != 0 or "hello MultiOS" not in r.output
    finally:
        stopping.set()
        stack.stop()
        service.join(2)
        step("MultiOS stack counters")
        print(format_counters(stack.counters(), indent="    "))
        nic.close()
    return failures


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
