"""Malformed frames into Interface.receive_frame: counted and dropped, never raised."""
from ipaddress import IPv4Address as A

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.iface import Interface
from stack.testing import IP_A, IP_B, MAC_A, MAC_B
from stack.wire import (
    ArpOperation,
    ArpRepr,
    DestUnreachable,
    DestUnreachableCode,
    EchoRequest,
    EthernetRepr,
    EtherType,
    IpProtocol,
    Ipv4Repr,
    MacAddress,
    UdpRepr,
    emit_icmpv4,
    error_payload,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_iface() -> Interface:
    iface = Interface(MAC_B, ["10.0.0.2/24"])
    sock = iface.udp_open()
    iface.udp_bind(sock, A("0.0.0.0"), 53)
    connected = iface.udp_open()
    iface.udp_connect(connected, IP_A, 9)
    iface.raw.add(iface.raw_open(IpProtocol.ICMP))
    iface.arp.learn(IP_A, MAC_A, 0.0, create=True)
    return iface


def valid_frames() -> list[bytes]:
    """One well-formed frame of each kind the interface handles."""
    eth = EthernetRepr(MAC_B, MAC_A, EtherType.IPV4)
    udp = UdpRepr(1000, 53).emit(b"hello", IP_A, IP_B)
    icmp = emit_icmpv4(EchoRequest(1, 2, b"ping"))
    quoted = error_payload(Ipv4Repr(IP_B, IP_A, IpProtocol.UDP, 8).emit(UdpRepr(9, 9).emit(b"", IP_B, IP_A)))
    err = emit_icmpv4(DestUnreachable(DestUnreachableCode.PORT, quoted))
    arp = ArpRepr(ArpOperation.REQUEST, MAC_A, IP_A, MacAddress(bytes(6)), IP_B).emit()
    big = UdpRepr(1000, 53).emit(bytes(3000), IP_A, IP_B)
    frags = [
        eth.emit(Ipv4Repr(IP_A, IP_B, IpProtocol.UDP, 1480, ident=7, more_frags=True).emit(big[:1480])),
        eth.emit(Ipv4Repr(IP_A, IP_B, IpProtocol.UDP, 1480, ident=7, more_frags=True, frag_offset=1480).emit(big[1480:2960])),
    ]
    return [
        eth.emit(Ipv4Repr(IP_A, IP_B, IpProtocol.UDP, len(udp)).emit(udp)),
        eth.emit(Ipv4Repr(IP_A, IP_B, IpProtocol.ICMP, len(icmp)).emit(icmp)),
        eth.emit(Ipv4Repr(IP_A, IP_B, IpProtocol.ICMP, len(err)).emit(err)),
        EthernetRepr(MacAddress.broadcast(), MAC_A, EtherType.ARP).emit(arp),
        *frags,
    ]


VALID = valid_frames()


def check(iface: Interface, frames: list[bytes]) -> None:
    before = iface.counters.get("ethernet", "rx")
    for i, frame in enumerate(frames):
        iface.receive_frame(frame, float(i))  # must not raise
    iface.poll(float(len(frames)))
    assert iface.counters.get("ethernet", "rx") == before + len(frames)
    assert iface.counters.drops("iface") == 0, iface.counters.snapshot()


@FUZZ
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_random_bytes(frames):
    iface = make_iface()
    check(iface, frames)


@FUZZ
@given(
    st.sampled_from(range(len(VALID))),
    st.lists(st.tuples(st.integers(0, 3100), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 3200),
)
def test_mutated_valid_frames(which, flips, cut):
    frame = bytearray(VALID[which])
    for pos, value in flips:
        if pos < len(frame):
            frame[pos] = value
    iface = make_iface()
    check(iface, [bytes(frame[: max(cut, 0)]), bytes(frame)])


@FUZZ
@given(st.binary(min_size=20, max_size=80), st.integers(0, 255))
def test_random_ipv4_payloads_with_valid_headers(payload, proto):
    ip = Ipv4Repr(IP_A, IP_B, proto, len(payload))
    frame = EthernetRepr(MAC_B, MAC_A, EtherType.IPV4).emit(ip.emit(payload))
    iface = make_iface()
    check(iface, [frame])


def test_corrupted_frames_are_counted_as_drops():
    iface = make_iface()
    frame = bytearray(VALID[0])
    frame[14 + 10] ^= 0x55  # IPv4 header checksum
    iface.receive_frame(bytes(frame), 0.0)
    iface.receive_frame(b"", 0.0)
    assert iface.counters.drops() == 2
