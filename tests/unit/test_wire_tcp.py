"""TCP segments captured from Linux: SYN, SYN-ACK, data; options; every malformed path."""

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    MalformedPacket,
    Mss,
    Sack,
    SackPermitted,
    TcpFlags,
    TcpRepr,
    TcpSegment,
    Timestamps,
    UnknownOption,
    WindowScale,
    emit_options,
    parse_options,
)
from nicdev.virtio.checksum import internet_checksum
from stack.wire.errors import REASONS

from support.checksum_reference import naive_checksum

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")
F = TcpFlags

# Captured on a veth between two network namespaces, checksum offload off
# (IPv4 headers removed).  tcpdump -vv said:
# "10.0.0.1.45000 > 10.0.0.2.8080: Flags [S], cksum 0x2379 (correct),
#  seq 506029690, win 64240, options [mss 1460,sackOK,TS val 3639208106
#  ecr 0,nop,wscale 10], length 0"
SYN = bytes.fromhex(
    "afc81f901e29667a00000000a002faf023790000"
    "020405b40402080ad8e9e8aa000000000103030a"
)
SYN_REPR = TcpRepr(
    45000, 8080, 506029690, 0, F.SYN, 64240,
    mss=1460, window_scale=10, sack_permitted=True, timestamps=(3639208106, 0),
)
# "10.0.0.2.8080 > 10.0.0.1.45000: Flags [S.], cksum 0xc1c8 (correct),
#  seq 2746706939, ack 506029691, win 65160, options [mss 1460,sackOK,
#  TS val 1029771507 ecr 3639208106,nop,wscale 10], length 0"
SYN_ACK = bytes.fromhex(
    "1f90afc8a3b76bfb1e29667ba012fe88c1c80000"
    "020405b40402080a3d6110f3d8e9e8aa0103030a"
)
# "10.0.0.1.45000 > 10.0.0.2.8080: Flags [P.], cksum 0x8655 (correct),
#  seq 1:3, ack 1, win 63, options [nop,nop,TS val 3639208131
#  ecr 1029771507], length 2"
DATA = bytes.fromhex(
    "afc81f901e29667ba3b76bfc8018003f86550000" "0101080ad8e9e8c33d6110f3" "6869"
)
# Hand-made (no SACK happened on a clean link) and checked by tcpdump -vv
# from a pcap: "10.0.0.2.8080 > 10.0.0.1.45000: Flags [.], cksum 0x7e1b
# (correct), seq 2746706940, ack 506029693, win 64, options [nop,nop,TS val
# 1029771508 ecr 3639208131,nop,nop,sack 2 {357:457}{557:657}], length 0"
SACK_ACK = bytes.fromhex(
    "1f90afc8a3b76bfc1e29667dd01000407e1b0000"
    "0101080a3d6110f4d8e9e8c3"
    "010105121e2967e11e2968451e2968a91e29690d"
)
SACK_REPR = TcpRepr(
    8080, 45000, 2746706940, 506029693, F.ACK, 64,
    timestamps=(1029771508, 3639208131),
    sack_blocks=((0x1E2967E1, 0x1E296845), (0x1E2968A9, 0x1E29690D)),
)


def pseudo(src, dst, length):
    return src.packed + dst.packed + bytes((0, 6)) + length.to_bytes(2, "big")


def test_captured_checksums_match_naive_reference():
    for src, dst, seg in ((A, B, SYN), (B, A, SYN_ACK), (A, B, DATA), (B, A, SACK_ACK)):
        assert naive_checksum(pseudo(src, dst, len(seg)) + seg) == 0


def test_deconstruct():
    s = TcpSegment(SYN)
    assert s.src_port == 45000 and s.dst_port == 8080
    assert s.seq_number == 506029690 and s.ack_number == 0
    assert s.header_len == 40 and s.flags == F.SYN
    assert s.window == 64240 and s.checksum == 0x2379 and s.urgent == 0
    assert bytes(s.options) == SYN[20:40] and bytes(s.payload) == b""
    d = TcpSegment(DATA)
    assert d.flags == F.PSH | F.ACK and bytes(d.payload) == b"hi"


def test_construct():
    buf = bytearray(len(DATA))
    s = TcpSegment(buf)
    s.src_port = 45000
    s.dst_port = 8080
    s.seq_number = 506029691
    s.ack_number = 2746706940
    s.header_len = 32
    s.flags = F.PSH | F.ACK
    s.window = 63
    s.urgent = 0
    s.options[:] = bytes.fromhex("0101080ad8e9e8c33d6110f3")
    s.payload[:] = b"hi"
    s.fill_checksum(A, B)
    assert bytes(buf) == DATA
    with pytest.raises(ValueError):
        s.header_len = 18


def test_parse():
    r, payload = TcpRepr.parse(SYN, A, B)
    assert r == SYN_REPR and bytes(payload) == b""
    assert isinstance(r.flags, TcpFlags)
    r2, _ = TcpRepr.parse(SYN_ACK, B, A)
    assert r2 == TcpRepr(
        8080, 45000, 2746706939, 506029691, F.SYN | F.ACK, 65160,
        mss=1460, window_scale=10, sack_permitted=True, timestamps=(1029771507, 3639208106),
    )
    r3, payload3 = TcpRepr.parse(DATA, A, B)
    assert r3 == TcpRepr(
        45000, 8080, 506029691, 2746706940, F.PSH | F.ACK, 63, timestamps=(3639208131, 1029771507)
    )
    assert isinstance(payload3, memoryview) and bytes(payload3) == b"hi"
    assert TcpRepr.parse(SACK_ACK, B, A)[0] == SACK_REPR


def test_emit():
    # Options come out in Linux's layout, so our segments match its bytes.
    assert SYN_REPR.emit(b"", A, B) == SYN
    assert SYN_REPR.header_len == 40
    r3 = TcpRepr(45000, 8080, 506029691, 2746706940, F.PSH | F.ACK, 63, timestamps=(3639208131, 1029771507))
    assert r3.emit(b"hi", A, B) == DATA
    assert r3.emit(memoryview(b"hi"), A, B) == DATA
    assert SACK_REPR.emit(b"", B, A) == SACK_ACK
    assert SACK_REPR.header_len == 52


def test_emit_without_checksum_leaves_zero():
    wire = SYN_REPR.emit(b"", A, B, checksum=False)
    assert wire[16:18] == b"\0\0" and wire[:16] == SYN[:16] and wire[18:] == SYN[18:]


def test_partial_checksum_completed_like_a_device():
    r3 = TcpRepr(45000, 8080, 506029691, 2746706940, F.PSH | F.ACK, 63, timestamps=(3639208131, 1029771507))
    wire, start, offset = r3.emit_partial_csum(b"hi", A, B)
    assert (start, offset) == (0, 16)
    assert int.from_bytes(wire[16:18], "big") == 0xFFFF - naive_checksum(pseudo(A, B, len(DATA)))
    done = bytearray(wire)
    done[start + offset : start + offset + 2] = internet_checksum(done[start:]).to_bytes(2, "big")
    assert bytes(done) == DATA


def test_option_layouts():
    # Each layout is 32-bit aligned and parses back to what went in.
    cases = [
        dict(),
        dict(mss=536),
        dict(sack_permitted=True),
        dict(mss=1460, sack_permitted=True, window_scale=7),
        dict(timestamps=(1, 2)),
        dict(sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8))),
        dict(timestamps=(1, 2), sack_blocks=((1, 2), (3, 4), (5, 6))),
    ]
    for kw in cases:
        r = TcpRepr(1, 2, 3, 4, F.ACK, 5, **kw)
        wire = r.emit(b"", A, B)
        assert len(wire) == r.header_len and r.header_len % 4 == 0
        assert TcpRepr.parse(wire, A, B)[0] == r


def test_too_many_options():
    with pytest.raises(ValueError):
        emit_options(mss=1460, timestamps=(1, 2), sack_blocks=((1, 2), (3, 4), (5, 6)))
    with pytest.raises(ValueError):
        TcpRepr(1, 2, 3, 4, F.ACK, 5, sack_blocks=((1, 2),) * 5).emit(b"", A, B)


def test_parse_options_directly():
    opts = bytes.fromhex(
        "020405b4" "0402" "080a0000000100000002" "01" "030307"
        "05120000000a000000140000001e00000028" "fe06abcdef01" "00" "ffff"
    )
    assert parse_options(opts) == [
        Mss(1460),
        SackPermitted(),
        Timestamps(1, 2),
        WindowScale(7),
        Sack(((10, 20), (30, 40))),
        UnknownOption(0xFE, bytes.fromhex("abcdef01")),
    ]
    assert parse_options(b"") == [] and parse_options(b"\x01\x01\x01") == []


def _segment_with_options(opts: bytes, *, src=A, dst=B) -> bytes:
    # A valid checksum, so parse gets as far as the options.
    assert len(opts) % 4 == 0
    off = (20 + len(opts)) // 4
    header = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, off << 4, 0x10, 5, 0, 0) + opts
    csum = naive_checksum(pseudo(src, dst, len(header)) + header)
    return header[:16] + csum.to_bytes(2, "big") + header[18:]


def test_unknown_options_are_skipped_and_eol_stops():
    wire = _segment_with_options(bytes.fromhex("fe06abcdef01" "0204" "0218" "00" "2aff000000"))
    r, _ = TcpRepr.parse(wire, A, B)
    assert r == TcpRepr(1, 2, 3, 4, F.ACK, 5, mss=0x218)


@pytest.mark.parametrize(
    "opts",
    [
        "01010102",  # MSS kind with no length byte
        "02000000",  # length 0
        "fe010000",  # length 1
        "fe050000",  # runs past the header
        "0203050000000000",  # MSS with length 3
        "0304070000000000",  # window scale with length 4
        "04030000",  # SACK-permitted with length 3
        "0809000000010000000201000000",  # timestamps with length 9
        "05090000000100000002010000000000",  # SACK length not 2 + 8n
        "0502" "0000",  # SACK with no blocks
    ],
)
def test_bad_option_lengths(opts):
    data = bytes.fromhex(opts)
    data += bytes(-len(data) % 4)
    wire = _segment_with_options(data)
    with pytest.raises(MalformedPacket) as e:
        TcpRepr.parse(wire, A, B)
    assert e.value.reason == "tcp: bad option length"


def test_sack_with_five_blocks_is_malformed():
    opts = bytes.fromhex("0101052a") + bytes(40)
    with pytest.raises(MalformedPacket) as e:
        parse_options(opts)
    assert e.value.reason == "tcp: bad option length"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "tcp: truncated"),
        (SYN[:19], "tcp: truncated"),
        (SYN[:12] + b"\x40" + SYN[13:], "tcp: bad data offset"),
        (SYN[:12] + b"\x00" + SYN[13:], "tcp: bad data offset"),
        (SYN[:12] + b"\xb0" + SYN[13:], "tcp: bad data offset"),  # 44 > 40 bytes
        (SYN[:24], "tcp: bad data offset"),
        (SYN[:16] + b"\x23\x78" + SYN[18:], "tcp: bad checksum"),
        (SYN + b"x", "tcp: bad checksum"),
        (b"\0\0" + SYN[2:], "tcp: zero port"),
        (SYN[:2] + b"\0\0" + SYN[4:], "tcp: zero port"),
    ],
)
def test_malformed(data, reason):
    with pytest.raises(MalformedPacket) as e:
        TcpRepr.parse(data, A, B)
    assert e.value.reason == reason
    assert reason in REASONS


def test_verify_checksum_off():
    bad = SYN[:16] + b"\x23\x78" + SYN[18:]
    assert TcpRepr.parse(bad, A, B, verify_checksum=False)[0] == SYN_REPR


def test_view_rejects_short_buffer():
    with pytest.raises(MalformedPacket):
        TcpSegment(SYN[:19])


def test_flags_cover_all_bits():
    assert int(F.FIN | F.SYN | F.RST | F.PSH | F.ACK | F.URG | F.ECE | F.CWR) == 0xFF
    wire = TcpRepr(1, 2, 3, 4, F.SYN | F.ECE | F.CWR, 5).emit(b"", A, B)
    assert TcpRepr.parse(wire, A, B)[0].flags == F.SYN | F.ECE | F.CWR


@given(st.binary(max_size=80), st.booleans())
def test_fuzz_parse(data, verify):
    try:
        r, payload = TcpRepr.parse(data, A, B, verify_checksum=verify)
    except MalformedPacket as e:
        assert e.reason.startswith("tcp: ") and e.reason in REASONS
    else:
        assert isinstance(r, TcpRepr) and len(payload) <= len(data) - 20


@given(st.binary(max_size=40))
def test_fuzz_options(data):
    data += bytes(-len(data) % 4)
    try:
        TcpRepr.parse(_segment_with_options(data), A, B)
    except MalformedPacket as e:
        assert e.reason == "tcp: bad option length"


u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)
port = st.integers(1, 0xFFFF)


@given(
    port, port, u32, u32, st.integers(0, 255).map(TcpFlags), u16, u16,
    st.none() | u16, st.none() | st.integers(0, 14), st.booleans(),
    st.lists(st.tuples(u32, u32), max_size=2).map(tuple), st.none() | st.tuples(u32, u32),
    st.binary(max_size=100),
)
def test_roundtrip(sport, dport, seq, ack, flags, window, urgent, mss, ws, sackp, blocks, ts, payload):
    r = TcpRepr(sport, dport, seq, ack, flags, window, urgent, mss, ws, sackp, blocks, ts)
    wire = r.emit(payload, A, B)
    assert len(wire) == r.header_len + len(payload)
    assert naive_checksum(pseudo(A, B, len(wire)) + wire) == 0
    parsed, got = TcpRepr.parse(wire, A, B)
    assert parsed == r and bytes(got) == payload
