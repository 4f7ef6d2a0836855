"""Linux guests on our virtio-net device, end to end.

One lab per module: a switch (in this process, on its own thread) with two
vhost-user ports, a stream port for a guest that keeps QEMU's own virtio-net,
and a TAP port into a namespace this test creates (the host kernel as a peer).
  vm-a 10.0.0.1 (vhost-user)   vm-b 10.0.0.2 (vhost-user)
  vm-c 10.0.0.3 (stream)       host kernel 10.0.0.254 (TAP in a netns)
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from guest.wait import wait_in_guest
from support.guestlab import nc_transfer, ping

pytestmark = pytest.mark.integration

GUESTS = {"vm-a": ("10.0.0.1/24", "vhost-user"), "vm-b": ("10.0.0.2/24", "vhost-user"),
          "vm-c": ("10.0.0.3/24", "stream")}
HOST_IP = "10.0.0.254"


class Lab:
    def __init__(self, image, tmp: Path, netns: str) -> None:
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.socket_port import StreamPort
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort
        from nicdev.net import netns as ns

        self.image, self.tmp, self.netns = image, tmp, netns
        self.bg = BackgroundSwitch()
        self.vms = {}
        for name, (_, kind) in GUESTS.items():
            path = str(tmp / f"{name}.sock")
            port = VhostUserPort(name, path) if kind == "vhost-user" else StreamPort(name, path)
            self.bg.add_port(port)
        # A name the kernel picks: a fixed one clashes with a TAP another run has just made.
        tap = self.bg.add_port(TapPort("host", "mnettap%d", netns=netns))
        ns.set_address(tap.ifname, f"{HOST_IP}/24", netns=netns)
        ns.link_up("lo", netns=netns)

    def vm(self, name: str):
        from qemu.cmdline import NicConfig
        from qemu.vm import VirtualMachine

        ip, kind = GUESTS[name]
        return VirtualMachine(name, self.image, nic=NicConfig(kind, str(self.tmp / f"{name}.sock")), ip=ip,
                              workdir=self.tmp / f"work-{name}", progress=lambda line: print(line, flush=True))

    def boot(self, timeout: float = 240.0) -> None:
        for name in GUESTS:
            self.vms[name] = self.vm(name)
            self.vms[name].start()
        for vm in self.vms.values():
            vm.wait_ready(timeout)

    def close(self) -> None:
        for vm in self.vms.values():
            vm.stop()
        print(self.bg.summary())
        self.bg.close()


@pytest.fixture(scope="module")
def lab(guest_image, tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-lab") as netns:
        lab = Lab(guest_image, tmp_path_factory.mktemp("lab"), netns)
        try:
            lab.boot()
            yield lab
        finally:
            lab.close()


def test_vhost_user_guests_ping_each_other(lab):
    a, b = lab.vms["vm-a"], lab.vms["vm-b"]
    got, out = ping(a, "10.0.0.2")
    assert got == 3, out
    got, out = ping(b, "10.0.0.1")
    assert got == 3, out
    # The guest driver negotiated what we offered: VERSION_1 (bit 32), MRG_RXBUF (15), EVENT_IDX (29).
    features = a.run("cat /sys/bus/virtio/devices/*/features").output.strip()
    assert features[32] == "1" and features[15] == "1" and features[29] == "1", features


def test_20mb_between_vhost_user_guests_is_byte_identical(lab):
    sent, received = nc_transfer(lab.vms["vm-a"], lab.vms["vm-b"], "10.0.0.2", 5001)
    assert sent == received
    stats = lab.bg.stats()
    assert stats["ports"]["vm-b"]["tx_bytes"] > 20 * 2**20, stats["ports"]["vm-b"]


def test_stream_netdev_guest_and_vhost_user_guest(lab):
    a, c = lab.vms["vm-a"], lab.vms["vm-c"]
    got, out = ping(c, "10.0.0.1")
    assert got == 3, out
    sent, received = nc_transfer(c, a, "10.0.0.1", 5002)
    assert sent == received
    sent, received = nc_transfer(a, c, "10.0.0.3", 5003)
    assert sent == received


def test_guest_reaches_host_kernel_through_tap(lab):
    from nicdev.net.netns import run_in_netns

    a = lab.vms["vm-a"]
    got, out = ping(a, HOST_IP)
    assert got == 3, out
    www = lab.tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("served by the host kernel in a namespace\n")
    server = run_in_netns(lab.netns, [sys.executable, "-m", "http.server", "8080", "--bind", HOST_IP,
                                      "--directory", str(www)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # bounded wait for the server to listen, seen from inside the namespace
        deadline = time.monotonic() + 20
        while subprocess.run(["ip", "netns", "exec", lab.netns, "ss", "-ltn", "sport = :8080"],
                             capture_output=True, text=True).stdout.count("LISTEN") == 0:
            assert time.monotonic() < deadline, "http.server did not start in the namespace"
            time.sleep(0.1)
        r = a.run(f"timeout 30 wget -q -O - http://{HOST_IP}:8080/index.html", timeout=60)
        assert r.status == 0 and "served by the host kernel" in r.output, r.output
    finally:
        server.terminate()
        server.wait(10)


def test_set_link_down_stops_traffic_and_up_restores_it(lab):
    a = lab.vms["vm-a"]
    a.set_link(False)
    try:
        wait_in_guest(a, "grep -q 0 /sys/class/net/eth0/carrier", 20, "carrier off")
        got, out = ping(a, "10.0.0.2", count=2, deadline=3)
        assert got == 0, out
    finally:
        a.set_link(True)
    wait_in_guest(a, "grep -q 1 /sys/class/net/eth0/carrier", 20, "carrier on")
    got, out = ping(a, "10.0.0.2", count=3, deadline=15)
    assert got >= 1, out


def test_guest_reboot_and_qemu_restart_reconnect_to_the_running_switch(lab):
    b = lab.vms["vm-b"]
    b.reboot(timeout=240)
    got, out = ping(lab.vms["vm-a"], "10.0.0.2", count=3, deadline=20)
    assert got >= 1, f"after reboot: {out}"
    # QEMU restart: a new process on the same socket, same running switch.
    b.stop()
    lab.vms["vm-b"] = b = lab.vm("vm-b")
    b.start()
    b.wait_ready(240)
    got, out = ping(b, "10.0.0.1", count=3, deadline=20)
    assert got >= 1, f"after QEMU restart: {out}"
    sent, received = nc_transfer(lab.vms["vm-a"], b, "10.0.0.2", 5004, size_mb=5)
    assert sent == received
