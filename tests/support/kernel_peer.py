"""The host kernel as a test's peer: a switch with vhost-user ports for the
programs under test and a TAP port ("host") into a network namespace the lab
creates, where kernel-side programs run. The switch runs on a thread of this
process (KernelPeerLab) or as an `mnet switch` process (KernelPeerSwitchProcessLab).

Not a test module. Names never clash between runs or with a leftover of an
earlier one: the namespace is pid-tagged with a random suffix, the kernel
picks the TAP device's number, the sockets live in the test's own tmp dir.
`close()` undoes everything in reverse order, also when a test or the lab's
own start failed; use the lab as a context manager in a module fixture.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import pytest

T = TypeVar("T")

WAIT = 10.0


class _NamespaceLab:
    """The namespace and the undo steps; a subclass adds the switch and its ports."""

    def __init__(self, tmp: Path, tag: str, vhost_ports: Iterable[str]) -> None:
        from nicdev.net.netns import temporary_netns

        self.tmp = tmp
        self.sockets = {name: str(tmp / f"{name}.sock") for name in vhost_ports}
        # One LIFO list of undo steps: every step runs even if an earlier one raised.
        self._undo = contextlib.ExitStack()
        self.netns = self._undo.enter_context(temporary_netns(f"mnet-{tag}"))
        # Runs just before the namespace goes: a process left inside would keep it alive, unnamed.
        self._undo.callback(self._kill_what_is_left_in_the_netns)

    def own(self, thing: T, stop: Callable[[T], object] | None = None) -> T:
        """Stop `thing` at close() (with `stop`, else its own .stop()), before what was there before it."""
        self._undo.callback(stop or type(thing).stop, thing)
        return thing

    def _set_host_addresses(self, ifname: str, host_ips: Iterable[str]) -> None:
        from nicdev.net import netns as ns

        for ip in host_ips:
            ns.set_address(ifname, f"{ip}/24", netns=self.netns)
        ns.link_up("lo", netns=self.netns)  # for readiness probes run inside the namespace

    def close(self) -> None:
        self._undo.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _kill_what_is_left_in_the_netns(self) -> None:
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True,
                              timeout=WAIT).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if pids:
            print(f"killed processes left in {self.netns}: {' '.join(pids)}")


class KernelPeerLab(_NamespaceLab):
    """The switch on a thread of this process. `vhost_ports` names its vhost-user
    ports (socket paths in `sockets`); `host_ips` are the kernel's addresses (/24)
    on the TAP device `tap.ifname` (`mn<tag>N`)."""

    def __init__(self, tmp: Path, tag: str, *, host_ips: Iterable[str], vhost_ports: Iterable[str] = ()) -> None:
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort

        super().__init__(tmp, tag, vhost_ports)
        try:
            self.bg = BackgroundSwitch()
            self._undo.callback(self._close_switch)
            for name, path in self.sockets.items():
                self.bg.add_port(VhostUserPort(name, path))
            self.tap = self.bg.add_port(TapPort("host", f"mn{tag}%d", netns=self.netns))
            self._set_host_addresses(self.tap.ifname, host_ips)
        except BaseException:
            self.close()
            raise

    def start_stack(self, port: str, cidr: str, **stack_options):
        """A MultiOS Stack in this process on the vhost-user port `port`, stopped at close()."""
        from stack import Stack
        from stack.drivers import VirtioNetNic

        nic = self.own(VirtioNetNic(self.sockets[port], timeout=WAIT), VirtioNetNic.close)
        stack = Stack(nic, cidr, **stack_options).start()
        return self.own(stack, _print_counters_and_stop)

    def _close_switch(self) -> None:
        try:
            print(self.bg.summary())
        finally:
            self.bg.close()


class KernelPeerSwitchProcessLab(_NamespaceLab):
    """The switch as a user runs it: an `mnet switch` process (`switch`, a
    support.cli.MnetProcess, with `switch_options` in front of its ports).
    The kernel picks the TAP device's name (`mn<tag>N`); it is `ifname`."""

    def __init__(self, tmp: Path, tag: str, *, host_ips: Iterable[str], vhost_ports: Iterable[str] = (),
                 switch_options: Iterable[str] = ()) -> None:
        from support.cli import MnetProcess

        super().__init__(tmp, tag, vhost_ports)
        try:
            ports = [f"--port={name}=vhost-user:{path}" for name, path in self.sockets.items()]
            self.switch = self.own(MnetProcess("switch", *switch_options, *ports,
                                               f"--port=host=tap:mn{tag}%d,netns={self.netns}"), MnetProcess.close)
            self.switch.expect("switch running")
            self.ifname = self._the_tap_in_the_netns()
            self._set_host_addresses(self.ifname, host_ips)
        except BaseException:
            self.close()
            raise

    def _the_tap_in_the_netns(self) -> str:
        """The namespace is this lab's own: its one link besides lo is the switch's TAP."""
        out = subprocess.run(["ip", "-n", self.netns, "-o", "link", "show"], capture_output=True, text=True,
                             timeout=WAIT, check=True).stdout
        names = [line.split(": ")[1].split("@")[0] for line in out.splitlines()]
        others = [name for name in names if name != "lo"]
        assert len(others) == 1, f"expected the switch's TAP alone in {self.netns} besides lo: {names}"
        return others[0]


def _print_counters_and_stop(stack) -> None:
    print("stack counters:", stack.counters())
    stack.stop()



def require_programs(*programs: str) -> None:
    """Fail (not skip: CI must run these tests) if a program the lab runs is not installed."""
    for program in programs:
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed (it is in the Makefile's DEB_PACKAGES: run `make setup`)")
