"""QEMU stream framing (4-byte big-endian length + frame), without sockets."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from nicdev.net.errors import PortError
from nicdev.net.socket_port import (DgramPort, StreamDecoder, StreamPort, encode_stream_frame,
                                    parse_inet_address)


def test_encode():
    assert encode_stream_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_frames_split_across_reads_one_byte_at_a_time():
    frames = [b"a" * 60, b"b" * 1514, b"c"]
    stream = b"".join(encode_stream_frame(f) for f in frames)
    dec = StreamDecoder()
    out = []
    for i in range(len(stream)):
        out += dec.feed(stream[i:i + 1])
    assert out == frames and dec.buffered == 0 and dec.error is None


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.data())
def test_any_chunking_gives_back_the_same_frames(frames, data):
    stream = b"".join(encode_stream_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = StreamDecoder()
    out = []
    prev = 0
    for cut in cuts + [len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == frames and dec.buffered == 0


@pytest.mark.parametrize("length", [0, 65550, 0xFFFFFFFF])
def test_bad_length_stops_the_stream_but_keeps_earlier_frames(length):
    dec = StreamDecoder()
    good = encode_stream_frame(b"x" * 60)
    out = dec.feed(good + length.to_bytes(4, "big") + b"junk")
    assert out == [b"x" * 60]
    assert dec.error == f"bad frame length {length} (allowed 1..65549)"
    assert dec.feed(good) == []           # nothing after the error is trusted


def test_largest_frame_is_accepted():
    dec = StreamDecoder()
    assert dec.feed(encode_stream_frame(b"m" * 65549)) == [b"m" * 65549]


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5000", ("127.0.0.1", 5000)),
    ("[::1]:6000", ("::1", 6000)),
    ("[0:0::1]:6000", ("::1", 6000)),
])
def test_parse_inet_address(text, expected):
    assert parse_inet_address(text) == expected


@pytest.mark.parametrize("text, msg", [
    ("127.0.0.1", "expected HOST:PORT"),
    ("localhost:5000", "not an IP address"),
    ("127.0.0.1:0", "bad port"),
    ("127.0.0.1:70000", "bad port"),
    ("127.0.0.1:x", "bad port"),
    ("[::1:5000", "expected \\[IPV6\\]:PORT"),
])
def test_parse_inet_address_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_inet_address(text)


@pytest.mark.parametrize("local, remote, msg", [
    (("127.0.0.1", 1), "/tmp/x.sock", "both be UDP addresses of the same IP version, or both unix"),
    (("127.0.0.1", 1), ("::1", 2), "same IP version"),
    (("127.0.0.1", 1), ("127.0.0.1", 1), "the same address"),
    (("nohost", 1), ("127.0.0.1", 2), "local host 'nohost' is not an IP address"),
    (("127.0.0.1", 0), ("127.0.0.1", 2), "local port 0 is not 1..65535"),
    ("", "/tmp/x.sock", "empty socket path"),
    ("/tmp/" + "x" * 120, "/tmp/x.sock", "longer than 107 bytes"),
    (5, "/tmp/x.sock", "local must be"),
])
def test_dgram_port_argument_errors(local, remote, msg):
    with pytest.raises(PortError, match=msg):
        DgramPort("d", local, remote)


def test_stream_port_argument_errors():
    with pytest.raises(PortError, match="empty socket path"):
        StreamPort("s", "")
    with pytest.raises(PortError, match="max_pending must hold at least one frame"):
        StreamPort("s", "/tmp/s.sock", max_pending=100)
