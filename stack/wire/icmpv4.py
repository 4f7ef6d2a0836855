"""ICMPv4 (RFC 792): echo, destination unreachable, time exceeded, and the rest.

A parsed message is one of the :class:`Icmpv4Repr` subclasses.  Error
messages carry the offending packet's IPv4 header plus at least the first 8
bytes of its payload (``header``), which is how the stack finds the socket
an error belongs to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from nicdev.virtio.checksum import fold, internet_checksum, ones_complement_sum

from .errors import MalformedPacket

__all__ = [
    "DestUnreachable",
    "DestUnreachableCode",
    "EchoReply",
    "EchoRequest",
    "Icmpv4Message",
    "Icmpv4Other",
    "Icmpv4Packet",
    "Icmpv4Repr",
    "TimeExceeded",
    "TimeExceededCode",
    "emit_icmpv4",
    "error_payload",
    "parse_icmpv4",
]

HEADER_LEN = 8

_HDR = struct.Struct("!BBHHH")  # type, code, checksum, and the two 16-bit "rest" words
_U16 = struct.Struct("!H")

#: An error message must quote at least an IPv4 header and 8 payload bytes.
_MIN_QUOTE = 28


class Icmpv4Message(IntEnum):
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11


class DestUnreachableCode(IntEnum):
    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAG_NEEDED = 4
    SOURCE_ROUTE_FAILED = 5
    NET_UNKNOWN = 6
    HOST_UNKNOWN = 7
    SOURCE_HOST_ISOLATED = 8
    NET_PROHIBITED = 9
    HOST_PROHIBITED = 10
    NET_TOS = 11
    HOST_TOS = 12
    COMM_PROHIBITED = 13
    HOST_PRECEDENCE = 14
    PRECEDENCE_CUTOFF = 15


class TimeExceededCode(IntEnum):
    TTL_EXPIRED = 0
    FRAG_REASSEMBLY = 1


class Icmpv4Repr:
    """Base class of every parsed ICMPv4 message."""

    __slots__ = ()


@dataclass(slots=True)
class EchoRequest(Icmpv4Repr):
    ident: int
    seq: int
    data: bytes = b""


@dataclass(slots=True)
class EchoReply(Icmpv4Repr):
    ident: int
    seq: int
    data: bytes = b""


@dataclass(slots=True)
class DestUnreachable(Icmpv4Repr):
    """``next_hop_mtu`` is meaningful for FRAG_NEEDED only (RFC 1191); else 0."""

    code: int
    header: bytes
    next_hop_mtu: int = 0


@dataclass(slots=True)
class TimeExceeded(Icmpv4Repr):
    code: int
    header: bytes


@dataclass(slots=True)
class Icmpv4Other(Icmpv4Repr):
    """Any other message; ``rest`` is everything after the checksum."""

    type: int
    code: int
    rest: bytes


class Icmpv4Packet:
    """A zero-copy view of an ICMPv4 message in ``buf``."""

    __slots__ = ("buf",)

    def __init__(self, buf) -> None:
        if len(buf) < HEADER_LEN:
            raise MalformedPacket("icmpv4: truncated", f"{len(buf)} bytes")
        self.buf = buf

    @property
    def msg_type(self) -> int:
        return self.buf[0]

    @msg_type.setter
    def msg_type(self, value: int) -> None:
        self.buf[0] = value

    @property
    def code(self) -> int:
        return self.buf[1]

    @code.setter
    def code(self, value: int) -> None:
        self.buf[1] = value

    def _u16(self, off: int) -> int:
        return _U16.unpack_from(self.buf, off)[0]

    @property
    def checksum(self) -> int:
        return self._u16(2)

    @checksum.setter
    def checksum(self, value: int) -> None:
        _U16.pack_into(self.buf, 2, value)

    @property
    def ident(self) -> int:
        """Echo identifier (bytes 4-5)."""
        return self._u16(4)

    @ident.setter
    def ident(self, value: int) -> None:
        _U16.pack_into(self.buf, 4, value)

    @property
    def seq(self) -> int:
        """Echo sequence number (bytes 6-7); the next-hop MTU in FRAG_NEEDED."""
        return self._u16(6)

    @seq.setter
    def seq(self, value: int) -> None:
        _U16.pack_into(self.buf, 6, value)

    @property
    def data(self) -> memoryview:
        """Everything after the 8-byte header."""
        return memoryview(self.buf)[HEADER_LEN:]

    def verify_checksum(self) -> bool:
        return fold(ones_complement_sum(self.buf)) == 0xFFFF

    def fill_checksum(self) -> None:
        self.checksum = 0
        self.checksum = internet_checksum(self.buf)


def parse_icmpv4(buf, verify_checksum: bool = True) -> Icmpv4Repr:
    """Parse an ICMPv4 message (the whole IPv4 payload)."""
    n = len(buf)
    if n < HEADER_LEN:
        raise MalformedPacket("icmpv4: truncated", f"{n} bytes")
    if verify_checksum and fold(ones_complement_sum(buf)) != 0xFFFF:
        raise MalformedPacket("icmpv4: bad checksum")
    mtype, code, _csum, w1, w2 = _HDR.unpack_from(buf, 0)
    if mtype == 8 and code == 0:
        return EchoRequest(w1, w2, bytes(buf[HEADER_LEN:]))
    if mtype == 0 and code == 0:
        return EchoReply(w1, w2, bytes(buf[HEADER_LEN:]))
    if mtype == 3 or mtype == 11:
        if n < HEADER_LEN + _MIN_QUOTE:
            raise MalformedPacket("icmpv4: truncated error", f"{n} bytes")
        quoted = bytes(buf[HEADER_LEN:])
        if mtype == 3:
            code = _DU_CODES.get(code, code)
            return DestUnreachable(code, quoted, w2 if code == DestUnreachableCode.FRAG_NEEDED else 0)
        return TimeExceeded(_TE_CODES.get(code, code), quoted)
    return Icmpv4Other(mtype, code, bytes(buf[4:]))


_DU_CODES = {int(c): c for c in DestUnreachableCode}
_TE_CODES = {int(c): c for c in TimeExceededCode}


def _finish(mtype: int, code: int, w1: int, w2: int, body) -> bytes:
    msg = bytearray(_HDR.pack(mtype, code, 0, w1, w2))
    msg += body
    _U16.pack_into(msg, 2, internet_checksum(msg))
    return bytes(msg)


def emit_icmpv4(msg: Icmpv4Repr) -> bytes:
    """Serialize ``msg`` with its checksum filled in."""
    if isinstance(msg, EchoRequest):
        return _finish(8, 0, msg.ident, msg.seq, msg.data)
    if isinstance(msg, EchoReply):
        return _finish(0, 0, msg.ident, msg.seq, msg.data)
    if isinstance(msg, DestUnreachable):
        return _finish(3, msg.code, 0, msg.next_hop_mtu, msg.header)
    if isinstance(msg, TimeExceeded):
        return _finish(11, msg.code, 0, 0, msg.header)
    if isinstance(msg, Icmpv4Other):
        if len(msg.rest) < 4:
            raise ValueError("Icmpv4Other.rest must hold at least the 4 bytes after the checksum")
        out = bytearray((msg.type, msg.code, 0, 0))
        out += msg.rest
        _U16.pack_into(out, 2, internet_checksum(out))
        return bytes(out)
    raise TypeError(f"not an ICMPv4 message: {msg!r}")


def error_payload(ip_packet) -> bytes:
    """The part of an IPv4 packet an ICMP error quotes: its header + 8 payload bytes.

    Ethernet padding beyond the packet's total length is not quoted.
    """
    if len(ip_packet) < 20:
        raise ValueError("not an IPv4 packet: shorter than 20 bytes")
    hlen = (ip_packet[0] & 0x0F) * 4
    total = _U16.unpack_from(ip_packet, 2)[0]
    end = min(hlen + 8, max(total, hlen), len(ip_packet))
    return bytes(ip_packet[:end])
