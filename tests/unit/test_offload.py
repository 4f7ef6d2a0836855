"""nicdev.virtio.offload: TCP/UDP segmentation and checksum completion, checked
with an independent (word-by-word) checksum, and hostile metadata."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nicdev.virtio import offload
from nicdev.virtio.checksum import internet_checksum
from nicdev.virtio.offload import (
    DATA_VALID, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, MAX_SEGMENTS, FrameMeta, OffloadError,
)
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, NetHdr

from support.offload_frames import (
    ACK, CWR, ECE, FIN, PSH, TIMESTAMPS, naive_checksum, naive_sum, pseudo4, pseudo6, split_tcp4, tcp4_checksums_ok,
    tcp4_frame, tcp6_frame, udp4_frame,
)


def gso4(frame: bytes, mss: int, l3: int = 14, ecn: bool = False) -> FrameMeta:
    l4 = l3 + (frame[l3] & 0x0F) * 4
    return FrameMeta(True, l4, 16, False, GSO_TCPV4 | (GSO_ECN if ecn else 0), mss)


# -- TCPv4 segmentation --------------------------------------------------------------
def test_tcpv4_segments_sizes_sequence_ids_and_flags():
    payload = os.urandom(10000)
    flags = ACK | PSH | FIN | CWR | ECE
    frame = tcp4_frame(payload, seq=5000, flags=flags, ident=0x0100)
    segs = offload.segment(frame, gso4(frame, 1448))
    assert [len(split_tcp4(s)[2]) for s in segs] == [1448] * 6 + [10000 - 6 * 1448]
    assert b"".join(split_tcp4(s)[2] for s in segs) == payload
    for i, s in enumerate(segs):
        ip, tcp, data = split_tcp4(s)
        assert s[:14] == frame[:14], "the Ethernet header is copied"
        assert struct.unpack_from(">H", ip, 2)[0] == 20 + 20 + len(data), "IPv4 total length"
        assert struct.unpack_from(">H", ip, 4)[0] == 0x0100 + i, "IPv4 id goes up by one per segment"
        assert ip[6:10] == frame[20:24] and ip[12:20] == frame[26:34], "flags, TTL, protocol, addresses kept"
        assert struct.unpack_from(">I", tcp, 4)[0] == 5000 + i * 1448
        assert tcp[:4] == frame[34:38] and tcp[8:12] == frame[42:46] and tcp[14:16] == frame[48:50], \
            "ports, ack number and window kept"
        want = ACK | ECE | (CWR if i == 0 else 0) | (FIN | PSH if i == len(segs) - 1 else 0)
        assert tcp[13] == want, f"segment {i}: flags {tcp[13]:#x}, want {want:#x}"
        assert tcp4_checksums_ok(s), f"segment {i}: a checksum does not verify"
        assert len(s) == 14 + 40 + len(data)


def test_tcpv4_with_timestamps_copies_the_options_to_every_segment():
    payload = os.urandom(5000)
    frame = tcp4_frame(payload, options=TIMESTAMPS)
    segs = offload.segment(frame, gso4(frame, 1436))
    assert len(segs) == 4
    for s in segs:
        _, tcp, data = split_tcp4(s)
        assert len(tcp) == 32 and tcp[20:] == TIMESTAMPS
        assert len(s) <= 14 + 20 + 32 + 1436
        assert tcp4_checksums_ok(s)
    assert b"".join(split_tcp4(s)[2] for s in segs) == payload


@pytest.mark.parametrize("size, mss, count", [(2896, 1448, 2), (100, 1448, 1), (1448, 1448, 1), (0, 1448, 1),
                                              (1449, 1448, 2)])
def test_segment_counts_at_the_edges(size, mss, count):
    payload = os.urandom(size)
    frame = tcp4_frame(payload, flags=ACK | FIN)
    segs = offload.segment(frame, gso4(frame, mss))
    assert len(segs) == count
    assert b"".join(split_tcp4(s)[2] for s in segs) == payload
    assert all(tcp4_checksums_ok(s) for s in segs)
    assert split_tcp4(segs[-1])[1][13] & FIN and not any(split_tcp4(s)[1][13] & FIN for s in segs[:-1])


def test_sequence_numbers_and_ip_ids_wrap():
    frame = tcp4_frame(bytes(3000), seq=0xFFFFFC00, ident=0xFFFF)
    segs = offload.segment(frame, gso4(frame, 1000))
    seqs = [struct.unpack_from(">I", split_tcp4(s)[1], 4)[0] for s in segs]
    ids = [struct.unpack_from(">H", split_tcp4(s)[0], 4)[0] for s in segs]
    assert seqs == [0xFFFFFC00, (0xFFFFFC00 + 1000) & 0xFFFFFFFF, (0xFFFFFC00 + 2000) & 0xFFFFFFFF]
    assert ids == [0xFFFF, 0, 1]
    assert all(tcp4_checksums_ok(s) for s in segs)


def test_vlan_tagged_frame():
    payload = os.urandom(4000)
    frame = tcp4_frame(payload, vlan=42)
    segs = offload.segment(frame, gso4(frame, 1448, l3=18))
    assert len(segs) == 3
    assert all(s[:18] == frame[:18] and tcp4_checksums_ok(s, l3=18) for s in segs)
    assert b"".join(split_tcp4(s, 18)[2] for s in segs) == payload


def test_ethernet_padding_after_the_ip_packet_is_not_payload():
    payload = os.urandom(3000)
    frame = tcp4_frame(payload) + b"\xee" * 6
    segs = offload.segment(frame, gso4(frame, 1448))
    assert b"".join(split_tcp4(s)[2] for s in segs) == payload
    assert all(not s.endswith(b"\xee") for s in segs)


def test_the_partial_checksum_in_the_frame_does_not_matter():
    # Segmentation computes every checksum from scratch, whatever the field holds.
    payload = os.urandom(3000)
    a, b = tcp4_frame(payload, partial=True), tcp4_frame(payload, partial=False)
    assert offload.segment(a, gso4(a, 1000)) == offload.segment(b, gso4(b, 1000))


# -- TCPv6 and UDP ------------------------------------------------------------------------
def test_tcpv6_segments():
    payload = os.urandom(7000)
    frame = tcp6_frame(payload, seq=77, flags=ACK | PSH, options=TIMESTAMPS)
    meta = FrameMeta(True, 54, 16, False, GSO_TCPV6, 1428)
    segs = offload.segment(frame, meta)
    assert len(segs) == 5
    got = b""
    for i, s in enumerate(segs):
        plen = struct.unpack_from(">H", s, 18)[0]
        tcp_and_data = s[54:54 + plen]
        assert len(s) == 54 + plen and plen == 32 + min(1428, 7000 - i * 1428)
        assert struct.unpack_from(">I", tcp_and_data, 4)[0] == 77 + i * 1428
        assert naive_checksum(tcp_and_data, pseudo6(6, plen)) == 0
        assert bool(tcp_and_data[13] & PSH) == (i == 4)
        got += tcp_and_data[32:]
    assert got == payload


def test_udp_l4_segments():
    payload = os.urandom(3000)
    frame = udp4_frame(payload)
    segs = offload.segment(frame, FrameMeta(True, 34, 6, False, GSO_UDP_L4, 1200))
    assert len(segs) == 3
    got = b""
    for i, s in enumerate(segs):
        ip, udp = s[14:34], s[34:]
        assert naive_checksum(ip) == 0 and struct.unpack_from(">H", ip, 4)[0] == 0x1234 + i
        assert struct.unpack_from(">H", udp, 4)[0] == len(udp)
        assert naive_checksum(udp, pseudo4(17, len(udp))) == 0 and udp[6:8] != b"\0\0"
        got += udp[8:]
    assert got == payload


# -- checksum completion --------------------------------------------------------------------
def test_complete_checksum_gives_the_full_checksum():
    payload = os.urandom(1001)      # odd length
    partial, full = tcp4_frame(payload, partial=True), tcp4_frame(payload, partial=False)
    assert offload.complete_checksum(partial, FrameMeta(True, 34, 16)) == full
    u_partial, u_full = udp4_frame(b"checksum me"), udp4_frame(b"checksum me", partial=False)
    assert offload.finish(u_partial, FrameMeta(True, 34, 6)) == [u_full]


def test_a_zero_result_is_written_as_ffff():
    # Choose the first payload word so that the finished UDP checksum is 0.
    frame = bytearray(udp4_frame(b"\0\0zero sum"))      # the field holds the pseudo-header sum
    udp = bytearray(frame[34:])
    udp[6:8] = b"\0\0"
    total = naive_sum(bytes(udp)) + pseudo4(17, len(udp))
    total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into(">H", frame, 42, ~total & 0xFFFF)
    out = offload.complete_checksum(bytes(frame), FrameMeta(True, 34, 6))
    assert out[40:42] == b"\xff\xff"
    assert naive_checksum(out[34:], pseudo4(17, len(out) - 34)) == 0


def test_a_zero_tcp_result_stays_zero():
    # RFC 768's rule is UDP's: a TCP checksum that computes to 0 is sent as 0.
    frame = bytearray(tcp4_frame(b"\0\0zero sum"))     # the field holds the pseudo-header sum
    tcp = bytearray(frame[34:])
    tcp[16:18] = b"\0\0"
    total = naive_sum(bytes(tcp)) + pseudo4(6, len(tcp))
    total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into(">H", frame, 54, ~total & 0xFFFF)  # the first payload word
    out = offload.complete_checksum(bytes(frame), FrameMeta(True, 34, 16))
    assert out[50:52] == b"\0\0"
    assert naive_checksum(out[34:], pseudo4(6, len(out) - 34)) == 0


def test_finish_leaves_finished_frames_alone():
    frame = tcp4_frame(b"x" * 10, partial=False)
    assert offload.finish(frame, None) == [frame]
    assert offload.finish(frame, DATA_VALID) == [frame]


def test_internet_checksum_matches_the_naive_one():
    for n in (0, 1, 2, 3, 20, 1499, 65535):
        data = os.urandom(n)
        assert internet_checksum(data) == naive_checksum(data)
        assert internet_checksum(data, 0x1FFFE) == naive_checksum(data, 0x1FFFE)
    assert internet_checksum(b"\xff\xff") == 0 and internet_checksum(b"\0\0") == 0xFFFF


# -- hostile metadata ------------------------------------------------------------------------
def bad(frame, meta) -> str:
    with pytest.raises(OffloadError) as err:
        offload.check(frame, meta)
    with pytest.raises(OffloadError):
        offload.finish(frame, meta)
    return err.value.reason


def test_checksum_offsets_beyond_the_frame():
    frame = udp4_frame(b"abc")
    assert bad(tcp4_frame(b"")[:50], FrameMeta(True, 34, 16, False, GSO_TCPV4, 1000)) == "bad_csum_offsets"
    assert bad(frame, FrameMeta(True, len(frame), 0)) == "bad_csum_offsets"
    assert bad(frame, FrameMeta(True, 34, len(frame))) == "bad_csum_offsets"
    assert bad(frame, FrameMeta(True, len(frame) - 1, 0)) == "bad_csum_offsets"
    assert offload.check(frame, FrameMeta(True, len(frame) - 2, 0)).csum_start == len(frame) - 2


def test_gso_size_zero():
    frame = tcp4_frame(bytes(3000))
    assert bad(frame, FrameMeta(True, 34, 16, False, GSO_TCPV4, 0)) == "gso_size_zero"


def test_hdr_len_beyond_the_frame_is_a_lie_but_a_short_one_is_a_hint():
    frame = tcp4_frame(bytes(3000))
    assert bad(frame, FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, len(frame) + 1)) == "gso_hdr_len"
    # Linux puts its linear length there (more than the headers), others 0: both fine.
    for hint in (0, 10, 200):
        assert offload.check(frame, FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, hint)).hdr_len == 54


@pytest.mark.parametrize("what, frame, meta", [
    ("IPv6 frame called TCPv4", tcp6_frame(bytes(3000)), FrameMeta(True, 54, 16, False, GSO_TCPV4, 1000)),
    ("UDP called TCP", udp4_frame(bytes(3000)), FrameMeta(True, 34, 16, False, GSO_TCPV4, 1000)),
    ("checksum not at the TCP header", tcp4_frame(bytes(3000)), FrameMeta(True, 30, 16, False, GSO_TCPV4, 1000)),
    ("checksum field not TCP's", tcp4_frame(bytes(3000)), FrameMeta(True, 34, 6, False, GSO_TCPV4, 1000)),
    ("IP length cuts the TCP header", tcp4_frame(b"")[:16] + b"\x00\x24" + tcp4_frame(b"")[18:],
     FrameMeta(True, 34, 16, False, GSO_TCPV4, 1000)),
    ("no IP header", tcp4_frame(b"")[:20], FrameMeta(True, 14, 2, False, GSO_TCPV4, 1000)),
])
def test_headers_that_do_not_match_the_gso_type(what, frame, meta):
    assert bad(frame, meta) == "gso_headers", what


def test_lying_ip_and_tcp_lengths():
    frame = bytearray(tcp4_frame(bytes(3000)))
    struct.pack_into(">H", frame, 16, len(frame))            # IPv4 total length beyond the frame
    assert bad(bytes(frame), gso4(frame, 1000)) == "gso_headers"
    frame = bytearray(tcp4_frame(bytes(3000)))
    frame[46] = 0x40                                          # TCP data offset 4 words (< 5)
    assert bad(bytes(frame), gso4(frame, 1000)) == "gso_headers"
    frame = bytearray(tcp4_frame(b""))
    frame[46] = 0xF0                                          # 60-byte TCP header in a 20-byte segment
    assert bad(bytes(frame), gso4(frame, 1000)) == "gso_headers"
    frame = bytearray(tcp4_frame(bytes(3000)))
    struct.pack_into(">H", frame, 20, 0x2000)                 # more fragments
    assert bad(bytes(frame), gso4(frame, 1000)) == "gso_headers"


def test_gso_needs_a_checksum_request():
    frame = tcp4_frame(bytes(3000))
    assert bad(frame, FrameMeta(False, 0, 0, False, GSO_TCPV4, 1000)) == "gso_without_csum"


def test_too_many_segments():
    frame = tcp4_frame(bytes(MAX_SEGMENTS + 1))
    assert bad(frame, gso4(frame, 1)) == "gso_too_many_segments"
    assert len(offload.segment(tcp4_frame(bytes(MAX_SEGMENTS)), gso4(frame, 1))) == MAX_SEGMENTS


def test_unsupported_gso_types():
    frame = udp4_frame(bytes(3000))
    assert bad(frame, FrameMeta(True, 34, 6, False, 3, 1000)) == "gso_unsupported"     # UFO
    assert bad(frame, FrameMeta(True, 34, 6, False, 0x7F, 1000)) == "gso_unsupported"
    with pytest.raises(OffloadError):
        offload.segment(frame, FrameMeta(True, 34, 6))        # not a GSO frame at all


# -- metadata <-> header, who takes what ---------------------------------------------------
def test_meta_from_and_to_virtio_headers():
    assert FrameMeta.from_hdr(NetHdr()) is None
    assert FrameMeta.from_hdr(NetHdr(flags=VIRTIO_NET_HDR_F_DATA_VALID)) is DATA_VALID
    assert FrameMeta.from_hdr(NetHdr(flags=VIRTIO_NET_HDR_F_DATA_VALID), data_valid=False) is None
    hdr = NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 66, 1448, 34, 16)
    meta = FrameMeta.from_hdr(hdr)
    assert meta == FrameMeta(True, 34, 16, False, GSO_TCPV4 | GSO_ECN, 1448, 66)
    assert meta.gso == GSO_TCPV4 and meta.ecn
    assert meta.to_hdr(3) == NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 66, 1448, 34, 16, 3)
    assert DATA_VALID.to_hdr(1) == NetHdr(flags=VIRTIO_NET_HDR_F_DATA_VALID, num_buffers=1)


def test_acceptable():
    tso = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448)
    tso_ecn = FrameMeta(True, 34, 16, False, GSO_TCPV4 | GSO_ECN, 1448)
    csum = FrameMeta(True, 34, 16)
    assert offload.acceptable(tso, True, {GSO_TCPV4})
    assert not offload.acceptable(tso, False, {GSO_TCPV4}), "GSO needs partial checksums too"
    assert not offload.acceptable(tso, True, {GSO_TCPV6})
    assert not offload.acceptable(tso_ecn, True, {GSO_TCPV4})
    assert offload.acceptable(tso_ecn, True, {GSO_TCPV4, GSO_ECN})
    assert offload.acceptable(csum, True, set()) and not offload.acceptable(csum, False, set())
    assert offload.acceptable(DATA_VALID, False, set())


def test_tcp_gso_meta_for_senders():
    frame = tcp4_frame(bytes(3000), options=TIMESTAMPS)
    assert offload.tcp_gso_meta(frame, 1448) == FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 66)
    v6 = tcp6_frame(bytes(3000))
    assert offload.tcp_gso_meta(v6, 1428, ipv6=True).hdr_len == 74


# -- properties ------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 20000), mss=st.integers(1, 9000), seq=st.integers(0, 0xFFFFFFFF),
       flags=st.integers(0, 0xFF), ts=st.booleans())
def test_any_segmentation_reassembles_with_valid_checksums(size, mss, seq, flags, ts):
    payload = os.urandom(size)
    frame = tcp4_frame(payload, seq=seq, flags=flags, options=TIMESTAMPS if ts else b"")
    meta = gso4(frame, mss)
    if -(-size // mss) > MAX_SEGMENTS:
        with pytest.raises(OffloadError):
            offload.segment(frame, meta)
        return
    segs = offload.segment(frame, meta)
    assert len(segs) == max(1, -(-size // mss))
    pos = 0
    for i, s in enumerate(segs):
        _, tcp, data = split_tcp4(s)
        assert tcp4_checksums_ok(s)
        assert struct.unpack_from(">I", tcp, 4)[0] == (seq + pos) & 0xFFFFFFFF
        keep = flags & ~((FIN | PSH) if i < len(segs) - 1 else 0) & ~(CWR if i else 0)
        assert tcp[13] == keep
        pos += len(data)
    assert b"".join(split_tcp4(s)[2] for s in segs) == payload
