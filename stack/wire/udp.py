"""UDP (RFC 768) over IPv4: a datagram view and a checked repr."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from nicdev.virtio.checksum import fold, ones_complement_sum

from .checksum import pseudo_header_sum_v4
from .errors import MalformedPacket

__all__ = ["HEADER_LEN", "UdpDatagram", "UdpRepr"]

HEADER_LEN = 8
_PROTO_UDP = 17
#: Offset of the checksum field within the UDP header (for checksum offload).
CHECKSUM_OFFSET = 6

_HDR = struct.Struct("!HHHH")
_U16 = struct.Struct("!H")


class UdpDatagram:
    """A zero-copy view of a UDP datagram in ``buf`` (the IPv4 payload)."""

    __slots__ = ("buf",)

    def __init__(self, buf) -> None:
        if len(buf) < HEADER_LEN:
            raise MalformedPacket("udp: truncated", f"{len(buf)} bytes")
        self.buf = buf

    def _get(self, off: int) -> int:
        return _U16.unpack_from(self.buf, off)[0]

    def _put(self, off: int, value: int) -> None:
        _U16.pack_into(self.buf, off, value)

    @property
    def src_port(self) -> int:
        return self._get(0)

    @src_port.setter
    def src_port(self, value: int) -> None:
        self._put(0, value)

    @property
    def dst_port(self) -> int:
        return self._get(2)

    @dst_port.setter
    def dst_port(self, value: int) -> None:
        self._put(2, value)

    @property
    def length(self) -> int:
        return self._get(4)

    @length.setter
    def length(self, value: int) -> None:
        self._put(4, value)

    @property
    def checksum(self) -> int:
        return self._get(6)

    @checksum.setter
    def checksum(self, value: int) -> None:
        self._put(6, value)

    @property
    def payload(self) -> memoryview:
        """Bytes after the header up to the length field."""
        return memoryview(self.buf)[HEADER_LEN : self.length]

    def fill_checksum(self, src_ip: IPv4Address, dst_ip: IPv4Address) -> None:
        """Compute the checksum over ``length`` bytes; 0 is sent as 0xFFFF."""
        length = self.length
        self.checksum = 0
        s = ones_complement_sum(
            memoryview(self.buf)[:length], pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_UDP, length)
        )
        self.checksum = (~fold(s) & 0xFFFF) or 0xFFFF


@dataclass(slots=True)
class UdpRepr:
    """A UDP header: the ports (length and checksum are derived)."""

    src_port: int
    dst_port: int

    @classmethod
    def parse(
        cls, buf, src_ip: IPv4Address, dst_ip: IPv4Address, verify_checksum: bool = True
    ) -> tuple["UdpRepr", memoryview]:
        """Parse a datagram; return the header and a view of the payload.

        The length field may be shorter than ``buf`` (the rest is ignored) but
        not longer.  A zero checksum means the sender computed none (IPv4).
        """
        n = len(buf)
        if n < HEADER_LEN:
            raise MalformedPacket("udp: truncated", f"{n} bytes")
        sport, dport, length, csum = _HDR.unpack_from(buf, 0)
        if length < HEADER_LEN or length > n:
            raise MalformedPacket("udp: bad length", f"length field {length}, have {n}")
        if dport == 0:
            raise MalformedPacket("udp: zero destination port")
        view = memoryview(buf)[:length]
        if verify_checksum and csum != 0:
            s = ones_complement_sum(view, pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_UDP, length))
            if fold(s) != 0xFFFF:
                raise MalformedPacket("udp: bad checksum")
        return cls(sport, dport), view[HEADER_LEN:]

    def _header_and_sum(self, payload, src_ip, dst_ip) -> tuple[bytes, int, int]:
        length = HEADER_LEN + len(payload)
        if length > 0xFFFF:
            raise ValueError(f"UDP datagram of {length} bytes is too long")
        header = _HDR.pack(self.src_port, self.dst_port, length, 0)
        return header, length, pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_UDP, length)

    def emit(self, payload, src_ip: IPv4Address, dst_ip: IPv4Address, checksum: bool = True) -> bytes:
        """Return header + payload, with the checksum unless ``checksum`` is False."""
        header, length, pseudo = self._header_and_sum(payload, src_ip, dst_ip)
        if not checksum:
            return header + payload
        s = ones_complement_sum(payload, ones_complement_sum(header, pseudo))
        csum = (~fold(s) & 0xFFFF) or 0xFFFF
        return _HDR.pack(self.src_port, self.dst_port, length, csum) + payload

    def emit_partial_csum(self, payload, src_ip: IPv4Address, dst_ip: IPv4Address) -> tuple[bytes, int, int]:
        """Return ``(datagram, csum_start, csum_offset)`` for checksum offload.

        The checksum field holds the folded (not inverted) pseudo-header sum,
        as virtio's ``NEEDS_CSUM`` expects: the device sums from
        ``csum_start`` (here the start of the UDP header) to the end and stores
        the inverted result at ``csum_start + csum_offset``.
        """
        header, length, pseudo = self._header_and_sum(payload, src_ip, dst_ip)
        return _HDR.pack(self.src_port, self.dst_port, length, fold(pseudo)) + payload, 0, CHECKSUM_OFFSET
