"""The Internet checksum (nicdev.virtio.checksum) and the IPv4 pseudo-header
sum (stack.wire.checksum) against a naive word-by-word reference and known values."""

import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nicdev.virtio.checksum import fold, internet_checksum, ones_complement_sum, verify
from stack.wire.checksum import pseudo_header_sum_v4

from support.checksum_reference import naive_checksum, naive_sum


# The IPv4 header of a Linux ping (echo request 10.0.0.1 -> 10.0.0.2) captured
# on a veth; tcpdump accepted it.  Checksum field 0x1c7f.
CAPTURED_IPV4_HEADER = bytes.fromhex("4500002c0a50400040011c7f0a0000010a000002")


def test_rfc1071_example():
    # RFC 1071 section 3: these bytes sum to 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert fold(ones_complement_sum(data)) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_captured_header_verifies_and_recomputes():
    assert verify(CAPTURED_IPV4_HEADER)
    zeroed = CAPTURED_IPV4_HEADER[:10] + b"\0\0" + CAPTURED_IPV4_HEADER[12:]
    assert internet_checksum(zeroed) == 0x1C7F == naive_checksum(zeroed)


def test_flipped_bit_fails_verification():
    bad = bytearray(CAPTURED_IPV4_HEADER)
    bad[15] ^= 0x01
    assert not verify(bad)


def test_all_zero_and_negative_zero():
    # One's complement has two zeros: all-zero data sums to 0, but a
    # non-zero sum that wraps to zero is 0xFFFF.
    assert fold(ones_complement_sum(bytes(8))) == 0
    assert internet_checksum(bytes(8)) == 0xFFFF
    assert fold(ones_complement_sum(b"\xff\xff")) == 0xFFFF
    assert fold(ones_complement_sum(b"\xff\xfe\x00\x01")) == 0xFFFF
    assert internet_checksum(b"\xff\xfe\x00\x01") == 0
    assert internet_checksum(b"") == 0xFFFF


def test_odd_length_pads_with_zero():
    assert internet_checksum(b"\x12\x34\x56") == internet_checksum(b"\x12\x34\x56\x00")


def test_buffer_types_agree():
    data = bytes(range(1, 200))
    assert internet_checksum(data) == internet_checksum(bytearray(data)) == internet_checksum(memoryview(data))
    assert internet_checksum(memoryview(data)[2:51]) == naive_checksum(data[2:51])


def test_pseudo_header_matches_naive():
    src, dst = IPv4Address("10.0.0.1"), IPv4Address("192.168.255.254")
    pseudo = src.packed + dst.packed + bytes((0, 17)) + (1234).to_bytes(2, "big")
    assert fold(pseudo_header_sum_v4(src, dst, 17, 1234)) == naive_sum(pseudo)


@given(st.binary(max_size=2000))
def test_checksum_matches_naive(data):
    assert internet_checksum(data) == naive_checksum(data)


@given(st.binary(max_size=600), st.integers(min_value=0, max_value=0xFFFFFF))
def test_initial_value_matches_naive(data, initial):
    # Adding an initial sum is the same as prefixing it as words.
    prefix = bytes(2) + initial.to_bytes(4, "big")
    assert internet_checksum(data, initial) == naive_checksum(prefix + data)


@given(st.binary(max_size=600), st.binary(max_size=600))
def test_partial_sums_combine(a, b):
    if len(a) % 2:
        a += b"\0"
    combined = ones_complement_sum(b, ones_complement_sum(a))
    assert fold(combined) == naive_sum(a + b)
    assert ~fold(combined) & 0xFFFF == internet_checksum(a + b)


@given(st.binary(min_size=2, max_size=600).filter(lambda d: len(d) % 2 == 0), st.integers(0, 0xFFFF))
def test_filled_checksum_verifies(data, where):
    # Put the checksum into a zeroed 16-bit slot: the result always verifies.
    i = (where % (len(data) // 2)) * 2
    buf = bytearray(data)
    buf[i : i + 2] = b"\0\0"
    buf[i : i + 2] = internet_checksum(buf).to_bytes(2, "big")
    assert verify(buf)
    assert naive_sum(bytes(buf)) == 0xFFFF


# Sizes around where the sum switches from one integer to pieces of 512 and
# of 2048 bytes, odd and even, and 64 KiB (a GSO frame).
PIECE_EDGES = [1023, 1024, 1025, 1026, 1535, 1536, 1537, 4095, 4096, 4097, 4098, 6143, 6144, 6145, 65535, 65536]


@pytest.mark.parametrize("size", PIECE_EDGES)
def test_long_buffers_read_in_pieces_match_naive(size):
    data = random.Random(size).randbytes(size)
    assert internet_checksum(data) == naive_checksum(data)
    assert internet_checksum(memoryview(data)[1:]) == naive_checksum(data[1:])
    assert fold(ones_complement_sum(data, 0x12345)) == fold(naive_sum(data) + 0x12345)


@pytest.mark.parametrize("size", PIECE_EDGES)
def test_long_buffers_keep_both_zeros(size):
    ones = b"\xff" * (size & ~1)  # words of 0xFFFF: ones' complement "minus zero"
    assert fold(ones_complement_sum(bytes(size))) == 0
    assert fold(ones_complement_sum(ones)) == 0xFFFF
    assert internet_checksum(ones) == 0 == naive_checksum(ones)
