"""struct virtio_net_hdr: the header in front of every frame on a virtio-net queue.

    u8  flags         NEEDS_CSUM, DATA_VALID
    u8  gso_type      NONE, TCPV4, UDP, TCPV6, UDP_L4, with ECN or'ed in
    u16 hdr_len       length of the headers to copy into each segment
    u16 gso_size      segment payload size
    u16 csum_start    where checksumming starts
    u16 csum_offset   where the checksum goes, from csum_start
    u16 num_buffers   RX buffers this frame spans (VERSION_1 or MRG_RXBUF only)

Little-endian with VERSION_1. The header is 12 bytes when VERSION_1 or
MRG_RXBUF was negotiated, else 10; getting this wrong shifts every frame by
two bytes, so ask `header_size(features)` rather than assuming.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .features import VIRTIO_F_VERSION_1, VIRTIO_NET_F_HASH_REPORT, VIRTIO_NET_F_MRG_RXBUF

__all__ = [
    "NetHdr",
    "NetHdrError",
    "header_size",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_RSC_INFO",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_GSO_ECN",
]

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_F_RSC_INFO = 4

VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

_HDR10 = struct.Struct("<BBHHHH")
_HDR12 = struct.Struct("<BBHHHHH")


class NetHdrError(ValueError):
    """A header that cannot be packed or a buffer too short to hold one."""


def header_size(features: int) -> int:
    """Bytes of virtio_net_hdr for a negotiated feature word: 12 or 10.

    HASH_REPORT (a 20-byte header) is not implemented here, so a word with
    it set is refused rather than answered wrongly."""
    if features >> VIRTIO_NET_F_HASH_REPORT & 1:
        raise ValueError("VIRTIO_NET_F_HASH_REPORT (20-byte header) is not supported")
    if features >> VIRTIO_F_VERSION_1 & 1 or features >> VIRTIO_NET_F_MRG_RXBUF & 1:
        return 12
    return 10


def _layout(size: int) -> struct.Struct:
    if size == 12:
        return _HDR12
    if size == 10:
        return _HDR10
    raise NetHdrError(f"a virtio_net_hdr is 10 or 12 bytes, not {size}")


@dataclass(slots=True)
class NetHdr:
    """One virtio_net_hdr; all fields default to "no offload"."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0

    @property
    def needs_csum(self) -> bool:
        """The frame carries a partial checksum to finish at csum_start/offset."""
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def gso(self) -> int:
        """The GSO kind without the ECN bit (VIRTIO_NET_HDR_GSO_*)."""
        return self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN

    def _fields(self, size: int) -> tuple:
        fields = (self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset)
        return fields + (self.num_buffers,) if size == 12 else fields

    def pack(self, size: int = 12) -> bytes:
        """The header's bytes (10-byte form drops num_buffers)."""
        layout = _layout(size)
        try:
            return layout.pack(*self._fields(size))
        except struct.error as e:
            raise NetHdrError(f"cannot pack {self}: {e}") from None

    def pack_into(self, buf, offset: int = 0, size: int = 12) -> None:
        """Write the header into a writable buffer at `offset`."""
        layout = _layout(size)
        try:
            layout.pack_into(buf, offset, *self._fields(size))
        except struct.error as e:
            raise NetHdrError(f"cannot pack {self} at {offset}: {e}") from None

    @classmethod
    def unpack(cls, data, size: int = 12, offset: int = 0) -> "NetHdr":
        """Decode the `size` bytes of `data` at `offset`; the rest (the frame) is ignored."""
        layout = _layout(size)
        if offset < 0 or len(data) - offset < size:
            raise NetHdrError(f"{len(data) - offset} bytes at {offset} are too short for a {size}-byte virtio_net_hdr")
        return cls(*layout.unpack_from(data, offset))
