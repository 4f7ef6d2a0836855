"""A Linux guest's ping, captured to pcapng and read by real tshark.

The guest (virtio-net under QEMU) and a MultiOS stack (our own driver) sit
on two vhost-user ports of one switch whose ports write every frame to a
pcapng file and every ring event to a trace, from before the guest boots.
The guest pings the stack; tshark then counts the packets the ports'
counters count, per port and direction, finds the echo requests and
replies where they belong, and every packet's comment names the queue and
descriptor head of the guest driver's chain it came in (or the buffer it
went to), the same heads as the device's trace records.
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess

import pytest

from support.guestlab import ping

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (make setup)")]

COMMENT = re.compile(r"port ([\w-]+) queue (\d) \((rx|tx)\) head (\d+)")
PINGS = 5


def tshark(path, *args) -> list[list[str]]:
    r = subprocess.run(["tshark", "-r", str(path), *args, "-T", "fields", "-E", "separator=|",
                        "-e", "frame.interface_name", "-e", "frame.packet_flags_direction", "-e", "frame.comment"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines()]


@pytest.fixture
def lab(guest_image, tmp_path):
    from nicdev.net.background import BackgroundSwitch
    from nicdev.net.pcapng import PcapngWriter
    from nicdev.net.vhost_user_port import VhostUserPort
    from qemu.cmdline import NicConfig
    from qemu.vm import VirtualMachine
    from stack import Stack
    from stack.drivers import VirtioNetNic

    bg = BackgroundSwitch()
    writer = PcapngWriter(str(tmp_path / "guest.pcapng"))
    events, vm, nic, stack = [], None, None, None
    try:
        ports = [bg.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock"))) for name in ("vm", "stack")]

        def capture():
            for port in ports:
                writer.add_interface(port.name)
                port.tracer.add_frame_sink(writer)
                port.tracer.add_sink(events.append)
        bg.call(capture)
        vm = VirtualMachine("vm", guest_image, nic=NicConfig("vhost-user", ports[0].socket_path), ip="10.0.0.1/24",
                            workdir=tmp_path / "work-vm", progress=lambda line: print(line, flush=True))
        vm.start()
        nic = VirtioNetNic(ports[1].socket_path)
        stack = Stack(nic, "10.0.0.9/24")
        stack.start()
        vm.wait_ready(240.0)
        yield {"bg": bg, "ports": ports, "writer": writer, "events": events, "vm": vm}
    finally:
        if stack is not None:
            stack.stop()
        if nic is not None:
            nic.close()
        if vm is not None:
            vm.stop()
        bg.close()
        writer.close()


def test_tshark_reads_a_guest_ping_with_direction_and_ring_comments(lab):
    got, out = ping(lab["vm"], "10.0.0.9", count=PINGS)
    assert got == PINGS, out
    bg, ports, writer = lab["bg"], lab["ports"], lab["writer"]

    def stop():
        for port in ports:
            port.tracer.remove_frame_sink(writer)
            port.tracer.remove_sink(lab["events"].append)
        writer.flush()
        return {p.name: (p.counters.rx_frames, p.counters.tx_frames) for p in ports}
    counters = bg.call(stop)
    path = writer.path
    packets = tshark(path)
    seen = collections.Counter((name, direction) for name, direction, _ in packets)
    for name, (rx_frames, tx_frames) in counters.items():
        assert seen[name, "0x00000001"] == rx_frames and seen[name, "0x00000002"] == tx_frames, (name, seen, counters)
    # The guest's echo requests came in on its port and went out to the stack; the replies the other way.
    requests = collections.Counter((n, d) for n, d, _ in tshark(path, "-Y", "icmp.type == 8"))
    replies = collections.Counter((n, d) for n, d, _ in tshark(path, "-Y", "icmp.type == 0"))
    assert requests == {("vm", "0x00000001"): PINGS, ("stack", "0x00000002"): PINGS}, requests
    assert replies == {("stack", "0x00000001"): PINGS, ("vm", "0x00000002"): PINGS}, replies
    # Each packet's comment leads to its ring event: a chain the guest's driver
    # added (its TX queue), or the receive buffer the device used (its RX queue).
    events = lab["events"]
    for name in ("vm", "stack"):
        heads = collections.defaultdict(list)
        for n, direction, comment in packets:
            if n == name:
                port, queue, qdir, head = COMMENT.fullmatch(comment).groups()
                assert port == name and (queue, qdir) == (("1", "tx") if direction == "0x00000001" else ("0", "rx"))
                heads[qdir].append(int(head))
        chains = [r["head"] for r in events if (r["port"], r["kind"], r["dir"]) == (name, "chain", "tx")]
        used = [r["id"] for r in events if (r["port"], r["kind"], r["dir"]) == (name, "used", "rx")]
        assert heads["tx"] == chains and heads["rx"] == used, name
