"""IPv4 headers (RFC 791): a packet view and a checked repr.

Options are accepted and skipped (the view exposes them as bytes); emitted
headers never carry options.  Fragment offsets are in bytes everywhere in
this API (the wire field counts 8-byte units).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from ipaddress import IPv4Address

from nicdev.virtio.checksum import fold, internet_checksum, ones_complement_sum

from .errors import MalformedPacket

__all__ = ["HEADER_LEN", "MAX_PACKET_LEN", "IpProtocol", "Ipv4Packet", "Ipv4Repr", "ipv4_address"]

HEADER_LEN = 20
MAX_PACKET_LEN = 65535

# version/ihl, tos, total length, ident, flags/fragment, ttl, protocol,
# checksum, src, dst
_HDR = struct.Struct("!BBHHHBBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

_DF = 0x4000
_MF = 0x2000
_OFFSET_MASK = 0x1FFF


class IpProtocol(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


_PROTOCOLS = {int(p): p for p in IpProtocol}


@lru_cache(maxsize=4096)
def ipv4_address(value: int) -> IPv4Address:
    """An IPv4Address for a 32-bit int; cached, since parsers see few distinct addresses."""
    return IPv4Address(value)


class Ipv4Packet:
    """A zero-copy view of an IPv4 packet in ``buf``.

    Construction checks only that 20 bytes are there; :meth:`Ipv4Repr.parse`
    does the full checking.  Setters need a writable buffer and do not update
    the checksum: call :meth:`fill_checksum` last.
    """

    __slots__ = ("buf",)

    def __init__(self, buf) -> None:
        if len(buf) < HEADER_LEN:
            raise MalformedPacket("ipv4: truncated", f"{len(buf)} bytes")
        self.buf = buf

    # -- byte 0: version and IHL
    @property
    def version(self) -> int:
        return self.buf[0] >> 4

    @version.setter
    def version(self, value: int) -> None:
        self.buf[0] = (value << 4) | (self.buf[0] & 0x0F)

    @property
    def ihl(self) -> int:
        """Header length in 32-bit words."""
        return self.buf[0] & 0x0F

    @ihl.setter
    def ihl(self, value: int) -> None:
        self.buf[0] = (self.buf[0] & 0xF0) | value

    @property
    def header_len(self) -> int:
        """Header length in bytes."""
        return (self.buf[0] & 0x0F) * 4

    # -- byte 1: DSCP and ECN
    @property
    def dscp(self) -> int:
        return self.buf[1] >> 2

    @dscp.setter
    def dscp(self, value: int) -> None:
        self.buf[1] = (value << 2) | (self.buf[1] & 0x03)

    @property
    def ecn(self) -> int:
        return self.buf[1] & 0x03

    @ecn.setter
    def ecn(self, value: int) -> None:
        self.buf[1] = (self.buf[1] & 0xFC) | value

    @property
    def total_len(self) -> int:
        return _U16.unpack_from(self.buf, 2)[0]

    @total_len.setter
    def total_len(self, value: int) -> None:
        _U16.pack_into(self.buf, 2, value)

    @property
    def ident(self) -> int:
        return _U16.unpack_from(self.buf, 4)[0]

    @ident.setter
    def ident(self, value: int) -> None:
        _U16.pack_into(self.buf, 4, value)

    # -- flags and fragment offset share one 16-bit field
    def _frag_field(self) -> int:
        return _U16.unpack_from(self.buf, 6)[0]

    def _set_frag_bits(self, mask: int, value: int) -> None:
        _U16.pack_into(self.buf, 6, (self._frag_field() & ~mask) | value)

    @property
    def dont_frag(self) -> bool:
        return bool(self._frag_field() & _DF)

    @dont_frag.setter
    def dont_frag(self, value: bool) -> None:
        self._set_frag_bits(_DF, _DF if value else 0)

    @property
    def more_frags(self) -> bool:
        return bool(self._frag_field() & _MF)

    @more_frags.setter
    def more_frags(self, value: bool) -> None:
        self._set_frag_bits(_MF, _MF if value else 0)

    @property
    def frag_offset(self) -> int:
        """Fragment offset in bytes."""
        return (self._frag_field() & _OFFSET_MASK) * 8

    @frag_offset.setter
    def frag_offset(self, value: int) -> None:
        if value % 8 or not 0 <= value <= _OFFSET_MASK * 8:
            raise ValueError(f"fragment offset must be a multiple of 8 in 0..65528, got {value}")
        self._set_frag_bits(_OFFSET_MASK, value // 8)

    @property
    def ttl(self) -> int:
        return self.buf[8]

    @ttl.setter
    def ttl(self, value: int) -> None:
        self.buf[8] = value

    @property
    def protocol(self) -> int:
        p = self.buf[9]
        return _PROTOCOLS.get(p, p)

    @protocol.setter
    def protocol(self, value: int) -> None:
        self.buf[9] = value

    @property
    def checksum(self) -> int:
        return _U16.unpack_from(self.buf, 10)[0]

    @checksum.setter
    def checksum(self, value: int) -> None:
        _U16.pack_into(self.buf, 10, value)

    @property
    def src(self) -> IPv4Address:
        return ipv4_address(_U32.unpack_from(self.buf, 12)[0])

    @src.setter
    def src(self, addr: IPv4Address) -> None:
        _U32.pack_into(self.buf, 12, int(addr))

    @property
    def dst(self) -> IPv4Address:
        return ipv4_address(_U32.unpack_from(self.buf, 16)[0])

    @dst.setter
    def dst(self, addr: IPv4Address) -> None:
        _U32.pack_into(self.buf, 16, int(addr))

    @property
    def options(self) -> bytes:
        return bytes(self.buf[HEADER_LEN : self.header_len])

    @property
    def payload(self) -> memoryview:
        """Bytes from the end of the header to ``total_len`` (Ethernet padding excluded)."""
        return memoryview(self.buf)[self.header_len : self.total_len]

    def verify_checksum(self) -> bool:
        return fold(ones_complement_sum(memoryview(self.buf)[: self.header_len])) == 0xFFFF

    def fill_checksum(self) -> None:
        """Compute and store the header checksum."""
        self.checksum = 0
        self.checksum = internet_checksum(memoryview(self.buf)[: self.header_len])


@dataclass(slots=True)
class Ipv4Repr:
    """An IPv4 header without options.

    ``payload_len`` is the number of bytes after the header; ``frag_offset``
    is in bytes (a multiple of 8); ``tos`` is the whole DSCP/ECN byte.
    ``protocol`` is an :class:`IpProtocol` when known, else the plain int.
    """

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    payload_len: int
    ttl: int = 64
    ident: int = 0
    dont_frag: bool = False
    more_frags: bool = False
    frag_offset: int = 0
    tos: int = 0

    @property
    def is_fragment(self) -> bool:
        return self.more_frags or self.frag_offset != 0

    @classmethod
    def parse(cls, buf, verify_checksum: bool = True) -> tuple["Ipv4Repr", memoryview]:
        """Parse an IPv4 packet; return the header and a view of the payload.

        Bytes beyond ``total_len`` (Ethernet padding) are not part of the
        payload.  ``verify_checksum=False`` is for a NIC that already checked
        it (virtio ``DATA_VALID``).
        """
        n = len(buf)
        if n < HEADER_LEN:
            raise MalformedPacket("ipv4: truncated", f"{n} bytes")
        vihl, tos, total_len, ident, frag, ttl, proto, _csum, src, dst = _HDR.unpack_from(buf, 0)
        if vihl >> 4 != 4:
            raise MalformedPacket("ipv4: bad version", f"version {vihl >> 4}")
        hlen = (vihl & 0x0F) * 4
        if hlen < HEADER_LEN:
            raise MalformedPacket("ipv4: bad header length", f"ihl {vihl & 0x0F}")
        if hlen > n:
            raise MalformedPacket("ipv4: truncated", f"header {hlen} bytes, have {n}")
        if total_len < hlen or total_len > n:
            raise MalformedPacket(
                "ipv4: bad total length", f"total length {total_len}, header {hlen}, have {n}"
            )
        view = memoryview(buf)
        if verify_checksum and fold(ones_complement_sum(view[:hlen])) != 0xFFFF:
            raise MalformedPacket("ipv4: bad checksum")
        return (
            cls(
                ipv4_address(src),
                ipv4_address(dst),
                _PROTOCOLS.get(proto, proto),
                total_len - hlen,
                ttl,
                ident,
                bool(frag & _DF),
                bool(frag & _MF),
                (frag & _OFFSET_MASK) * 8,
                tos,
            ),
            view[hlen:total_len],
        )

    def header_bytes(self) -> bytes:
        """The 20-byte header, checksum filled in."""
        total = HEADER_LEN + self.payload_len
        if total > MAX_PACKET_LEN:
            raise ValueError(f"IPv4 packet of {total} bytes exceeds {MAX_PACKET_LEN}")
        off = self.frag_offset
        if off % 8 or not 0 <= off <= _OFFSET_MASK * 8:
            raise ValueError(f"fragment offset must be a multiple of 8 in 0..65528, got {off}")
        frag = off // 8 | (_DF if self.dont_frag else 0) | (_MF if self.more_frags else 0)
        src = int(self.src)
        dst = int(self.dst)
        # Sum the ten header words straight from the fields: no second pack.
        words = (
            (0x4500 | self.tos) + total + self.ident + frag + (self.ttl << 8 | self.protocol)
            + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
        )
        csum = ~fold(words) & 0xFFFF
        return _HDR.pack(0x45, self.tos, total, self.ident, frag, self.ttl, self.protocol, csum, src, dst)

    def emit(self, payload=b"") -> bytes:
        """Return header + ``payload``; ``len(payload)`` must equal ``payload_len``."""
        if len(payload) != self.payload_len:
            raise ValueError(f"payload is {len(payload)} bytes but payload_len is {self.payload_len}")
        return self.header_bytes() + payload
