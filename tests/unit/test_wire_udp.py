"""UDP view and repr on captured datagrams, checksum rules and offload."""

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import MalformedPacket, UdpDatagram, UdpRepr
from nicdev.virtio.checksum import internet_checksum
from stack.wire.errors import REASONS

from support.checksum_reference import naive_checksum

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")

# Captured on a veth between two network namespaces, checksum offload off:
# "10.0.0.1.40000 > 10.0.0.2.5353: [udp sum ok]" carrying b"hello", and the
# answer "10.0.0.2.5353 > 10.0.0.1.40000: [udp sum ok]" carrying b"pong!".
HELLO = bytes.fromhex("9c4014e9000df6d5" "68656c6c6f")
PONG = bytes.fromhex("14e99c40000d3ad1" "706f6e6721")


def pseudo(src, dst, length):
    return src.packed + dst.packed + bytes((0, 17)) + length.to_bytes(2, "big")


def test_captured_checksums_match_naive_reference():
    assert naive_checksum(pseudo(A, B, 13) + HELLO) == 0
    assert naive_checksum(pseudo(B, A, 13) + PONG) == 0


def test_deconstruct():
    d = UdpDatagram(HELLO)
    assert d.src_port == 40000 and d.dst_port == 5353
    assert d.length == 13 and d.checksum == 0xF6D5
    assert bytes(d.payload) == b"hello"


def test_construct():
    buf = bytearray(len(HELLO))
    d = UdpDatagram(buf)
    d.src_port = 40000
    d.dst_port = 5353
    d.length = 13
    d.payload[:] = b"hello"
    d.fill_checksum(A, B)
    assert bytes(buf) == HELLO


def test_parse():
    r, payload = UdpRepr.parse(HELLO, A, B)
    assert r == UdpRepr(40000, 5353)
    assert isinstance(payload, memoryview) and bytes(payload) == b"hello"
    assert UdpRepr.parse(PONG, B, A)[0] == UdpRepr(5353, 40000)


def test_emit():
    assert UdpRepr(40000, 5353).emit(b"hello", A, B) == HELLO
    assert UdpRepr(5353, 40000).emit(memoryview(b"pong!"), B, A) == PONG


def test_checksum_depends_on_pseudo_header():
    with pytest.raises(MalformedPacket) as e:
        UdpRepr.parse(HELLO, A, IPv4Address("10.0.0.3"))
    assert e.value.reason == "udp: bad checksum"


def test_zero_checksum_means_none():
    no_sum = HELLO[:6] + b"\0\0" + HELLO[8:]
    r, payload = UdpRepr.parse(no_sum, A, IPv4Address("192.0.2.99"))
    assert r == UdpRepr(40000, 5353) and bytes(payload) == b"hello"
    assert UdpRepr(40000, 5353).emit(b"hello", A, B, checksum=False) == no_sum


def test_computed_zero_is_sent_as_ffff():
    # Pick the two payload bytes that make the one's complement sum 0xFFFF,
    # so the checksum computes to 0 and must go out as 0xFFFF (RFC 768).
    partial = naive_checksum(pseudo(A, B, 10) + bytes.fromhex("9c4014e9000a0000") + b"\0\0")
    payload = (0xFFFF - (~partial & 0xFFFF)).to_bytes(2, "big")
    wire = UdpRepr(40000, 5353).emit(payload, A, B)
    assert wire[6:8] == b"\xff\xff"
    assert UdpRepr.parse(wire, A, B)[0] == UdpRepr(40000, 5353)


def test_length_field_shorter_than_buffer_trims():
    r, payload = UdpRepr.parse(HELLO + b"junk", A, B)
    assert bytes(payload) == b"hello"
    assert bytes(UdpDatagram(HELLO + b"junk").payload) == b"hello"


def test_empty_payload():
    wire = UdpRepr(1, 2).emit(b"", A, B)
    assert len(wire) == 8 and naive_checksum(pseudo(A, B, 8) + wire) == 0
    r, payload = UdpRepr.parse(wire, A, B)
    assert r == UdpRepr(1, 2) and len(payload) == 0


def test_partial_checksum_completed_like_a_device():
    wire, start, offset = UdpRepr(40000, 5353).emit_partial_csum(b"hello", A, B)
    assert (start, offset) == (0, 6)
    # The field holds the folded pseudo-header sum (not inverted).
    assert int.from_bytes(wire[6:8], "big") == 0xFFFF - naive_checksum(pseudo(A, B, 13))
    # What virtio-net does for NEEDS_CSUM: sum from csum_start to the end,
    # store the inverted result at csum_start + csum_offset.
    done = bytearray(wire)
    csum = internet_checksum(done[start:])
    done[start + offset : start + offset + 2] = (csum or 0xFFFF).to_bytes(2, "big")
    assert bytes(done) == HELLO


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "udp: truncated"),
        (HELLO[:7], "udp: truncated"),
        (HELLO[:4] + b"\x00\x07" + HELLO[6:], "udp: bad length"),
        (HELLO[:4] + b"\x00\x00" + HELLO[6:], "udp: bad length"),
        (HELLO[:4] + b"\x00\x0e" + HELLO[6:], "udp: bad length"),
        (HELLO[:12], "udp: bad length"),
        (HELLO[:-1] + b"O", "udp: bad checksum"),
        (HELLO[:2] + b"\0\0" + HELLO[4:6] + b"\0\0" + HELLO[8:], "udp: zero destination port"),
    ],
)
def test_malformed(data, reason):
    with pytest.raises(MalformedPacket) as e:
        UdpRepr.parse(data, A, B)
    assert e.value.reason == reason
    assert reason in REASONS


def test_verify_checksum_off():
    assert UdpRepr.parse(HELLO[:-1] + b"O", A, B, verify_checksum=False)[0] == UdpRepr(40000, 5353)


def test_view_rejects_short_buffer():
    with pytest.raises(MalformedPacket):
        UdpDatagram(HELLO[:7])


def test_emit_rejects_oversized_payload():
    with pytest.raises(ValueError):
        UdpRepr(1, 2).emit(bytes(65528), A, B)


@given(st.binary(max_size=64), st.booleans())
def test_fuzz_parse(data, verify):
    try:
        r, payload = UdpRepr.parse(data, A, B, verify_checksum=verify)
    except MalformedPacket as e:
        assert e.reason.startswith("udp: ") and e.reason in REASONS
    else:
        assert isinstance(r, UdpRepr) and len(payload) <= len(data) - 8


addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
ports = st.integers(0, 0xFFFF)


@given(ports, st.integers(1, 0xFFFF), st.binary(max_size=300), addresses, addresses)
def test_roundtrip(sport, dport, payload, src, dst):
    wire = UdpRepr(sport, dport).emit(payload, src, dst)
    assert naive_checksum(pseudo(src, dst, len(wire)) + wire) == 0
    r, got = UdpRepr.parse(wire, src, dst)
    assert r == UdpRepr(sport, dport) and bytes(got) == payload
