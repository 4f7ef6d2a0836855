"""IPv4 header view and repr on captured Linux packets, and every malformed path."""

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import IpProtocol, Ipv4Packet, Ipv4Repr, MalformedPacket
from nicdev.virtio.checksum import internet_checksum
from stack.wire.errors import REASONS

from support.checksum_reference import naive_checksum

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")

# Captured with tcpdump on a veth between two network namespaces (checksum
# offload off); tcpdump -vv decoded each as shown.
#
# busybox ping -s 16: "(tos 0x0, ttl 64, id 2640, offset 0, flags [DF],
# proto ICMP (1), length 44) 10.0.0.1 > 10.0.0.2: ICMP echo request"
PING = bytes.fromhex(
    "4500002c0a50400040011c7f0a0000010a000002"
    "08005e0529a30000d046a010000000000000000000000000"
)
PING_HEADER, PING_PAYLOAD = PING[:20], PING[20:]
PING_REPR = Ipv4Repr(
    src=A, dst=B, protocol=IpProtocol.ICMP, payload_len=24, ttl=64, ident=2640, dont_frag=True
)

# Second fragment of busybox ping -s 2000: "(tos 0x0, ttl 64, id 2641,
# offset 1480, flags [none], proto ICMP (1), length 548)"; its payload is
# 528 zero bytes.
FRAG1_HEADER = bytes.fromhex("450002240a5100b9400159cd0a0000010a000002")
# First fragment: "id 2641, offset 0, flags [+], length 1500".
FRAG0_HEADER = bytes.fromhex("450005dc0a512000400136ce0a0000010a000002")

# A UDP datagram, 33 bytes: "(tos 0x0, ttl 64, id 23153, offset 0, flags [DF],
# proto UDP (17), length 33) 10.0.0.1.40000 > 10.0.0.2.5353: [udp sum ok]".
UDP_PACKET = bytes.fromhex(
    "450000215a7140004011cc580a0000010a000002" "9c4014e9000df6d568656c6c6f"
)


def test_captured_checksums_match_naive_reference():
    for header in (PING_HEADER, FRAG0_HEADER, FRAG1_HEADER, UDP_PACKET[:20]):
        assert naive_checksum(header) == 0


def test_deconstruct():
    p = Ipv4Packet(PING)
    assert p.version == 4 and p.ihl == 5 and p.header_len == 20
    assert p.dscp == 0 and p.ecn == 0
    assert p.total_len == 44 and p.ident == 2640
    assert p.dont_frag and not p.more_frags and p.frag_offset == 0
    assert p.ttl == 64 and p.protocol == IpProtocol.ICMP
    assert p.checksum == 0x1C7F and p.verify_checksum()
    assert p.src == A and p.dst == B
    assert p.options == b""
    assert bytes(p.payload) == PING_PAYLOAD


def test_deconstruct_fragment_fields():
    p = Ipv4Packet(FRAG1_HEADER + bytes(528))
    assert not p.dont_frag and not p.more_frags and p.frag_offset == 1480
    q = Ipv4Packet(FRAG0_HEADER + bytes(1480))
    assert q.more_frags and q.frag_offset == 0 and q.total_len == 1500


def test_construct():
    buf = bytearray(len(PING))
    p = Ipv4Packet(buf)
    p.version = 4
    p.ihl = 5
    p.dscp = 0
    p.ecn = 0
    p.total_len = 44
    p.ident = 2640
    p.dont_frag = True
    p.more_frags = False
    p.frag_offset = 0
    p.ttl = 64
    p.protocol = IpProtocol.ICMP
    p.src = A
    p.dst = B
    p.payload[:] = PING_PAYLOAD
    p.fill_checksum()
    assert bytes(buf) == PING


def test_construct_fragment_and_tos_bits():
    buf = bytearray(FRAG1_HEADER + bytes(528))
    p = Ipv4Packet(buf)
    p.more_frags = True
    p.dont_frag = True
    p.frag_offset = 8 * 0x1FFF
    p.dscp = 46
    p.ecn = 1
    assert p.more_frags and p.dont_frag and p.frag_offset == 65528
    assert p.dscp == 46 and p.ecn == 1 and buf[1] == 46 << 2 | 1
    p.more_frags = False
    p.dont_frag = False
    p.frag_offset = 1480
    p.dscp = p.ecn = 0
    p.fill_checksum()
    assert bytes(buf[:20]) == FRAG1_HEADER
    with pytest.raises(ValueError):
        p.frag_offset = 12


def test_parse():
    r, payload = Ipv4Repr.parse(PING)
    assert r == PING_REPR
    assert isinstance(r.protocol, IpProtocol)
    assert isinstance(payload, memoryview) and bytes(payload) == PING_PAYLOAD
    assert not r.is_fragment


def test_parse_fragments():
    r0, p0 = Ipv4Repr.parse(FRAG0_HEADER + bytes(1480))
    assert r0.more_frags and r0.frag_offset == 0 and r0.ident == 2641 and len(p0) == 1480
    r1, p1 = Ipv4Repr.parse(FRAG1_HEADER + bytes(528))
    assert not r1.more_frags and r1.frag_offset == 1480 and len(p1) == 528
    assert r0.is_fragment and r1.is_fragment


def test_emit():
    assert PING_REPR.emit(PING_PAYLOAD) == PING
    assert PING_REPR.header_bytes() == PING_HEADER
    frag1 = Ipv4Repr(A, B, IpProtocol.ICMP, 528, ident=2641, frag_offset=1480)
    assert frag1.header_bytes() == FRAG1_HEADER
    frag0 = Ipv4Repr(A, B, IpProtocol.ICMP, 1480, ident=2641, more_frags=True)
    assert frag0.header_bytes() == FRAG0_HEADER


def test_ethernet_padding_is_trimmed():
    # A 33-byte UDP packet travels in a 60-byte frame: 13 bytes of padding.
    padded = UDP_PACKET + bytes(60 - 14 - len(UDP_PACKET))
    r, payload = Ipv4Repr.parse(padded)
    assert r.payload_len == 13 and bytes(payload) == UDP_PACKET[20:]
    assert bytes(Ipv4Packet(padded).payload) == UDP_PACKET[20:]


def test_options_are_skipped():
    # ihl 6 with a Router Alert option (RFC 2113: 94 04 00 00).
    header = bytearray(PING_HEADER)
    header[0] = 0x46
    header[2:4] = (48).to_bytes(2, "big")
    header[10:12] = b"\0\0"
    header += bytes.fromhex("94040000")
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    pkt = bytes(header) + PING_PAYLOAD
    r, payload = Ipv4Repr.parse(pkt)
    assert r == PING_REPR and bytes(payload) == PING_PAYLOAD
    view = Ipv4Packet(pkt)
    assert view.header_len == 24 and view.options == bytes.fromhex("94040000")
    # Re-emitting drops the options.
    assert r.emit(payload) == PING


def test_unknown_protocol_stays_int():
    r = Ipv4Repr(A, B, 89, 0)  # OSPF
    parsed, _ = Ipv4Repr.parse(r.emit())
    assert parsed.protocol == 89 and not isinstance(parsed.protocol, IpProtocol)


def test_verify_checksum_off_accepts_bad_checksum():
    bad = bytearray(PING)
    bad[10] ^= 0xFF
    r, _ = Ipv4Repr.parse(bad, verify_checksum=False)
    assert r == PING_REPR


def _with_checksum(header: bytearray) -> bytes:
    header[10:12] = b"\0\0"
    hl = (header[0] & 0xF) * 4
    if 20 <= hl <= len(header):
        header[10:12] = internet_checksum(header[:hl]).to_bytes(2, "big")
    return bytes(header)


def _mutated(offset: int, value: int) -> bytes:
    pkt = bytearray(PING)
    pkt[offset] = value
    return _with_checksum(pkt)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "ipv4: truncated"),
        (PING[:19], "ipv4: truncated"),
        (_mutated(0, 0x65), "ipv4: bad version"),
        (_mutated(0, 0x05), "ipv4: bad version"),
        (_mutated(0, 0x44), "ipv4: bad header length"),
        (_mutated(0, 0x40), "ipv4: bad header length"),
        (_mutated(0, 0x4F), "ipv4: truncated"),  # 60-byte header, 44 bytes here
        (_with_checksum(bytearray(PING[:2] + (19).to_bytes(2, "big") + PING[4:])), "ipv4: bad total length"),
        (_with_checksum(bytearray(PING[:2] + (45).to_bytes(2, "big") + PING[4:])), "ipv4: bad total length"),
        (PING[:43], "ipv4: bad total length"),
        (PING[:10] + b"\x1c\x7e" + PING[12:], "ipv4: bad checksum"),
        (PING[:12] + b"\x0b" + PING[13:], "ipv4: bad checksum"),
    ],
)
def test_malformed(data, reason):
    with pytest.raises(MalformedPacket) as e:
        Ipv4Repr.parse(data)
    assert e.value.reason == reason
    assert reason in REASONS


def test_view_rejects_short_buffer():
    with pytest.raises(MalformedPacket):
        Ipv4Packet(PING[:19])


@pytest.mark.parametrize(
    "kwargs",
    [dict(frag_offset=12), dict(frag_offset=65536), dict(frag_offset=-8), dict(payload_len=65516)],
)
def test_emit_rejects_impossible_headers(kwargs):
    r = Ipv4Repr(A, B, IpProtocol.UDP, **{"payload_len": 0, **kwargs})
    with pytest.raises(ValueError):
        r.header_bytes()


def test_emit_rejects_payload_length_mismatch():
    with pytest.raises(ValueError):
        PING_REPR.emit(PING_PAYLOAD[:-1])


@given(st.binary(max_size=80), st.booleans())
def test_fuzz_parse(data, verify):
    try:
        r, payload = Ipv4Repr.parse(data, verify_checksum=verify)
    except MalformedPacket as e:
        assert e.reason.startswith("ipv4: ") and e.reason in REASONS
    else:
        assert len(payload) == r.payload_len


@given(st.binary(min_size=20, max_size=80))
def test_fuzz_version4_headers(data):
    # Force version 4 and a plausible IHL so parsing gets past the first checks.
    buf = bytearray(data)
    buf[0] = 0x40 | (buf[0] % 11 + 5)
    try:
        Ipv4Repr.parse(buf, verify_checksum=False)
    except MalformedPacket as e:
        assert e.reason in ("ipv4: truncated", "ipv4: bad total length")


addresses = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(
    addresses,
    addresses,
    st.integers(0, 255),
    st.binary(max_size=300),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.booleans(),
    st.integers(0, 0x1FFF),
    st.integers(0, 255),
)
def test_roundtrip(src, dst, proto, payload, ttl, ident, df, mf, off8, tos):
    r = Ipv4Repr(src, dst, proto, len(payload), ttl, ident, df, mf, off8 * 8, tos)
    pkt = r.emit(payload)
    assert naive_checksum(pkt[:20]) == 0
    parsed, got = Ipv4Repr.parse(pkt)
    assert parsed == r and bytes(got) == payload
