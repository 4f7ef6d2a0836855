"""Checksum and segmentation offloads done in software: sans-IO, pure functions.

A frame inside the switch is either *finished* (every checksum right, no
larger than its sender's MTU) or carries a `FrameMeta`, the switch's copy of
a virtio_net_hdr:

* `needs_csum` (NEEDS_CSUM): the L4 checksum field at `csum_start +
  csum_offset` holds only the pseudo-header sum; the ones' complement sum
  from `csum_start` to the end of the frame must still be folded in.
* `gso_type`/`gso_size` (GSO): one large TCP (or UDP) packet that stands for
  several of at most `gso_size` payload bytes each (Linux's TSO/GSO, what
  virtio calls HOST_TSO4 on transmit and GUEST_TSO4 on receive).
* `data_valid` (DATA_VALID): the checksum is known to be right (verified or
  computed by whoever set it); a receiver may skip checking it.

A port that can take such a frame gets it unchanged; for the others the
switch calls `finish()`, which completes the checksum and cuts a GSO frame
into finished frames exactly as a NIC would: per segment the IPv4 id goes up
by one, lengths and both checksums are recomputed, TCP sequence numbers
advance by the payload carried before, FIN and PSH stay only on the last
segment and CWR only on the first.

Frames from a guest or a TAP are checked once, where they enter
(`check()`): offsets beyond the frame, a GSO size of 0, header lengths that
lie, headers that do not match the GSO type, or more than `MAX_SEGMENTS`
segments raise `OffloadError` (the port counts a drop with its `reason`).
`hdr_len` from the sender is only a hint (the virtio spec says so): the
real header length is measured here. GSO_UDP (UFO, IP fragmentation) is
not handled: Linux stopped sending it in 4.14 and a TAP only produces it
with TUN_F_UFO, which we never set.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from nicdev.virtio.checksum import internet_checksum, ones_complement_sum
from nicdev.virtio.net_hdr import (
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, NetHdr,
)

__all__ = [
    "FrameMeta", "OffloadError", "DATA_VALID", "MAX_SEGMENTS", "GSO_TCPV4", "GSO_TCPV6", "GSO_UDP_L4", "GSO_ECN",
    "check", "complete_checksum", "segment", "finish", "acceptable", "tcp_gso_meta",
]

GSO_NONE = VIRTIO_NET_HDR_GSO_NONE
GSO_TCPV4 = VIRTIO_NET_HDR_GSO_TCPV4
GSO_TCPV6 = VIRTIO_NET_HDR_GSO_TCPV6
GSO_UDP_L4 = VIRTIO_NET_HDR_GSO_UDP_L4
GSO_ECN = VIRTIO_NET_HDR_GSO_ECN

# A hostile sender could ask for a 64 KiB frame cut into 1-byte segments;
# Linux's smallest MSS (88 bytes) needs 745 for 64 KiB, so this is plenty.
MAX_SEGMENTS = 1024

_ETH_LEN = 14
_VLAN_TPIDS = (0x8100, 0x88A8)
_IPV4, _IPV6 = 0x0800, 0x86DD
_TCP, _UDP = 6, 17
_TCP_CSUM, _UDP_CSUM = 16, 6            # checksum field offsets in the L4 header
_FIN, _PSH, _CWR = 0x01, 0x08, 0x80
_IPV4_ID = struct.Struct(">H")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class OffloadError(ValueError):
    """Metadata that cannot be honoured for this frame; `reason` is a short
    slug for counters (bad_csum_offsets, gso_size_zero, gso_hdr_len,
    gso_headers, gso_without_csum, gso_too_many_segments, gso_unsupported)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """What travels with a frame that is not finished (see the module doc).

    Field meanings are those of virtio_net_hdr; `gso_type` keeps the ECN bit
    (VIRTIO_NET_HDR_GSO_ECN) when the sender set it."""

    needs_csum: bool = False
    csum_start: int = 0
    csum_offset: int = 0
    data_valid: bool = False
    gso_type: int = GSO_NONE
    gso_size: int = 0
    hdr_len: int = 0

    @property
    def gso(self) -> int:
        """The GSO kind without the ECN bit."""
        return self.gso_type & ~GSO_ECN

    @property
    def ecn(self) -> bool:
        return bool(self.gso_type & GSO_ECN)

    @classmethod
    def from_hdr(cls, hdr: NetHdr, *, data_valid: bool = True) -> "FrameMeta | None":
        """The metadata a header asks for, or None for a plain frame.

        `data_valid=False` ignores DATA_VALID (meaningless on a guest's
        transmit ring; meaningful from a TAP)."""
        needs = bool(hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
        valid = data_valid and not needs and bool(hdr.flags & VIRTIO_NET_HDR_F_DATA_VALID)
        if not needs and not valid and hdr.gso_type == GSO_NONE:
            return None
        if valid and hdr.gso_type == GSO_NONE:
            return DATA_VALID
        return cls(needs, hdr.csum_start if needs else 0, hdr.csum_offset if needs else 0, valid,
                   hdr.gso_type, hdr.gso_size if hdr.gso_type else 0, hdr.hdr_len if hdr.gso_type else 0)

    def to_hdr(self, num_buffers: int = 0) -> NetHdr:
        """This metadata as a virtio_net_hdr (for a guest or a TAP)."""
        flags = VIRTIO_NET_HDR_F_NEEDS_CSUM if self.needs_csum else 0
        if self.data_valid and not self.needs_csum:
            flags |= VIRTIO_NET_HDR_F_DATA_VALID
        return NetHdr(flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset,
                      num_buffers)


#: The metadata of a finished frame whose checksum we computed or a peer verified.
DATA_VALID = FrameMeta(data_valid=True)


def acceptable(meta: FrameMeta, csum_partial: bool, gso_kinds) -> bool:
    """Can a receiver that takes partial checksums (`csum_partial`) and the
    GSO kinds in `gso_kinds` (GSO_ECN in it = ECN-marked GSO too) take a
    frame with `meta` as it is? DATA_VALID alone is always acceptable
    (a receiver that cannot use it simply gets a finished frame)."""
    if meta.gso_type:
        return csum_partial and (meta.gso_type & ~GSO_ECN) in gso_kinds and (
            not meta.gso_type & GSO_ECN or GSO_ECN in gso_kinds)
    if meta.needs_csum:
        return csum_partial
    return True


# -- finding the headers ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Layout:
    l3: int            # IP header offset
    l4: int            # transport header offset
    l4_len: int        # transport header length
    end: int           # end of the IP packet (frame may carry padding after it)
    v6: bool
    proto: int


def _layout(frame: bytes, meta: FrameMeta) -> _Layout:
    """Locate the IP and transport headers of a GSO frame, or raise OffloadError."""
    n = len(frame)
    if n < _ETH_LEN:
        raise OffloadError("gso_headers", "shorter than an Ethernet header")
    l3 = _ETH_LEN
    ethertype = _U16.unpack_from(frame, 12)[0]
    if ethertype in _VLAN_TPIDS:
        if n < l3 + 4:
            raise OffloadError("gso_headers", "truncated VLAN tag")
        ethertype = _U16.unpack_from(frame, 16)[0]
        l3 += 4
    kind = meta.gso
    if kind == GSO_TCPV4:
        want_v6, proto = (False,), _TCP
    elif kind == GSO_TCPV6:
        want_v6, proto = (True,), _TCP
    elif kind == GSO_UDP_L4:
        want_v6, proto = (False, True), _UDP
    else:
        raise OffloadError("gso_unsupported", f"GSO type {meta.gso_type:#x} is not segmented here")
    if ethertype == _IPV4 and False in want_v6:
        if n < l3 + 20 or frame[l3] >> 4 != 4:
            raise OffloadError("gso_headers", "not an IPv4 header")
        ihl = (frame[l3] & 0x0F) * 4
        total = _U16.unpack_from(frame, l3 + 2)[0]
        if ihl < 20 or total < ihl or l3 + total > n:
            raise OffloadError("gso_headers", f"IPv4 header length {ihl} / total length {total} do not fit")
        if _U16.unpack_from(frame, l3 + 6)[0] & 0x3FFF:
            raise OffloadError("gso_headers", "an IPv4 fragment cannot be segmented")
        if frame[l3 + 9] != proto:
            raise OffloadError("gso_headers", f"IPv4 protocol {frame[l3 + 9]}, expected {proto}")
        l4, end, v6 = l3 + ihl, l3 + total, False
    elif ethertype == _IPV6 and True in want_v6:
        if n < l3 + 40 or frame[l3] >> 4 != 6:
            raise OffloadError("gso_headers", "not an IPv6 header")
        end = l3 + 40 + _U16.unpack_from(frame, l3 + 4)[0]
        if end > n or end == l3 + 40:
            raise OffloadError("gso_headers", "IPv6 payload length does not fit the frame")
        # Extension headers may sit between: the transport header is where
        # the checksum starts (checked against csum_start below).
        l4 = meta.csum_start if meta.needs_csum else l3 + 40
        if l4 < l3 + 40 or (l4 == l3 + 40 and frame[l3 + 6] != proto):
            raise OffloadError("gso_headers", f"IPv6 next header {frame[l3 + 6]}, expected {proto}")
        v6 = True
    else:
        raise OffloadError("gso_headers", f"ethertype {ethertype:#06x} does not match GSO type {meta.gso_type:#x}")
    if proto == _TCP:
        if l4 + 20 > end:
            raise OffloadError("gso_headers", "truncated TCP header")
        l4_len = (frame[l4 + 12] >> 4) * 4
        if l4_len < 20 or l4 + l4_len > end:
            raise OffloadError("gso_headers", f"TCP data offset {l4_len} does not fit")
        field = _TCP_CSUM
    else:
        if l4 + 8 > end:
            raise OffloadError("gso_headers", "truncated UDP header")
        l4_len, field = 8, _UDP_CSUM
    if not meta.needs_csum:
        raise OffloadError("gso_without_csum", "a GSO frame must ask for its checksum (NEEDS_CSUM)")
    if meta.csum_start != l4 or meta.csum_offset != field:
        raise OffloadError("gso_headers", f"checksum at {meta.csum_start}+{meta.csum_offset}, "
                                          f"the transport header says {l4}+{field}")
    return _Layout(l3, l4, l4_len, end, v6, proto)


# -- validation at the ingress port -------------------------------------------------------
def check(frame: bytes, meta: FrameMeta) -> FrameMeta:
    """Validate `meta` against `frame`; return it (for GSO with `hdr_len` set
    to the measured header length), or raise OffloadError."""
    return _checked(frame, meta)[0]


def _checked(frame: bytes, meta: FrameMeta) -> tuple[FrameMeta, _Layout | None]:
    n = len(frame)
    if meta.needs_csum:
        if meta.csum_start < 0 or meta.csum_offset < 0 or meta.csum_start + meta.csum_offset + 2 > n:
            raise OffloadError("bad_csum_offsets", f"checksum at {meta.csum_start}+{meta.csum_offset} "
                                                   f"is outside a {n}-byte frame")
    if not meta.gso_type:
        return meta, None
    if meta.gso_size <= 0:
        raise OffloadError("gso_size_zero", "GSO frame with a segment size of 0")
    if meta.hdr_len > n:
        raise OffloadError("gso_hdr_len", f"header length {meta.hdr_len} beyond a {n}-byte frame")
    lay = _layout(frame, meta)
    payload = lay.end - lay.l4 - lay.l4_len
    if -(-payload // meta.gso_size) > MAX_SEGMENTS:
        raise OffloadError("gso_too_many_segments", f"{payload} bytes in segments of {meta.gso_size}")
    hdr_len = lay.l4 + lay.l4_len
    if meta.hdr_len != hdr_len:
        meta = FrameMeta(meta.needs_csum, meta.csum_start, meta.csum_offset, meta.data_valid, meta.gso_type,
                         meta.gso_size, hdr_len)
    return meta, lay


# -- doing the work ----------------------------------------------------------------------
def complete_checksum(frame: bytes, meta: FrameMeta) -> bytes:
    """Finish a NEEDS_CSUM frame: sum from csum_start to the end, seeded by the
    field's pseudo-header sum, and store the result.

    A computed 0 in a UDP checksum field is sent as 0xFFFF: in UDP a 0 means
    "no checksum" (RFC 768); TCP keeps 0. virtio's header does not name the
    protocol, the field's offset does (6 in a UDP header, 16 in TCP's).
    Whatever else puts its checksum at offset 6 still verifies: 0 and
    0xFFFF are the same number in ones' complement."""
    start, field = meta.csum_start, meta.csum_start + meta.csum_offset
    if start < 0 or meta.csum_offset < 0 or field + 2 > len(frame):
        raise OffloadError("bad_csum_offsets", f"checksum at {start}+{meta.csum_offset} outside the frame")
    value = internet_checksum(memoryview(frame)[start:])
    if value == 0 and meta.csum_offset == _UDP_CSUM:
        value = 0xFFFF
    return b"".join((frame[:field], _U16.pack(value), frame[field + 2:]))


def _pseudo_sum(frame: bytes, lay: _Layout, length: int) -> int:
    if lay.v6:
        return ones_complement_sum(frame[lay.l3 + 8:lay.l3 + 40]) + lay.proto + length
    return ones_complement_sum(frame[lay.l3 + 12:lay.l3 + 20]) + lay.proto + length


def segment(frame: bytes, meta: FrameMeta) -> list[bytes]:
    """Cut a GSO frame into finished frames of at most `gso_size` payload bytes
    each (TCP over IPv4 or IPv6, or UDP_L4); raises OffloadError if the frame
    and its metadata do not agree (see `check`)."""
    meta, lay = _checked(frame, meta)
    if lay is None:
        raise OffloadError("gso_unsupported", "not a GSO frame")
    mss = meta.gso_size
    l3, l4, thl, end = lay.l3, lay.l4, lay.l4_len, lay.end
    eth = frame[:l3]
    ip = bytearray(frame[l3:l4])
    l4h = bytearray(frame[l4:l4 + thl])
    data = memoryview(frame)[l4 + thl:end]
    plen = len(data)
    tcp = lay.proto == _TCP
    if tcp:
        seq0 = _U32.unpack_from(l4h, 4)[0]
        flags = l4h[13]
    ip_id = 0 if lay.v6 else _IPV4_ID.unpack_from(ip, 4)[0]
    ext = l4 - l3 - 40                 # IPv6 extension headers (or IPv4: unused)
    out = []
    pos = 0
    index = 0
    while True:
        chunk = data[pos:pos + mss]
        last = pos + mss >= plen
        size = len(chunk)
        if tcp:
            _U32.pack_into(l4h, 4, (seq0 + pos) & 0xFFFFFFFF)
            f = flags
            if not last:
                f &= ~(_FIN | _PSH)
            if index:
                f &= ~_CWR
            l4h[13] = f
        else:
            _U16.pack_into(l4h, 4, thl + size)
        if lay.v6:
            _U16.pack_into(ip, 4, ext + thl + size)
        else:
            _U16.pack_into(ip, 2, len(ip) + thl + size)
            _U16.pack_into(ip, 4, (ip_id + index) & 0xFFFF)
            ip[10:12] = b"\0\0"
            _U16.pack_into(ip, 10, internet_checksum(ip))
        l4h[meta.csum_offset:meta.csum_offset + 2] = b"\0\0"
        body = bytes(l4h) + chunk
        value = internet_checksum(body, _pseudo_sum(frame, lay, thl + size))
        if not tcp and value == 0:
            value = 0xFFFF              # UDP: 0 means "no checksum"
        seg = bytearray(eth)
        seg += ip
        seg += body
        _U16.pack_into(seg, l4 + meta.csum_offset, value)
        out.append(bytes(seg))
        if last:
            return out
        pos += mss
        index += 1


def finish(frame: bytes, meta: FrameMeta | None) -> list[bytes]:
    """Finished frames for a frame with metadata: segmented if GSO, the
    checksum completed if NEEDS_CSUM, the frame itself otherwise."""
    if meta is None:
        return [frame]
    if meta.gso_type:
        return segment(frame, meta)
    if meta.needs_csum:
        return [complete_checksum(frame, meta)]
    return [frame]


def tcp_gso_meta(frame: bytes, mss: int, *, ipv6: bool = False) -> FrameMeta:
    """GSO metadata for a TCP frame whose headers are in place (a convenience
    for senders and tests): checksum at the TCP header, `mss` per segment.
    The frame's TCP checksum field must hold the pseudo-header sum (or be
    recomputed: segmentation ignores it)."""
    l3 = _ETH_LEN + (4 if _U16.unpack_from(frame, 12)[0] in _VLAN_TPIDS else 0)
    l4 = l3 + 40 if ipv6 else l3 + (frame[l3] & 0x0F) * 4
    meta = FrameMeta(True, l4, _TCP_CSUM, False, GSO_TCPV6 if ipv6 else GSO_TCPV4, mss)
    return check(frame, meta)

