"""`mnet demo`: the project's main job, end to end.

A switch with two vhost-user ports (our virtio-net device, twice), two Linux
guests booted on them under QEMU; guest A pings guest B and fetches a page
from busybox httpd in guest B. Prints what happened and the switch counters.
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


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
