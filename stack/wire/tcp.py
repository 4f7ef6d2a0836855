"""TCP (RFC 9293) segments over IPv4: options, a segment view and a checked repr.

Options understood: MSS, window scale (RFC 7323), SACK-permitted and SACK
blocks (RFC 2018), timestamps (RFC 7323).  NOP is skipped, EOL ends the list,
unknown options are skipped by their length; a length that is too short,
runs past the header, or is wrong for a known kind makes the segment
malformed ("tcp: bad option length").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag
from ipaddress import IPv4Address

from nicdev.virtio.checksum import fold, ones_complement_sum

from .checksum import pseudo_header_sum_v4
from .errors import MalformedPacket

__all__ = [
    "HEADER_LEN",
    "MAX_OPTIONS_LEN",
    "Mss",
    "Sack",
    "SackPermitted",
    "TcpFlags",
    "TcpOption",
    "TcpRepr",
    "TcpSegment",
    "Timestamps",
    "UnknownOption",
    "WindowScale",
    "emit_options",
    "parse_options",
]

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40
_PROTO_TCP = 6
#: Offset of the checksum field within the TCP header (for checksum offload).
CHECKSUM_OFFSET = 16

# ports, seq, ack, data offset/flags, window, checksum, urgent
_HDR = struct.Struct("!HHIIHHHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32PAIR = struct.Struct("!II")

_EOL, _NOP, _MSS, _WS, _SACK_PERM, _SACK, _TS = 0, 1, 2, 3, 4, 5, 8
_NOP_NOP_TS = bytes((_NOP, _NOP, _TS, 10))


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Indexing a table is far cheaper than building a composite IntFlag per segment.
_FLAGS = tuple(TcpFlags(i) for i in range(256))


# -- options -----------------------------------------------------------------


class TcpOption:
    """Base class of parsed TCP options."""

    __slots__ = ()


@dataclass(slots=True, frozen=True)
class Mss(TcpOption):
    value: int


@dataclass(slots=True, frozen=True)
class WindowScale(TcpOption):
    shift: int


@dataclass(slots=True, frozen=True)
class SackPermitted(TcpOption):
    pass


@dataclass(slots=True, frozen=True)
class Sack(TcpOption):
    """SACK blocks as ``(left, right)`` sequence number pairs (1 to 4 of them)."""

    blocks: tuple[tuple[int, int], ...]


@dataclass(slots=True, frozen=True)
class Timestamps(TcpOption):
    tsval: int
    tsecr: int


@dataclass(slots=True, frozen=True)
class UnknownOption(TcpOption):
    kind: int
    data: bytes


_FIXED_LEN = {_MSS: 4, _WS: 3, _SACK_PERM: 2, _TS: 10}


def _scan_options(buf) -> list[tuple[int, object]]:
    """Validate the options area; return ``(kind, value)`` with plain values.

    MSS and window scale give an int, SACK-permitted True, timestamps a
    ``(tsval, tsecr)`` pair, SACK a tuple of blocks, anything else its bytes.
    Plain values keep the per-segment path free of option objects.
    """
    buf = bytes(buf)  # indexing bytes is cheaper than indexing a memoryview
    found: list[tuple[int, object]] = []
    i = 0
    n = len(buf)
    while i < n:
        kind = buf[i]
        if kind == _EOL:
            break
        if kind == _NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedPacket("tcp: bad option length", f"kind {kind} has no length byte")
        length = buf[i + 1]
        if length < 2 or i + length > n:
            raise MalformedPacket("tcp: bad option length", f"kind {kind} length {length}")
        want = _FIXED_LEN.get(kind)
        if want is not None and length != want:
            raise MalformedPacket("tcp: bad option length", f"kind {kind} length {length}")
        if kind == _TS:
            found.append((kind, _U32PAIR.unpack_from(buf, i + 2)))
        elif kind == _MSS:
            found.append((kind, (buf[i + 2] << 8) | buf[i + 3]))
        elif kind == _WS:
            found.append((kind, buf[i + 2]))
        elif kind == _SACK_PERM:
            found.append((kind, True))
        elif kind == _SACK:
            if (length - 2) % 8 or not 10 <= length <= 34:
                raise MalformedPacket("tcp: bad option length", f"SACK length {length}")
            found.append((kind, tuple(_U32PAIR.unpack_from(buf, j) for j in range(i + 2, i + length, 8))))
        else:
            found.append((kind, buf[i + 2 : i + length]))
        i += length
    return found


def parse_options(buf) -> list[TcpOption]:
    """Parse the options area of a TCP header (NOP and EOL are not returned)."""
    opts: list[TcpOption] = []
    for kind, value in _scan_options(buf):
        if kind == _MSS:
            opts.append(Mss(value))
        elif kind == _WS:
            opts.append(WindowScale(value))
        elif kind == _SACK_PERM:
            opts.append(SackPermitted())
        elif kind == _TS:
            opts.append(Timestamps(*value))
        elif kind == _SACK:
            opts.append(Sack(value))
        else:
            opts.append(UnknownOption(kind, value))
    return opts


def emit_options(
    mss=None, window_scale=None, sack_permitted=False, sack_blocks=(), timestamps=None
) -> bytes:
    """Options laid out as Linux does, each already 32-bit aligned with NOPs.

    SYN: MSS, SACK-permitted + timestamps, NOP + window scale.  Later
    segments: NOP NOP timestamps, NOP NOP SACK.  Raises ValueError beyond 40
    bytes (at most 3 SACK blocks fit beside timestamps, 4 without).
    """
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", _MSS, 4, mss)
    if timestamps is not None:
        out += bytes((_SACK_PERM, 2) if sack_permitted else (_NOP, _NOP))
        out += struct.pack("!BBII", _TS, 10, *timestamps)
    elif sack_permitted:
        out += bytes((_NOP, _NOP, _SACK_PERM, 2))
    if window_scale is not None:
        out += bytes((_NOP, _WS, 3, window_scale))
    if sack_blocks:
        out += bytes((_NOP, _NOP, _SACK, 2 + 8 * len(sack_blocks)))
        for left, right in sack_blocks:
            out += _U32PAIR.pack(left, right)
    if len(out) > MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options need {len(out)} bytes, at most {MAX_OPTIONS_LEN} fit")
    return bytes(out)


# -- segment view -------------------------------------------------------------


class TcpSegment:
    """A zero-copy view of a TCP segment in ``buf`` (the IPv4 payload)."""

    __slots__ = ("buf",)

    def __init__(self, buf) -> None:
        if len(buf) < HEADER_LEN:
            raise MalformedPacket("tcp: truncated", f"{len(buf)} bytes")
        self.buf = buf

    def _u16(self, off: int) -> int:
        return _U16.unpack_from(self.buf, off)[0]

    @property
    def src_port(self) -> int:
        return self._u16(0)

    @src_port.setter
    def src_port(self, value: int) -> None:
        _U16.pack_into(self.buf, 0, value)

    @property
    def dst_port(self) -> int:
        return self._u16(2)

    @dst_port.setter
    def dst_port(self, value: int) -> None:
        _U16.pack_into(self.buf, 2, value)

    @property
    def seq_number(self) -> int:
        return _U32.unpack_from(self.buf, 4)[0]

    @seq_number.setter
    def seq_number(self, value: int) -> None:
        _U32.pack_into(self.buf, 4, value)

    @property
    def ack_number(self) -> int:
        return _U32.unpack_from(self.buf, 8)[0]

    @ack_number.setter
    def ack_number(self, value: int) -> None:
        _U32.pack_into(self.buf, 8, value)

    @property
    def header_len(self) -> int:
        """Data offset in bytes."""
        return (self.buf[12] >> 4) * 4

    @header_len.setter
    def header_len(self, value: int) -> None:
        if value % 4 or not HEADER_LEN <= value <= 60:
            raise ValueError(f"TCP header length must be a multiple of 4 in 20..60, got {value}")
        self.buf[12] = (value // 4) << 4 | (self.buf[12] & 0x0F)

    @property
    def flags(self) -> TcpFlags:
        return _FLAGS[self.buf[13]]

    @flags.setter
    def flags(self, value: int) -> None:
        self.buf[13] = int(value)

    @property
    def window(self) -> int:
        return self._u16(14)

    @window.setter
    def window(self, value: int) -> None:
        _U16.pack_into(self.buf, 14, value)

    @property
    def checksum(self) -> int:
        return self._u16(16)

    @checksum.setter
    def checksum(self, value: int) -> None:
        _U16.pack_into(self.buf, 16, value)

    @property
    def urgent(self) -> int:
        return self._u16(18)

    @urgent.setter
    def urgent(self, value: int) -> None:
        _U16.pack_into(self.buf, 18, value)

    @property
    def options(self) -> memoryview:
        return memoryview(self.buf)[HEADER_LEN : self.header_len]

    @property
    def payload(self) -> memoryview:
        return memoryview(self.buf)[self.header_len :]

    def fill_checksum(self, src_ip: IPv4Address, dst_ip: IPv4Address) -> None:
        """Compute the checksum over the whole buffer (header + payload)."""
        self.checksum = 0
        s = ones_complement_sum(self.buf, pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_TCP, len(self.buf)))
        self.checksum = ~fold(s) & 0xFFFF


# -- repr ---------------------------------------------------------------------


@dataclass(slots=True)
class TcpRepr:
    """A TCP header with the options the stack uses.

    ``window`` is the raw 16-bit field (unscaled); ``timestamps`` is
    ``(tsval, tsecr)``; ``sack_blocks`` a tuple of ``(left, right)``.
    ``window_scale`` is kept as received (RFC 7323 says to treat >14 as 14:
    that is the connection's job).
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int
    urgent: int = 0
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None

    @property
    def header_len(self) -> int:
        """Header length in bytes, options included, as :meth:`emit` writes it."""
        n = HEADER_LEN
        if self.mss is not None:
            n += 4
        if self.timestamps is not None:
            n += 12
        elif self.sack_permitted:
            n += 4
        if self.window_scale is not None:
            n += 4
        if self.sack_blocks:
            n += 4 + 8 * len(self.sack_blocks)
        return n

    @classmethod
    def parse(
        cls, buf, src_ip: IPv4Address, dst_ip: IPv4Address, verify_checksum: bool = True
    ) -> tuple["TcpRepr", memoryview]:
        """Parse a segment (the whole IPv4 payload); return the header and a payload view."""
        n = len(buf)
        if n < HEADER_LEN:
            raise MalformedPacket("tcp: truncated", f"{n} bytes")
        sport, dport, seq, ack, off_flags, window, _csum, urgent = _HDR.unpack_from(buf, 0)
        hlen = (off_flags >> 12) * 4
        if hlen < HEADER_LEN or hlen > n:
            raise MalformedPacket("tcp: bad data offset", f"header {hlen} bytes, have {n}")
        if sport == 0 or dport == 0:
            raise MalformedPacket("tcp: zero port")
        view = memoryview(buf)
        if verify_checksum:
            s = ones_complement_sum(view, pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_TCP, n))
            if fold(s) != 0xFFFF:
                raise MalformedPacket("tcp: bad checksum")
        repr_ = cls(sport, dport, seq, ack, _FLAGS[off_flags & 0xFF], window, urgent)
        if hlen == 32 and view[20:24] == _NOP_NOP_TS:
            # Fast path: what Linux puts on nearly every established segment.
            repr_.timestamps = _U32PAIR.unpack_from(view, 24)
        elif hlen > HEADER_LEN:
            for kind, value in _scan_options(view[HEADER_LEN:hlen]):
                if kind == _TS:
                    repr_.timestamps = value
                elif kind == _MSS:
                    repr_.mss = value
                elif kind == _WS:
                    repr_.window_scale = value
                elif kind == _SACK_PERM:
                    repr_.sack_permitted = True
                elif kind == _SACK:
                    repr_.sack_blocks = value
        return repr_, view[hlen:]

    def _header(self, csum: int) -> bytes:
        opts = emit_options(
            self.mss, self.window_scale, self.sack_permitted, self.sack_blocks, self.timestamps
        )
        off_flags = ((HEADER_LEN + len(opts)) // 4) << 12 | int(self.flags)
        return (
            _HDR.pack(self.src_port, self.dst_port, self.seq, self.ack, off_flags, self.window, csum, self.urgent)
            + opts
        )

    def emit(self, payload, src_ip: IPv4Address, dst_ip: IPv4Address, checksum: bool = True) -> bytes:
        """Return header + options + payload, checksum filled in unless ``checksum`` is False."""
        header = self._header(0)
        if not checksum:
            return header + payload
        length = len(header) + len(payload)
        s = ones_complement_sum(
            payload, ones_complement_sum(header, pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_TCP, length))
        )
        csum = _U16.pack(~fold(s) & 0xFFFF)
        return b"".join((header[:CHECKSUM_OFFSET], csum, header[CHECKSUM_OFFSET + 2 :], payload))

    def emit_partial_csum(self, payload, src_ip: IPv4Address, dst_ip: IPv4Address) -> tuple[bytes, int, int]:
        """Return ``(segment, csum_start, csum_offset)`` for checksum offload.

        Like :meth:`UdpRepr.emit_partial_csum`: the checksum field holds the
        folded pseudo-header sum; the device completes it.
        """
        length = self.header_len + len(payload)
        pseudo = pseudo_header_sum_v4(src_ip, dst_ip, _PROTO_TCP, length)
        return self._header(fold(pseudo)) + payload, 0, CHECKSUM_OFFSET
