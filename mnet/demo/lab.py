"""The tour's network: a switch with three ports, and who sits on them.

    port "guest"  vhost-user -> a Linux guest under QEMU              10.0.0.1
    port "stack"  vhost-user -> the MultiOS stack, in this process    10.0.0.9
    port "host"   TAP        -> the host kernel, in a network         10.0.0.254
                                namespace made here and removed at the end

The stack serves the services it is given (`kind:PORT[,key=value]`, as
`mnet stack --serve` spells them). The guest is started at once but not
waited for: it boots under TCG while the host kernel's checks run.
"""
from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path

from .report import detail, step

GUEST_IP = "10.0.0.1"
STACK_IP = "10.0.0.9"
HOST_IP = "10.0.0.254"
PREFIX = 24
HEARTBEAT = 15.0   # seconds between "still booting" lines


class DemoLab:
    """Set up by `open_lab()`; everything here is torn down when it ends."""

    def __init__(self, workdir: Path, netns: str, bg, stack, vm) -> None:
        self.workdir, self.netns, self.bg, self.stack, self.vm = workdir, netns, bg, stack, vm

    def host(self, command: str, timeout: float = 60.0, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """A shell line run by the host kernel's side (in the namespace); bytes out, bounded."""
        return subprocess.run(["ip", "netns", "exec", self.netns, "sh", "-c", command], input=stdin,
                              capture_output=True, timeout=timeout)

    def host_process(self, argv: list[str]) -> subprocess.Popen:
        """A program started in the namespace with pipes on all three streams (text, line by line)."""
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def wait_for_guest(self, timeout: float) -> float:
        """Until the guest answers on its command channel, with a progress line now and then."""
        done = threading.Event()
        started = time.monotonic()

        def heartbeat() -> None:
            while not done.wait(HEARTBEAT):
                detail(f"{self.vm.name} still booting ({time.monotonic() - started:.0f} s so far)")

        threading.Thread(target=heartbeat, name="boot-heartbeat", daemon=True).start()
        try:
            seconds = self.vm.wait_ready(timeout=timeout)
        finally:
            done.set()
        return seconds


@contextlib.contextmanager
def open_lab(workdir: Path, image, services: list[str], boot: bool = True):
    """Yield a DemoLab: namespace, switch, the stack serving `services`, the guest booting."""
    from nicdev.net import netns as ns
    from nicdev.net.background import BackgroundSwitch
    from nicdev.net.netns import temporary_netns
    from nicdev.net.tap_port import TapPort
    from nicdev.net.vhost_user_port import VhostUserPort
    from qemu.cmdline import NicConfig
    from qemu.vm import VirtualMachine

    with contextlib.ExitStack() as teardown:
        netns = teardown.enter_context(temporary_netns("mnet-demo"))
        step(f"network namespace {netns} (the host kernel's side; removed at the end)")
        bg = teardown.enter_context(BackgroundSwitch())
        teardown.callback(lambda: (step("switch counters"), print(bg.summary(), flush=True)))
        tap = bg.add_port(TapPort("host", "mndemo%d", netns=netns))
        ns.set_address(tap.ifname, f"{HOST_IP}/{PREFIX}", netns=netns)
        ns.link_up("lo", netns=netns)
        detail(f"port host: TAP {tap.ifname} in {netns}, {HOST_IP}/{PREFIX}")
        guest_port = bg.add_port(VhostUserPort("guest", str(workdir / "guest.sock")))
        stack_port = bg.add_port(VhostUserPort("stack", str(workdir / "stack.sock")))
        detail(f"port guest: vhost-user {guest_port.socket_path}")
        stack = teardown.enter_context(_serving_stack(stack_port.socket_path, services))
        vm = VirtualMachine("guest", image, nic=NicConfig(kind="vhost-user", path=guest_port.socket_path),
                            ip=f"{GUEST_IP}/{PREFIX}", workdir=str(workdir / "guest"),
                            progress=lambda line: detail(line))
        if boot:
            step(f"guest: booting Linux under QEMU on port guest, {GUEST_IP}/{PREFIX} (slow under TCG: "
                 "the host kernel's checks run meanwhile)")
            vm.start()
            teardown.callback(vm.stop)
        yield DemoLab(workdir, netns, bg, stack, vm)


@contextlib.contextmanager
def _serving_stack(socket_path: str, services: list[str]):
    """The MultiOS stack on `socket_path`, serving `services`; its counters printed at the end."""
    from mnet.cli.stack_common import format_counters
    from mnet.services.runner import start_service
    from mnet.services.spec import parse_service
    from stack import Stack
    from stack.drivers import VirtioNetNic

    nic = VirtioNetNic(socket_path)
    stopping = threading.Event()
    threads = []
    try:
        stack = Stack(nic, f"{STACK_IP}/{PREFIX}").start()
        step(f"MultiOS stack on port stack, {STACK_IP}/{PREFIX}: {nic.describe()}")
        try:
            parsed = [parse_service(spec) for spec in services]
            for svc in parsed:
                threads.append(start_service(stack, svc, stopping, detail))
            detail("serving " + ", ".join(svc.label for svc in parsed))
            yield stack
        finally:
            stopping.set()
            stack.stop()
            for t in threads:
                t.join(5)
            step("MultiOS stack counters")
            print(format_counters(stack.counters(), indent="    "), flush=True)
    finally:
        nic.close()
