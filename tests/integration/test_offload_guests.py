"""Checksum and segmentation offloads with real Linux guests and the host kernel.

One lab for the module, on one switch (a thread of this process):

  vm-a 10.0.0.1, vm-b 10.0.0.2   vhost-user ports, offloads offered (the
                                  guests negotiate CSUM, GUEST_CSUM, TSO4/6, ECN)
  vm-c 10.0.0.3                  QEMU's own NIC on a stream port: finished
                                  frames only, so the switch segments for it
  kernel 10.0.0.254              TAP with vnet_hdr + TUNSETOFFLOAD, namespace 1
  kernel 10.0.0.253              TAP without vnet_hdr, namespace 2

The last test boots a second pair on ports that offer no offloads and prints
iperf3 figures for both pairs (printed, not asserted).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from guest.wait import wait_in_guest
from support.guestlab import make_file, nc_transfer, ping
from support.waiting import wait_for

pytestmark = pytest.mark.integration

GUESTS = {"vm-a": ("10.0.0.1/24", "vhost-user"), "vm-b": ("10.0.0.2/24", "vhost-user"),
          "vm-c": ("10.0.0.3/24", "stream")}
VNET_IP, PLAIN_IP = "10.0.0.254", "10.0.0.253"
# Feature bits a Linux guest negotiates when we offer them (char i of the
# sysfs features string is bit i).
BITS = {"CSUM": 0, "GUEST_CSUM": 1, "GUEST_TSO4": 7, "GUEST_TSO6": 8, "GUEST_ECN": 9, "HOST_TSO4": 11,
        "HOST_TSO6": 12, "HOST_ECN": 13, "MRG_RXBUF": 15}
IPERF_SECONDS = 10


class Lab:
    def __init__(self, image, tmp: Path, ns_vnet: str, ns_plain: str) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.socket_port import StreamPort
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort

        self.image, self.tmp, self.ns_vnet, self.ns_plain = image, tmp, ns_vnet, ns_plain
        self.bg = BackgroundSwitch()
        self.vms = {}
        for name, (_, kind) in GUESTS.items():
            path = str(tmp / f"{name}.sock")
            self.bg.add_port(VhostUserPort(name, path) if kind == "vhost-user" else StreamPort(name, path))
        # Names the kernel picks: fixed ones clash with TAPs another run has just made.
        vnet = self.bg.add_port(TapPort("host-vnet", "mnetoffv%d", netns=ns_vnet, vnet_hdr=True))
        plain = self.bg.add_port(TapPort("host-plain", "mnetoffp%d", netns=ns_plain, vnet_hdr=False))
        for ifname, ip, netns in ((vnet.ifname, VNET_IP, ns_vnet), (plain.ifname, PLAIN_IP, ns_plain)):
            ns.set_address(ifname, f"{ip}/24", netns=netns)
            ns.link_up("lo", netns=netns)

    def vm(self, name: str, ip: str, socket: str, kind: str = "vhost-user"):
        from qemu.cmdline import NicConfig
        from qemu.vm import VirtualMachine

        return VirtualMachine(name, self.image, nic=NicConfig(kind, str(self.tmp / socket)), ip=ip,
                              workdir=self.tmp / f"work-{name}", progress=lambda line: print(line, flush=True))

    def boot(self, timeout: float = 240.0) -> None:
        for name, (ip, kind) in GUESTS.items():
            self.vms[name] = self.vm(name, ip, f"{name}.sock", kind)
            self.vms[name].start()
        for vm in self.vms.values():
            vm.wait_ready(timeout)

    def device(self, port: str, what: str):
        return self.bg.call(lambda: getattr(self.bg.switch.ports[port].device.counters, what))

    def switch_counter(self, what: str) -> int:
        return self.bg.call(lambda: getattr(self.bg.switch.counters, what))

    def close(self) -> None:
        for vm in self.vms.values():
            vm.stop()
        print(self.bg.summary())
        self.bg.close()


@pytest.fixture(scope="module")
def lab(guest_image, tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-offv") as ns_vnet, temporary_netns("mnet-offp") as ns_plain:
        lab = Lab(guest_image, tmp_path_factory.mktemp("offload"), ns_vnet, ns_plain)
        try:
            lab.boot()
            yield lab
        finally:
            lab.close()


def guest_features(vm) -> str:
    r = vm.run("cat /sys/bus/virtio/devices/*/features")
    assert r.status == 0, r.output
    return r.output.strip()


def iperf3(client, server, server_ip: str, seconds: int = IPERF_SECONDS, port: int = 5201) -> float:
    """Receiver's bit rate of a TCP transfer client -> server (both guests)."""
    r = server.run(f"iperf3 -s -D -1 -p {port}", timeout=20)
    assert r.status == 0, r.output
    wait_in_guest(server, f"netstat -ltn | grep -q ':{port} '", 20, "iperf3 server listening")
    r = client.run(f"iperf3 -c {server_ip} -p {port} -t {seconds} -J --connect-timeout 5000", timeout=seconds + 90)
    assert r.status == 0, r.output[-2000:]
    return json.loads(r.output)["end"]["sum_received"]["bits_per_second"]


# -- negotiation -----------------------------------------------------------------------
def test_linux_guests_negotiate_the_offloads(lab):
    for name in ("vm-a", "vm-b"):
        features = guest_features(lab.vms[name])
        missing = [n for n, bit in BITS.items() if features[bit] != "1"]
        assert not missing, f"{name} did not negotiate {missing}: {features}"
        port = lab.bg.call(lambda: (lab.bg.switch.ports[name].accepts_csum_partial,
                                    lab.bg.switch.ports[name].accepts_gso))
        assert port[0] and len(port[1]) == 3, port
    # QEMU's own NIC on a stream netdev has no vnet header: no offloads.
    features = guest_features(lab.vms["vm-c"])
    assert features[BITS["CSUM"]] == "0" and features[BITS["HOST_TSO4"]] == "0", features


# -- guest to guest ------------------------------------------------------------------------
def test_20mb_between_offloading_guests_is_byte_identical(lab):
    a, b = lab.vms["vm-a"], lab.vms["vm-b"]
    got, out = ping(a, "10.0.0.2")
    assert got == 3, out
    gso_before, rx_gso_before = lab.device("vm-a", "tx_gso"), lab.device("vm-b", "rx_gso")
    cut_before = lab.switch_counter("segmented")
    sent, received = nc_transfer(a, b, "10.0.0.2", 5101)
    assert sent == received
    tx_gso, rx_gso = lab.device("vm-a", "tx_gso") - gso_before, lab.device("vm-b", "rx_gso") - rx_gso_before
    print(f"vm-a sent {tx_gso} GSO frames, vm-b took {rx_gso} whole")
    assert tx_gso > 0 and rx_gso > 0, "the guests used TSO through the switch"
    assert lab.switch_counter("segmented") == cut_before, "nothing needed cutting between offloading guests"
    sent, received = nc_transfer(b, a, "10.0.0.1", 5102, size_mb=5)
    assert sent == received


def test_stream_netdev_guest_gets_frames_segmented_by_the_switch(lab):
    a, c = lab.vms["vm-a"], lab.vms["vm-c"]
    got, out = ping(c, "10.0.0.1")
    assert got == 3, out
    cut_before, done_before = lab.switch_counter("segmented"), lab.switch_counter("csum_completed")
    sent, received = nc_transfer(a, c, "10.0.0.3", 5103, size_mb=5)
    assert sent == received
    cut = lab.switch_counter("segmented") - cut_before
    done = lab.switch_counter("csum_completed") - done_before
    print(f"switch cut {cut} GSO frames and completed {done} checksums for vm-c")
    assert cut > 0, "vm-a's GSO frames were segmented for vm-c"
    sent, received = nc_transfer(c, a, "10.0.0.1", 5104, size_mb=5)
    assert sent == received


def test_capture_port_records_finished_frames(lab):
    from nicdev.net.pcap_port import PcapPort

    path = lab.tmp / "offload.pcap"
    lab.bg.add_port(PcapPort("cap", str(path)))
    try:
        sent, received = nc_transfer(lab.vms["vm-a"], lab.vms["vm-b"], "10.0.0.2", 5105, size_mb=1)
        assert sent == received
    finally:
        lab.bg.remove_port("cap")
    data = path.read_bytes()[24:]
    tcp = 0
    while data:
        caplen, origlen = struct.unpack_from("=II", data, 8)
        frame = data[16:16 + caplen]
        data = data[16 + caplen:]
        assert origlen <= 1518, f"a {origlen}-byte frame in the capture"
        if frame[12:14] == b"\x08\x00" and frame[23] == 6:
            tcp += 1
            assert tcp_checksum_ok(frame), "a captured TCP segment has a wrong checksum"
    assert tcp > 700, f"only {tcp} TCP segments captured for 1 MiB"


def tcp_checksum_ok(frame: bytes) -> bool:
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from(">H", frame, 16)[0]
    seg = frame[14 + ihl:14 + total]
    words = seg + b"\0" * (len(seg) % 2)
    s = sum(struct.unpack(f">{len(words) // 2}H", words))
    s += sum(struct.unpack(">4H", frame[26:34])) + 6 + len(seg)
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


# -- guest to the host kernel ------------------------------------------------------------
def _listening(netns: str, port: int) -> bool:
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-ltn", f"sport = :{port}"],
                         capture_output=True, text=True).stdout
    return "LISTEN" in out


def _wait_listening(netns: str, port: int, what: str) -> None:
    wait_for(lambda: _listening(netns, port), f"{what} to start listening in {netns}", 20, interval=0.1)


def guest_to_kernel(lab, vm, netns: str, ip: str, port: int, size_mb: int) -> None:
    """busybox nc in the guest -> socat in the namespace; checksums compared."""
    from nicdev.net.netns import run_in_netns

    sent = make_file(vm, "/tmp/up.src", size_mb)
    out = lab.tmp / f"up-{port}.bin"
    socat = run_in_netns(netns, ["socat", "-u", f"TCP-LISTEN:{port},bind={ip},reuseaddr", f"OPEN:{out},creat,trunc"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(netns, port, "socat")
        r = vm.run(f"nc {ip} {port} < /tmp/up.src", timeout=300)
        assert r.status == 0, r.output
        socat.wait(60)
    finally:
        if socat.poll() is None:
            socat.kill()
            socat.wait(10)
    assert hashlib.md5(out.read_bytes()).hexdigest() == sent, "the kernel received other bytes than were sent"


def kernel_to_guest(lab, vm, netns: str, ip: str, port: int, size_mb: int) -> None:
    """wget in the guest from python's http.server in the namespace; checksums compared."""
    from nicdev.net.netns import run_in_netns

    www = lab.tmp / f"www-{port}"
    www.mkdir(exist_ok=True)
    blob = os.urandom(size_mb << 20)
    (www / "blob").write_bytes(blob)
    server = run_in_netns(netns, [sys.executable, "-m", "http.server", str(port), "--bind", ip,
                                  "--directory", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(netns, port, "http.server")
        r = vm.run(f"rm -f /tmp/dl; timeout 120 wget -q -O /tmp/dl http://{ip}:{port}/blob && md5sum /tmp/dl",
                   timeout=180)
        assert r.status == 0, r.output
        assert r.output.split()[0] == hashlib.md5(blob).hexdigest(), "the guest received other bytes"
        vm.run("rm -f /tmp/dl")
    finally:
        server.terminate()
        server.wait(10)


def test_guest_and_kernel_through_a_vnet_hdr_tap(lab):
    a = lab.vms["vm-a"]
    got, out = ping(a, VNET_IP)
    assert got == 3, out
    cut_before, rx_gso_before = lab.switch_counter("segmented"), lab.device("vm-a", "rx_gso")
    guest_to_kernel(lab, a, lab.ns_vnet, VNET_IP, 7001, 5)
    assert lab.switch_counter("segmented") == cut_before, "the kernel took the guest's GSO frames whole"
    kernel_to_guest(lab, a, lab.ns_vnet, VNET_IP, 7002, 5)
    rx_gso = lab.device("vm-a", "rx_gso") - rx_gso_before
    print(f"vm-a took {rx_gso} GSO frames from the kernel")
    assert rx_gso > 0, "the kernel's TSO frames reached the guest whole"
    tap = lab.bg.stats()["ports"]["host-vnet"]
    assert not tap["errors"], tap


def test_guest_and_kernel_through_a_plain_tap(lab):
    a = lab.vms["vm-a"]
    got, out = ping(a, PLAIN_IP)
    assert got == 3, out
    cut_before = lab.switch_counter("segmented")
    guest_to_kernel(lab, a, lab.ns_plain, PLAIN_IP, 7003, 5)
    assert lab.switch_counter("segmented") > cut_before, "the switch segmented for the plain TAP"
    kernel_to_guest(lab, a, lab.ns_plain, PLAIN_IP, 7004, 5)
    tap = lab.bg.stats()["ports"]["host-plain"]
    assert not tap["errors"], tap


# -- throughput, offloads on and off (printed) ----------------------------------------------
def test_iperf3_throughput_with_and_without_offloads(lab):
    from nicdev.net.vhost_user_port import VhostUserPort

    a, b = lab.vms["vm-a"], lab.vms["vm-b"]
    on = {"a->b": iperf3(a, b, "10.0.0.2"), "b->a": iperf3(b, a, "10.0.0.1")}
    # A second pair on ports that offer no offloads; the first pair idles.
    for name in ("vm-d", "vm-e"):
        lab.bg.add_port(VhostUserPort(name, str(lab.tmp / f"{name}.sock"), offloads=False))
    plain = {"vm-d": lab.vm("vm-d", "10.0.0.4/24", "vm-d.sock"), "vm-e": lab.vm("vm-e", "10.0.0.5/24", "vm-e.sock")}
    try:
        for vm in plain.values():
            vm.start()
        for vm in plain.values():
            vm.wait_ready(240)
        d, e = plain["vm-d"], plain["vm-e"]
        features = guest_features(d)
        assert features[BITS["CSUM"]] == "0" and features[BITS["GUEST_TSO4"]] == "0", features
        got, out = ping(d, "10.0.0.5")
        assert got == 3, out
        off = {"a->b": iperf3(d, e, "10.0.0.5"), "b->a": iperf3(e, d, "10.0.0.4")}
    finally:
        for vm in plain.values():
            vm.stop()
        for name in plain:
            lab.bg.remove_port(name)
    for case in ("a->b", "b->a"):
        print(f"iperf3 guest {case} through the switch: offloads on {on[case] / 1e6:.1f} Mbit/s, "
              f"off {off[case] / 1e6:.1f} Mbit/s, ratio {on[case] / off[case]:.2f}")
