"""The file transfer's datagrams: every message round-trips, anything else is MalformedDatagram."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnet.apps.filetransfer import wire
from mnet.apps.filetransfer.wire import MalformedDatagram, parse

SHA = bytes(range(32))

MESSAGES = [
    wire.Start(7, 123, 20_000_000, 1400, SHA, "report.pdf"),
    wire.Start(7, 0, 0, 1, SHA, "ünïcødé name"),
    wire.Accept(7, 99, 256),
    wire.Data(7, 41, 5, b"x" * 1400),
    wire.Ack(7, 3, 10, bytes([0b1010_0000, 0, 1])),
    wire.Ack(7, 3, 10, b""),
    wire.Fin(7, 77),
    wire.Done(7, 77, True, SHA),
    wire.Done(7, 77, False, SHA),
    wire.Bye(0xFFFFFFFF),
    wire.Error(7, wire.ErrorCode.REFUSED, "file name '../x' has a path separator"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg):
    datagram = wire.encode(msg)
    assert datagram[:3] == b"MF\x01" and len(datagram) <= wire.MAX_DATAGRAM
    assert parse(datagram) == msg


def test_a_full_data_datagram_fits_below_the_mtu():
    datagram = wire.encode_data(1, 2, 3, b"z" * wire.MAX_CHUNK)
    assert len(datagram) == wire.MAX_DATAGRAM == 1500 - 20 - 8
    assert parse(datagram) == wire.Data(1, 2, 3, b"z" * wire.MAX_CHUNK)


def header(kind: int, session: int = 7) -> bytes:
    return wire.HEADER.pack(b"MF", 1, kind, session)


@pytest.mark.parametrize("datagram, why", [
    (b"", "shorter than the 8-byte header"),
    (b"MF\x01\x03\x00\x00", "shorter than the 8-byte header"),
    (b"GET / HTTP/1.0\r\n\r\n", "magic"),
    (wire.HEADER.pack(b"MF", 2, 3, 7) + b"\0" * 12, "version 2"),
    (header(0), "unknown type 0"),
    (header(99), "unknown type 99"),
    (header(wire.Kind.START) + b"\0" * 10, "START of 18 bytes is truncated"),
    (header(wire.Kind.START) + struct.pack("!IQH32sB", 0, 5, 100, SHA, 9) + b"abc", "name has 9 bytes, it has 3"),
    (header(wire.Kind.START) + struct.pack("!IQH32sB", 0, 5, 0, SHA, 1) + b"a", "chunks of 0 bytes"),
    (header(wire.Kind.START) + struct.pack("!IQH32sB", 0, 5, 1457, SHA, 1) + b"a", "chunks of 1457 bytes"),
    (header(wire.Kind.START) + struct.pack("!IQH32sB", 0, 5, 100, SHA, 2) + b"\xff\xfe", "not UTF-8"),
    (header(wire.Kind.ACCEPT) + struct.pack("!IH", 1, 0), "window of 0 chunks"),
    (header(wire.Kind.ACCEPT) + struct.pack("!IH", 1, 5) + b"!", "ACCEPT body of 7 bytes"),
    (header(wire.Kind.DATA) + struct.pack("!II", 1, 2), "DATA without a chunk"),
    (header(wire.Kind.DATA) + b"\0\0\0", "DATA of 11 bytes is truncated"),
    (header(wire.Kind.ACK) + b"\0" * 7, "ACK of 15 bytes is truncated"),
    (header(wire.Kind.FIN), "FIN body of 0 bytes"),
    (header(wire.Kind.DONE) + struct.pack("!IB32s", 1, 2, SHA), "DONE with status 2"),
    (header(wire.Kind.BYE) + b"x", "BYE body of 1 bytes"),
    (header(wire.Kind.ERROR), "ERROR of 8 bytes is truncated"),
])
def test_malformed_datagrams_say_what_is_wrong(datagram, why):
    with pytest.raises(MalformedDatagram, match=why):
        parse(datagram)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_malformed(data):
    try:
        parse(data)
    except MalformedDatagram:
        pass


@given(st.integers(0, 2**31), st.sets(st.integers(1, wire.MAX_WINDOW - 1), max_size=64))
def test_the_ack_bitmap_round_trips(next_seq, offsets):
    chunks = sorted(next_seq + k for k in offsets)
    ack = wire.Ack(1, 0, next_seq, wire.bitmap_of(next_seq, chunks))
    assert parse(wire.encode(ack)).selected() == chunks
    assert len(ack.bitmap) == (max(offsets) - 1) // 8 + 1 if offsets else ack.bitmap == b""


def test_bitmap_bits_count_from_the_most_significant_bit():
    assert wire.bitmap_of(10, [11, 13, 30]) == bytes([0b1010_0000, 0, 0b0001_0000])
