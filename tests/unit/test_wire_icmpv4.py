"""ICMPv4 messages captured from Linux: echo, port and frag-needed unreachable, time exceeded."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    DestUnreachable,
    DestUnreachableCode,
    EchoReply,
    EchoRequest,
    Icmpv4Other,
    Icmpv4Packet,
    Icmpv4Repr,
    MalformedPacket,
    TimeExceeded,
    TimeExceededCode,
    emit_icmpv4,
    error_payload,
    parse_icmpv4,
)
from stack.wire.errors import REASONS

from support.checksum_reference import naive_checksum

# All captured with tcpdump on veths between network namespaces (IPv4
# headers removed: these are IPv4 payloads).  tcpdump's decoding is quoted.
#
# busybox ping -s 16 10.0.0.2: "ICMP echo request, id 10659, seq 0, length 24"
ECHO_REQUEST = bytes.fromhex("08005e0529a30000" "d046a010000000000000000000000000")
ECHO_DATA = ECHO_REQUEST[8:]
# and Linux's answer: "ICMP echo reply, id 10659, seq 0, length 24"
ECHO_REPLY = bytes.fromhex("0000660529a30000" "d046a010000000000000000000000000")

# UDP "closed" to 10.0.0.2 port 9: "ICMP 10.0.0.2 udp port 9 unreachable,
# length 42"; Linux quotes the whole 34-byte datagram.
PORT_UNREACH_QUOTE = bytes.fromhex(
    "450000225a8c40004011cc3c0a0000010a000002" "9c410009000e1741636c6f736564"
)
PORT_UNREACH = bytes.fromhex("0303111f00000000") + PORT_UNREACH_QUOTE

# A router namespace (MTU 1280 onwards) answering a 1428-byte DF datagram:
# "ICMP 10.0.1.2 unreachable - need to frag (mtu 1280), length 556"; it
# quotes 548 bytes: IPv4 header, UDP header, 520 bytes of the b"x" payload.
FRAG_NEEDED_QUOTE = (
    bytes.fromhex("4500059400004000401120570a0000010a000102" "9c4200070580da38") + b"x" * 520
)
FRAG_NEEDED = bytes.fromhex("0304219f00000500") + FRAG_NEEDED_QUOTE

# busybox ping -t 1 through that router: "ICMP time exceeded in-transit, length 44"
TTL_QUOTE = bytes.fromhex("4500002454da400001010ffd0a0000010a000102" "08003c723bc40000b5a5ca2300000000")
TIME_EXCEEDED = bytes.fromhex("0b00f4ff00000000") + TTL_QUOTE

# A lone first fragment (ipfrag_time=1 at the receiver): "ICMP ip reassembly
# time exceeded, length 44"
REASM_QUOTE = bytes.fromhex("45000024424220003f1104850a0000010a000102" "9c43000700180000" "4141414141414141")
REASM_EXCEEDED = bytes.fromhex("0b01539700000000") + REASM_QUOTE

CAPTURES = [ECHO_REQUEST, ECHO_REPLY, PORT_UNREACH, FRAG_NEEDED, TIME_EXCEEDED, REASM_EXCEEDED]


def test_captured_checksums_match_naive_reference():
    for msg in CAPTURES:
        assert naive_checksum(msg) == 0


def test_deconstruct():
    p = Icmpv4Packet(ECHO_REQUEST)
    assert p.msg_type == 8 and p.code == 0
    assert p.checksum == 0x5E05 and p.verify_checksum()
    assert p.ident == 10659 and p.seq == 0
    assert bytes(p.data) == ECHO_DATA
    q = Icmpv4Packet(FRAG_NEEDED)
    assert q.msg_type == 3 and q.code == 4 and q.seq == 1280


def test_construct():
    buf = bytearray(len(ECHO_REQUEST))
    p = Icmpv4Packet(buf)
    p.msg_type = 8
    p.code = 0
    p.ident = 10659
    p.seq = 0
    p.data[:] = ECHO_DATA
    p.fill_checksum()
    assert bytes(buf) == ECHO_REQUEST


EXPECTED = [
    (ECHO_REQUEST, EchoRequest(10659, 0, ECHO_DATA)),
    (ECHO_REPLY, EchoReply(10659, 0, ECHO_DATA)),
    (PORT_UNREACH, DestUnreachable(DestUnreachableCode.PORT, PORT_UNREACH_QUOTE)),
    (FRAG_NEEDED, DestUnreachable(DestUnreachableCode.FRAG_NEEDED, FRAG_NEEDED_QUOTE, next_hop_mtu=1280)),
    (TIME_EXCEEDED, TimeExceeded(TimeExceededCode.TTL_EXPIRED, TTL_QUOTE)),
    (REASM_EXCEEDED, TimeExceeded(TimeExceededCode.FRAG_REASSEMBLY, REASM_QUOTE)),
]


@pytest.mark.parametrize("wire, expected", EXPECTED)
def test_parse(wire, expected):
    got = parse_icmpv4(wire)
    assert got == expected
    assert isinstance(got, Icmpv4Repr)


@pytest.mark.parametrize("wire, expected", EXPECTED)
def test_emit(wire, expected):
    assert emit_icmpv4(expected) == wire


def test_other_messages_roundtrip():
    # Timestamp request (type 13), built by hand; checksum checked by the reference.
    msg = Icmpv4Other(13, 0, bytes.fromhex("12340001") + bytes(12))
    wire = emit_icmpv4(msg)
    assert naive_checksum(wire) == 0
    assert parse_icmpv4(wire) == msg
    # An echo request with a non-zero code is not an echo request.
    odd = bytearray(ECHO_REQUEST)
    odd[1] = 1
    odd[2:4] = b"\0\0"
    odd[2:4] = naive_checksum(bytes(odd)).to_bytes(2, "big")
    assert parse_icmpv4(odd) == Icmpv4Other(8, 1, bytes(odd[4:]))


def test_unknown_codes_stay_int():
    msg = DestUnreachable(99, PORT_UNREACH_QUOTE)
    assert parse_icmpv4(emit_icmpv4(msg)).code == 99


def test_emit_rejects_non_messages():
    with pytest.raises(TypeError):
        emit_icmpv4("ping")
    with pytest.raises(ValueError):
        emit_icmpv4(Icmpv4Other(13, 0, b"\0"))


def test_error_payload_quotes_header_and_8_bytes():
    ip_packet = PORT_UNREACH_QUOTE  # a real 34-byte IPv4/UDP packet
    assert error_payload(ip_packet) == ip_packet[:28]
    # Ethernet padding is never quoted, and a short packet is quoted whole.
    short = bytes.fromhex("450000180000000040110000" "0a0000010a000002") + b"abcd"
    assert error_payload(short + bytes(20)) == short
    # Header options are part of the header.
    with_opts = bytes([0x46]) + ip_packet[1:20] + b"\x94\x04\0\0" + ip_packet[20:]
    assert error_payload(with_opts) == with_opts[:32]
    with pytest.raises(ValueError):
        error_payload(b"\x45\x00")


def test_error_payload_builds_a_parseable_error():
    quoted = error_payload(FRAG_NEEDED_QUOTE)
    wire = emit_icmpv4(DestUnreachable(DestUnreachableCode.FRAG_NEEDED, quoted, next_hop_mtu=1280))
    assert parse_icmpv4(wire) == DestUnreachable(DestUnreachableCode.FRAG_NEEDED, quoted, 1280)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "icmpv4: truncated"),
        (ECHO_REQUEST[:7], "icmpv4: truncated"),
        (ECHO_REQUEST[:2] + b"\0\0" + ECHO_REQUEST[4:], "icmpv4: bad checksum"),
        (ECHO_REQUEST[:-1] + b"\x01", "icmpv4: bad checksum"),
        (ECHO_REQUEST[:9], "icmpv4: bad checksum"),  # truncated data
        (emit_icmpv4(DestUnreachable(3, PORT_UNREACH_QUOTE[:27])), "icmpv4: truncated error"),
        (emit_icmpv4(TimeExceeded(0, b"")), "icmpv4: truncated error"),
    ],
)
def test_malformed(data, reason):
    with pytest.raises(MalformedPacket) as e:
        parse_icmpv4(data)
    assert e.value.reason == reason
    assert reason in REASONS


def test_verify_checksum_off():
    bad = ECHO_REQUEST[:2] + b"\0\0" + ECHO_REQUEST[4:]
    assert parse_icmpv4(bad, verify_checksum=False) == EchoRequest(10659, 0, ECHO_DATA)


def test_view_rejects_short_buffer():
    with pytest.raises(MalformedPacket):
        Icmpv4Packet(b"\x08\x00")


@given(st.binary(max_size=80), st.booleans())
def test_fuzz_parse(data, verify):
    try:
        msg = parse_icmpv4(data, verify_checksum=verify)
    except MalformedPacket as e:
        assert e.reason.startswith("icmpv4: ") and e.reason in REASONS
    else:
        assert isinstance(msg, Icmpv4Repr)
        if verify:
            # A message that passed the checksum re-emits to the same checksum.
            assert naive_checksum(emit_icmpv4(msg)) == 0


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=200), st.booleans())
def test_echo_roundtrip(ident, seq, data, request):
    msg = (EchoRequest if request else EchoReply)(ident, seq, data)
    wire = emit_icmpv4(msg)
    assert naive_checksum(wire) == 0
    assert parse_icmpv4(wire) == msg
