"""pcapng captures of a switch's ports, read by real tshark.

Two MultiOS stack drivers (the stack's virtio-net NIC) exchange frames
through two vhost-user ports of our switch, on both data paths; the
capture is read back with `tshark -r` and must count the packets the
ports' counters count, per port and direction, each with the comment that
names its queue and descriptor head, the same heads the device's and the
driver's ring traces give the frames' chains. `mnet switch --pcap` does
the same from the command line.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.pcapng import PcapngWriter
from nicdev.net.vhost_user_port import VhostUserPort
from stack.drivers import VirtioNetNic

from support.cli import MnetProcess
from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.waiting import wait_for

pytestmark = pytest.mark.integration

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (make setup installs it)")
COMMENT = re.compile(r"port (\w+) queue (\d) \((rx|tx)\) head (\d+)")


def tshark_packets(path) -> list[tuple[str, str, str, int]]:
    """(interface name, direction flag, comment, frame length) per packet, as tshark reads them."""
    r = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|", "-e", "frame.interface_name",
                        "-e", "frame.packet_flags_direction", "-e", "frame.comment", "-e", "frame.len"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    packets = []
    for line in r.stdout.splitlines():
        name, direction, comment, length = line.split("|")
        packets.append((name, {"0x00000001": "in", "0x00000002": "out"}[direction], comment, int(length)))
    return packets


def exchange(a, b, count, size):
    """`count` frames of `size` bytes from NIC a to NIC b, in bursts; the frames as b got them."""
    frames = [bytes(b.mac) + bytes(a.mac) + b"\x88\xb5" + os.urandom(size - 14) for _ in range(count)]
    got, sent = [], 0
    while sent < count:
        sent += a.transmit([(f, None) for f in frames[sent:sent + 16]])
        wait_for(lambda: got.extend(b.receive(64)) or len(got) >= sent, f"{sent} frames at {b.name}")
    assert [f for f, _ in got] == frames
    return frames


@needs_tshark
@pytest.mark.usefixtures("datapath")
def test_tshark_counts_what_the_port_counters_count_with_direction_and_comment(tmp_path):
    path = tmp_path / "ports.pcapng"
    bg = BackgroundSwitch()
    writer = PcapngWriter(str(path))
    device_records, nics = [], []
    try:
        ports = [bg.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock"))) for name in ("a", "b")]

        def attach():
            for port in ports:
                writer.add_interface(port.name)
                port.tracer.add_frame_sink(writer)
                port.tracer.add_sink(device_records.append)
        bg.call(attach)
        driver_records = []
        nics = [VirtioNetNic(port.socket_path, reconnect_interval=0.05, trace_sink=driver_records.append)
                for port in ports]
        a, b = nics
        exchange(a, b, 40, 200)
        exchange(b, a, 25, 1514)
        counters = bg.call(lambda: {p.name: (p.counters.rx_frames, p.counters.tx_frames) for p in ports})
        bg.call(writer.flush)
        packets = tshark_packets(path)
    finally:
        for nic in nics:
            nic.close()
        bg.close()
        writer.close()
    seen = collections.Counter((name, direction) for name, direction, _, _ in packets)
    for name, (rx_frames, tx_frames) in counters.items():
        # A port's rx: frames from its guest (inbound to the switch); tx: to its guest.
        assert seen[name, "in"] == rx_frames and seen[name, "out"] == tx_frames, (name, seen, counters)
    assert counters == {"a": (40, 25), "b": (25, 40)}
    assert sorted(length for name, d, _, length in packets if (name, d) == ("a", "in")) == [200] * 40
    heads = collections.defaultdict(list)
    for name, direction, comment, _ in packets:
        port, queue, qdir, head = COMMENT.fullmatch(comment).groups()
        assert port == name and (qdir, queue) == (("tx", "1") if direction == "in" else ("rx", "0"))
        heads[name, qdir].append(int(head))
    # Each packet leads to its ring event: the device's chain records (popped
    # TX chains, RX chains written) and the driver's (TX chains added) have
    # the same heads in the same order.
    for (name, qdir), captured in heads.items():
        device = [r["head"] for r in device_records if r["kind"] == "chain" and (r["port"], r["dir"]) == (name, qdir)]
        if qdir == "tx":
            assert device == captured, (name, qdir)
            driver = [r["head"] for r in driver_records
                      if r["kind"] == "chain" and r["dir"] == "tx" and r["port"] == nics[name == "b"].name]
            assert driver == captured, (name, qdir)
        else:
            used = [r["id"] for r in device_records if r["kind"] == "used" and (r["port"], r["dir"]) == (name, "rx")]
            assert used == captured, (name, qdir)


@needs_tshark
def test_mnet_switch_pcap_captures_every_port(tmp_path):
    path = tmp_path / "cli.pcapng"
    socks = {name: str(tmp_path / f"{name}.sock") for name in ("a", "b")}
    switch = MnetProcess("switch", "--port", f"a=vhost-user:{socks['a']}", "--port", f"b=vhost-user:{socks['b']}",
                         "--pcap", str(path))
    nics = []
    try:
        switch.expect("switch running")
        nics = [VirtioNetNic(socks[name], reconnect_interval=0.05) for name in ("a", "b")]
        exchange(nics[0], nics[1], 10, 100)
        # A reader of the running capture sees the packets within the flush interval.
        wait_for(lambda: len(tshark_packets(path)) >= 20, "20 packets in the running capture")
        for nic in nics:
            nic.close()
        nics = []
        status, out, err = switch.interrupt()
    finally:
        for nic in nics:
            nic.close()
        switch.close()
    assert status == 0 and "Traceback" not in err, err
    packets = tshark_packets(path)
    assert collections.Counter((n, d) for n, d, _, _ in packets) == {
        ("a", "in"): 10, ("b", "out"): 10}, packets
    assert f"pcapng {path}: 20 packets on 2 interfaces" in out, out

