"""TapPort against the real Linux kernel, inside network namespaces the tests create.

Frames are crafted by hand here (a few lines of struct) so the test depends on
nothing but the kernel: an ARP request and an ICMP echo request go in through
the port, the kernel's ARP reply and echo reply must come back out of it.
"""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from nicdev.net.errors import PortError
from nicdev.net.loop import EventLoop
from nicdev.net.netns import iproute, remove_netns, run_in_netns, set_address, temporary_netns
from nicdev.net.pcap_port import PcapPort
from nicdev.net.port import Port
from nicdev.net.switch import Switch
from nicdev.net.tap_port import TapPort

pytestmark = pytest.mark.integration     # needs root: TAP devices and namespaces

OUR_MAC = bytes.fromhex("02000000aa02")
OUR_IP = bytes([10, 123, 0, 2])
KERNEL_IP = bytes([10, 123, 0, 1])
BCAST = b"\xff" * 6


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac, src_ip, b"\0" * 6, target_ip)
    return BCAST + src_mac + b"\x08\x06" + arp


def parse_arp(frame: bytes):
    """(op, sender_mac, sender_ip, target_ip) or None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    _, _, _, _, op, smac, sip, _, tip = struct.unpack_from("!HHBBH6s4s6s4s", frame, 14)
    return op, smac, sip, tip


def icmp_echo(dst_mac: bytes, src_mac: bytes, src_ip: bytes, dst_ip: bytes, ident: int, seq: int,
              payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x1234, 0x4000, 64, 1, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + icmp


def parse_icmp(frame: bytes):
    """(type, ident, seq, payload, checksum_ok) for IPv4 ICMP frames, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 1:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    icmp = frame[14 + ihl:14 + total]
    typ, _, _, ident, seq = struct.unpack_from("!BBHHH", icmp)
    return typ, ident, seq, icmp[8:], checksum(icmp) == 0


class ProbePort(Port):
    """Our side of the wire: what the switch sends us is kept in `got`."""

    kind = "probe"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got: list[bytes] = []

    def start(self, loop) -> None:
        pass

    def transmit(self, frame: bytes, meta=None) -> bool:
        self.got.append(frame)
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(frame)
        return True


def first(frames, pick):
    for f in frames:
        found = pick(f)
        if found:
            return found
    return None


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


@pytest.fixture
def ns():
    with temporary_netns("mnet-tap") as name:
        yield name


def ifname_for(tag: str) -> str:
    return f"mt{tag}{os.getpid() % 100000}"[:15]


def kernel_exchange(loop, probe: ProbePort) -> tuple[bytes, tuple]:
    """ARP for the kernel's address, then ping it; returns (kernel MAC, echo reply)."""
    probe.deliver(arp_request(OUR_MAC, OUR_IP, KERNEL_IP))

    def arp_reply(f):
        a = parse_arp(f)
        return a if a and a[0] == 2 and a[2] == KERNEL_IP and f[:6] == OUR_MAC else None

    loop.run(until=lambda: first(probe.got, arp_reply), timeout=5)
    reply = first(probe.got, arp_reply)
    assert reply, f"no ARP reply from the kernel within 5 s; got {len(probe.got)} other frames"
    assert reply[3] == OUR_IP
    kernel_mac = reply[1]

    payload = b"multios-net tap test".ljust(40, b".")
    probe.deliver(icmp_echo(kernel_mac, OUR_MAC, OUR_IP, KERNEL_IP, 0x4D4E, 7, payload))

    def echo_reply(f):
        e = parse_icmp(f)
        return e if e and e[0] == 0 and f[:6] == OUR_MAC and f[6:12] == kernel_mac else None

    loop.run(until=lambda: first(probe.got, echo_reply), timeout=5)
    echo = first(probe.got, echo_reply)
    assert echo, "no ICMP echo reply from the kernel within 5 s"
    assert echo == (0, 0x4D4E, 7, payload, True)
    return kernel_mac, echo


def test_kernel_answers_arp_and_ping_through_the_switch(loop, ns, tmp_path):
    capture = tmp_path / "tap.pcap"
    switch = Switch(loop)
    try:
        tap = switch.add_port(TapPort("host", ifname_for("a"), netns=ns))
        probe = switch.add_port(ProbePort("probe"))
        switch.add_port(PcapPort("cap", str(capture)))
        assert tap.status == f"{tap.ifname} in netns {ns}: up"
        set_address(tap.ifname, "10.123.0.1/24", netns=ns)
        kernel_mac, _ = kernel_exchange(loop, probe)
        assert {r["mac"] for r in switch.mac_table()} >= {
            ":".join(f"{b:02x}" for b in kernel_mac), "02:00:00:00:aa:02"}
        assert tap.counters.tx_frames >= 2 and tap.counters.rx_frames >= 2
        assert "host" in switch.summary()
    finally:
        switch.close()
    # tcpdump, an independent reader, agrees with our capture file
    out = subprocess.run(["tcpdump", "-nn", "-r", str(capture)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ARP, Reply 10.123.0.1 is-at" in out.stdout
    assert "10.123.0.1 > 10.123.0.2: ICMP echo reply, id 19790, seq 7" in out.stdout


def test_vnet_hdr_tap_carries_the_same_frames(loop, ns):
    tap = TapPort("host", ifname_for("v"), netns=ns, vnet_hdr=True)
    probe = ProbePort("probe")
    switch = Switch(loop)
    try:
        switch.add_port(tap)
        switch.add_port(probe)
        set_address(tap.ifname, "10.123.0.1/24", netns=ns)
        kernel_exchange(loop, probe)
        assert not tap.counters.errors
    finally:
        switch.close()


def test_frames_the_kernel_sends_reach_the_port(loop, ns):
    tap = TapPort("host", ifname_for("k"), netns=ns)
    got: list[bytes] = []
    tap.attach(lambda port, frame, meta: got.append(frame))
    tap.start(loop)
    try:
        set_address(tap.ifname, "10.123.0.1/24", netns=ns)
        # The kernel must resolve 10.123.0.3 before it can ping it: an ARP
        # request comes out of the TAP (nobody answers; ping gives up).
        ping = run_in_netns(ns, ["busybox", "ping", "-c", "1", "-W", "2", "10.123.0.3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def who_has(f):
            a = parse_arp(f)
            return a if a and a[0] == 1 and a[3] == bytes([10, 123, 0, 3]) else None

        try:
            loop.run(until=lambda: first(got, who_has), timeout=10)
        finally:
            ping.wait(timeout=30)
        request = first(got, who_has)
        assert request, f"no ARP request for 10.123.0.3 within 10 s ({len(got)} other frames)"
        assert request[2] == KERNEL_IP
    finally:
        tap.close()


def test_close_removes_the_interface(loop, ns):
    tap = TapPort("host", ifname_for("c"), netns=ns)
    tap.start(loop)
    with iproute(ns) as ipr:
        assert ipr.link_lookup(ifname=tap.ifname)
        tap.close()
        assert ipr.link_lookup(ifname=tap.ifname) == []
    assert tap.status.endswith("closed")
    assert tap.transmit(b"\xff" * 60) is False and tap.counters.tx_dropped == 1


def test_tap_in_the_host_namespace_and_name_patterns(loop):
    tap = TapPort("host", "mnt%d")
    tap.start(loop)
    try:
        assert tap.ifname.startswith("mnt") and tap.ifname[3:].isdigit()
        with iproute() as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname=tap.ifname)[0])[0]
            assert link["flags"] & 1, "interface is not up"
    finally:
        tap.close()
    with iproute() as ipr:
        assert ipr.link_lookup(ifname=tap.ifname) == []


def test_missing_namespace_is_a_clear_error():
    with pytest.raises(PortError, match=r"^network namespace 'mnet-no-such-ns' does not exist$"):
        TapPort("host", "mntx0", netns="mnet-no-such-ns")


def test_namespace_removed_between_construction_and_start(loop):
    with temporary_netns("mnet-tap") as name:
        tap = TapPort("host", "mnty0", netns=name)
    with pytest.raises(PortError, match=f"network namespace '{name}' does not exist"):
        tap.start(loop)


def test_name_taken_by_another_kind_of_interface(loop):
    with pytest.raises(PortError, match="cannot create 'lo': an interface of that name exists and is not a TAP"):
        TapPort("host", "lo").start(loop)


def test_name_already_used_inside_the_namespace(loop, ns):
    first_tap = TapPort("one", ifname_for("d"), netns=ns)
    first_tap.start(loop)
    try:
        second = TapPort("two", first_tap.ifname, netns=ns)
        with pytest.raises(PortError, match=r"tap port 'two': cannot move .* File exists"):
            second.start(loop)
        with iproute() as ipr:          # the half-made device was removed again
            assert ipr.link_lookup(ifname=first_tap.ifname) == []
    finally:
        first_tap.close()


@pytest.mark.parametrize("ifname", ["", "x" * 16, "a/b", "a b", "a:b", ".."])
def test_bad_interface_names(ifname):
    with pytest.raises(PortError, match="bad interface name"):
        TapPort("host", ifname)


def test_port_stops_cleanly_when_its_namespace_disappears(loop):
    with temporary_netns("mnet-tap") as name:
        tap = TapPort("host", ifname_for("g"), netns=name)
        tap.start(loop)
        remove_netns(name)          # the kernel deletes the interface with the namespace
        loop.run(until=lambda: not tap.link_up, timeout=10)
    try:
        assert not tap.link_up, "the port did not notice its interface went away within 10 s"
        assert "failed: read failed" in tap.status
        assert tap.fileno is None
        assert tap.transmit(b"\xff" * 60) is False
    finally:
        tap.close()


def test_netns_helpers_report_mistakes_clearly(ns):
    from nicdev.net.netns import NetnsError, create_netns, link_up, netns_exists

    assert netns_exists(ns)
    with pytest.raises(NetnsError, match=f"network namespace '{ns}' already exists"):
        create_netns(ns)
    with pytest.raises(NetnsError, match="network namespace 'mnet-no-such-ns' does not exist"):
        remove_netns("mnet-no-such-ns")
    with pytest.raises(NetnsError, match="network namespace 'mnet-no-such-ns' does not exist"):
        run_in_netns("mnet-no-such-ns", ["true"])
    with pytest.raises(NetnsError, match=f"no interface 'nothere0' in network namespace '{ns}'"):
        link_up("nothere0", netns=ns)
    with pytest.raises(NetnsError, match="bad address '10.0.0.300/24'"):
        set_address("lo", "10.0.0.300/24", netns=ns)
    with pytest.raises(NetnsError, match="bad network namespace name '../etc'"):
        netns_exists("../etc")
    # a good call for contrast: lo comes up and gets an address
    link_up("lo", netns=ns)
    set_address("lo", "10.124.0.1/24", netns=ns)
    with pytest.raises(NetnsError, match="cannot add 10.124.0.1/24 to 'lo'.*File exists"):
        set_address("lo", "10.124.0.1/24", netns=ns)
    out = run_in_netns(ns, ["ip", "-br", "addr", "show", "lo"], stdout=subprocess.PIPE, text=True)
    assert "10.124.0.1/24" in out.communicate(timeout=30)[0]


def test_sink_closing_the_port_mid_burst_stops_reading(loop, ns):
    import socket

    from pyroute2.netns import create_socket

    tap = TapPort("host", ifname_for("b"), netns=ns)
    got: list[bytes] = []

    def sink(port, frame, meta):
        got.append(frame)
        port.close()                    # e.g. the switch removing the port

    tap.attach(sink)
    tap.start(loop)
    set_address(tap.ifname, "10.123.0.1/24", netns=ns)
    # two broadcast datagrams from inside the namespace: two frames queued on the TAP
    sock = create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for _ in range(2):
            sock.sendto(b"tap burst test", ("10.123.0.255", 9))
    finally:
        sock.close()
    loop.run(until=lambda: got, timeout=5)
    assert len(got) == 1, f"expected one frame before the close, got {len(got)}"
    assert tap.counters.errors == {} and tap.status.endswith("closed")


def test_plain_tap_without_vnet_hdr_answers_arp_and_ping(loop, ns):
    switch = Switch(loop)
    try:
        tap = switch.add_port(TapPort("host", ifname_for("p"), netns=ns, vnet_hdr=False))
        probe = switch.add_port(ProbePort("probe"))
        set_address(tap.ifname, "10.123.0.1/24", netns=ns)
        kernel_exchange(loop, probe)
        assert not tap.vnet_hdr and not tap.counters.errors
    finally:
        switch.close()


def _bulk_between_namespaces(ns_a: str, ns_b: str, size: int) -> None:
    """TCP from 10.125.0.1 (ns_a) to 10.125.0.2 (ns_b): `size` bytes each way."""
    import socket
    import threading

    from pyroute2.netns import create_socket

    server = create_socket(ns_b, socket.AF_INET, socket.SOCK_STREAM, flags=0)
    client = create_socket(ns_a, socket.AF_INET, socket.SOCK_STREAM, flags=0)
    errors = []

    def serve():
        try:
            conn, _ = server.accept()
            with conn:
                got = 0
                while got < size:
                    got += len(conn.recv(1 << 20))
                conn.sendall(bytes(size))
        except Exception as exc:   # reported by the test thread
            errors.append(exc)

    try:
        server.bind(("10.125.0.2", 5001))
        server.listen(1)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client.settimeout(30)
        client.connect(("10.125.0.2", 5001))
        client.sendall(bytes(size))
        got = 0
        while got < size:
            chunk = client.recv(1 << 20)
            assert chunk, "the connection closed early"
            got += len(chunk)
        thread.join(30)
    finally:
        client.close()
        server.close()
    assert not errors, errors


def test_default_taps_carry_the_kernels_gso_frames_both_ways():
    from nicdev.net.background import BackgroundSwitch

    with temporary_netns("mnet-gso") as ns_a, temporary_netns("mnet-gso") as ns_b, BackgroundSwitch() as bg:
        a = bg.add_port(TapPort("a", ifname_for("ga"), netns=ns_a))
        b = bg.add_port(TapPort("b", ifname_for("gb"), netns=ns_b))
        set_address(a.ifname, "10.125.0.1/24", netns=ns_a)
        set_address(b.ifname, "10.125.0.2/24", netns=ns_b)
        _bulk_between_namespaces(ns_a, ns_b, 8 << 20)
        stats = bg.stats()
    ports = stats["ports"]
    # TSO frames crossed whole: well above one MTU-sized frame (1514 bytes)
    # on average, in from each kernel and out to each kernel, never cut here.
    for name in ("a", "b"):
        assert ports[name]["rx_bytes"] / ports[name]["rx_frames"] > 3000, ports[name]
        assert ports[name]["tx_bytes"] / ports[name]["tx_frames"] > 3000, ports[name]
        assert ports[name]["errors"] == {} and ports[name]["tx_dropped"] == 0
    assert stats["switch"]["segmented"] == 0
