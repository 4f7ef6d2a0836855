"""Linux guests on vhost-user ports in each poll mode (off, adaptive, busy).

One switch with three ports built from port specs as `mnet switch` builds
them, a guest on each:
  vm-off 10.0.0.1 (poll=off)   vm-adaptive 10.0.0.2 (poll=adaptive:1ms)
  vm-busy 10.0.0.3 (poll=busy)
Every pair pings (each ping goes through two modes) and moves a file both
ways byte for byte; the polling ports take most frames without a kick.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from support.guestlab import nc_transfer, ping

pytestmark = pytest.mark.integration

GUESTS = {"vm-off": ("10.0.0.1", "off"), "vm-adaptive": ("10.0.0.2", "adaptive:1ms"),
          "vm-busy": ("10.0.0.3", "busy")}


class Lab:
    def __init__(self, image, tmp: Path) -> None:
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.portspec import build_port, parse_port_spec

        self.image, self.tmp = image, tmp
        self.bg = BackgroundSwitch()
        self.ports = {}
        self.vms = {}
        for name, (_, mode) in GUESTS.items():
            port = build_port(parse_port_spec(f"{name}=vhost-user:{tmp / name}.sock,poll={mode}"))
            self.ports[name] = self.bg.add_port(port)

    def boot(self, timeout: float = 240.0) -> None:
        from qemu.cmdline import NicConfig
        from qemu.vm import VirtualMachine

        for name, (ip, _) in GUESTS.items():
            self.vms[name] = VirtualMachine(name, self.image, nic=NicConfig("vhost-user", str(self.tmp / f"{name}.sock")),
                                            ip=f"{ip}/24", workdir=self.tmp / f"work-{name}",
                                            progress=lambda line: print(line, flush=True))
            self.vms[name].start()
        for vm in self.vms.values():
            vm.wait_ready(timeout)

    def device_counters(self, name: str) -> dict:
        device = self.ports[name].device
        return self.bg.call(lambda: {**device.counters.as_dict(), **device.poller.counters.as_dict()})

    def close(self) -> None:
        for vm in self.vms.values():
            vm.stop()
        print(self.bg.summary())
        self.bg.close()


@pytest.fixture(scope="module")
def lab(guest_image, tmp_path_factory):
    lab = Lab(guest_image, tmp_path_factory.mktemp("poll"))
    try:
        lab.boot()
        yield lab
    finally:
        lab.close()


@pytest.mark.parametrize("src, dst", [("vm-off", "vm-adaptive"), ("vm-adaptive", "vm-busy"),
                                      ("vm-busy", "vm-off")])
def test_guests_ping_through_each_poll_mode(lab, src, dst):
    got, out = ping(lab.vms[src], GUESTS[dst][0], count=5)
    assert got == 5, out


def test_file_both_ways_through_polling_ports(lab):
    before = {name: lab.device_counters(name) for name in GUESTS}
    for n, (src, dst) in enumerate((("vm-adaptive", "vm-busy"), ("vm-busy", "vm-off"), ("vm-off", "vm-adaptive"))):
        sent, received = nc_transfer(lab.vms[src], lab.vms[dst], GUESTS[dst][0], 5101 + n, size_mb=10)
        assert sent == received
    after = {name: lab.device_counters(name) for name in GUESTS}
    frames = {name: after[name]["tx_frames"] - before[name]["tx_frames"] for name in GUESTS}
    for name in GUESTS:
        print(f"{name}: {frames[name]} frames from the guest (TSO: up to 64 KiB each), "
              f"{after[name]['tx_kicks'] - before[name]['tx_kicks']} kicks, "
              f"{after[name]['polls'] - before[name]['polls']} polls")
    # Each guest sent 10 MiB and acknowledged 10 MiB.
    assert all(n > 100 for n in frames.values()), frames
    # A busy port never asks for a kick: a drain inside the poll leaves them
    # off (a guest may still race one in at the start).
    kicks = {name: after[name]["tx_kicks"] - before[name]["tx_kicks"] for name in GUESTS}
    assert kicks["vm-busy"] <= 1, (kicks, frames)
    assert after["vm-off"]["polls"] == 0
    assert after["vm-adaptive"]["polls"] > before["vm-adaptive"]["polls"]
