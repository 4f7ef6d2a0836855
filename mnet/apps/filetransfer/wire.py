"""The datagrams of the file transfer: parse and build, no state.

Every datagram starts with the same 8-byte header (all integers big-endian)::

    0      2      3      4              8
    | "MF" | ver  | type | session id   | body ...

``"MF"`` is the magic and ``ver`` is 1; the session id is a random 32-bit
number the sender picks, so a receiver tells transfers from one peer apart
and ignores stray datagrams. Bodies by type:

=========  ==========================================================================
START   1  ts u32, size u64, chunk size u16, SHA-256 (32 bytes), name length u8, name (UTF-8)
ACCEPT  2  echo u32, window u16 (chunks the receiver buffers)
DATA    3  seq u32 (chunk index), ts u32, the chunk (``chunk size`` bytes, the last one shorter)
ACK     4  echo u32, next u32 (every chunk below it arrived), bitmap (bit k, MSB first: chunk next+1+k)
FIN     5  ts u32
DONE    6  echo u32, status u8 (0 match, 1 mismatch), the SHA-256 the receiver computed
BYE     7  (no body)
ERROR   8  code u8, reason (UTF-8, up to 200 bytes)
=========  ==========================================================================

``ts`` is the sender's clock in microseconds (modulo 2**32); the receiver
echoes the last one it saw, so the sender measures round trips from any
datagram, retransmissions included (as TCP timestamps do).
:func:`parse` raises :class:`MalformedDatagram` for anything that does not
follow these rules; the machines count such datagrams and drop them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"MF"
VERSION = 1
HEADER = struct.Struct("!2sBBI")
HEADER_LEN = HEADER.size  # 8

# A 1500-byte Ethernet MTU leaves 1472 bytes of UDP payload (20 IPv4 + 8 UDP).
MAX_DATAGRAM = 1472
DATA_OVERHEAD = HEADER_LEN + 8
MAX_CHUNK = MAX_DATAGRAM - DATA_OVERHEAD  # 1456
MAX_NAME = 255
MAX_REASON = 200
# The bitmap of an ACK must fit one datagram: the window is bounded by it.
MAX_WINDOW = 8 * (MAX_DATAGRAM - HEADER_LEN - 8)

_START = struct.Struct("!IQH32sB")
_ACCEPT = struct.Struct("!IH")
_DATA = struct.Struct("!II")
_ACK = struct.Struct("!II")
_TS = struct.Struct("!I")
_DONE = struct.Struct("!IB32s")
_ERROR = struct.Struct("!B")


class Kind(IntEnum):
    START = 1
    ACCEPT = 2
    DATA = 3
    ACK = 4
    FIN = 5
    DONE = 6
    BYE = 7
    ERROR = 8


class ErrorCode(IntEnum):
    REFUSED = 1   # the START asks for something the receiver will not do (a bad name, too big)
    BUSY = 2      # the receiver takes no more transfers now
    ABORTED = 3   # a local failure ended the transfer (disk full, interrupted)


class MalformedDatagram(ValueError):
    """Not a datagram of this protocol, or one that breaks its rules."""


@dataclass(frozen=True)
class Start:
    session: int
    ts: int
    size: int
    chunk_size: int
    sha256: bytes
    name: str


@dataclass(frozen=True)
class Accept:
    session: int
    echo: int
    window: int


@dataclass(frozen=True)
class Data:
    session: int
    seq: int
    ts: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    session: int
    echo: int
    next: int
    bitmap: bytes  # bit k (MSB of byte 0 first) stands for chunk next + 1 + k

    def selected(self) -> list[int]:
        """The chunks above ``next`` the bitmap says arrived, ascending."""
        bits = int.from_bytes(self.bitmap, "big")
        width = 8 * len(self.bitmap)
        found = []
        while bits:
            top = bits.bit_length() - 1
            found.append(self.next + width - top)
            bits ^= 1 << top
        return found


@dataclass(frozen=True)
class Fin:
    session: int
    ts: int


@dataclass(frozen=True)
class Done:
    session: int
    echo: int
    matched: bool
    sha256: bytes


@dataclass(frozen=True)
class Bye:
    session: int


@dataclass(frozen=True)
class Error:
    session: int
    code: int
    reason: str


Message = Start | Accept | Data | Ack | Fin | Done | Bye | Error


def bitmap_of(next_seq: int, received) -> bytes:
    """The ACK bitmap for the chunks in ``received`` (all above ``next_seq``)."""
    offsets = [seq - next_seq - 1 for seq in received]
    if not offsets:
        return b""
    nbytes = max(offsets) // 8 + 1
    top = 8 * nbytes - 1  # offset 0 is the most significant bit of byte 0
    bits = 0
    for k in offsets:
        bits |= 1 << (top - k)
    return bits.to_bytes(nbytes, "big")


def encode(msg: Message) -> bytes:
    """The datagram for ``msg``."""
    kind, body = _BODIES[type(msg)](msg)
    return HEADER.pack(MAGIC, VERSION, kind, msg.session) + body


def _start_body(m: Start) -> tuple[int, bytes]:
    name = m.name.encode()
    return Kind.START, _START.pack(m.ts, m.size, m.chunk_size, m.sha256, len(name)) + name


def _error_body(m: Error) -> tuple[int, bytes]:
    return Kind.ERROR, _ERROR.pack(m.code) + m.reason.encode()[:MAX_REASON]


_BODIES = {
    Start: _start_body,
    Accept: lambda m: (Kind.ACCEPT, _ACCEPT.pack(m.echo, m.window)),
    Data: lambda m: (Kind.DATA, _DATA.pack(m.seq, m.ts) + m.payload),
    Ack: lambda m: (Kind.ACK, _ACK.pack(m.echo, m.next) + m.bitmap),
    Fin: lambda m: (Kind.FIN, _TS.pack(m.ts)),
    Done: lambda m: (Kind.DONE, _DONE.pack(m.echo, 0 if m.matched else 1, m.sha256)),
    Bye: lambda m: (Kind.BYE, b""),
    Error: _error_body,
}


def encode_data(session: int, seq: int, ts: int, payload: bytes) -> bytes:
    """A DATA datagram without building a :class:`Data` first (the hot path)."""
    return HEADER.pack(MAGIC, VERSION, Kind.DATA, session) + _DATA.pack(seq, ts) + payload


def parse(datagram: bytes) -> Message:
    """The message in ``datagram``; :class:`MalformedDatagram` saying what is wrong."""
    if len(datagram) < HEADER_LEN:
        raise MalformedDatagram(f"{len(datagram)} bytes: shorter than the {HEADER_LEN}-byte header")
    magic, version, kind, session = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise MalformedDatagram(f"magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise MalformedDatagram(f"version {version}, this end speaks {VERSION}")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise MalformedDatagram(f"unknown type {kind}")
    body = memoryview(datagram)[HEADER_LEN:]
    try:
        return parser(session, body)
    except struct.error:
        raise MalformedDatagram(f"{Kind(kind).name} of {len(datagram)} bytes is truncated") from None


def _parse_start(session: int, body: memoryview) -> Start:
    ts, size, chunk_size, sha, name_len = _START.unpack_from(body)
    name = bytes(body[_START.size:])
    if len(name) != name_len:
        raise MalformedDatagram(f"START says the name has {name_len} bytes, it has {len(name)}")
    if not 0 < chunk_size <= MAX_CHUNK:
        raise MalformedDatagram(f"START asks for chunks of {chunk_size} bytes (1..{MAX_CHUNK})")
    try:
        text = name.decode()
    except UnicodeDecodeError:
        raise MalformedDatagram("START's file name is not UTF-8") from None
    return Start(session, ts, size, chunk_size, sha, text)


def _parse_accept(session: int, body: memoryview) -> Accept:
    _exact(body, _ACCEPT.size, "ACCEPT")
    echo, window = _ACCEPT.unpack_from(body)
    if not 0 < window <= MAX_WINDOW:
        raise MalformedDatagram(f"ACCEPT offers a window of {window} chunks (1..{MAX_WINDOW})")
    return Accept(session, echo, window)


def _parse_data(session: int, body: memoryview) -> Data:
    seq, ts = _DATA.unpack_from(body)
    payload = bytes(body[_DATA.size:])
    if not payload:
        raise MalformedDatagram("DATA without a chunk")
    return Data(session, seq, ts, payload)


def _parse_ack(session: int, body: memoryview) -> Ack:
    echo, next_seq = _ACK.unpack_from(body)
    return Ack(session, echo, next_seq, bytes(body[_ACK.size:]))


def _parse_fin(session: int, body: memoryview) -> Fin:
    _exact(body, _TS.size, "FIN")
    return Fin(session, _TS.unpack_from(body)[0])


def _parse_done(session: int, body: memoryview) -> Done:
    _exact(body, _DONE.size, "DONE")
    echo, status, sha = _DONE.unpack_from(body)
    if status > 1:
        raise MalformedDatagram(f"DONE with status {status} (0 or 1)")
    return Done(session, echo, status == 0, sha)


def _parse_bye(session: int, body: memoryview) -> Bye:
    _exact(body, 0, "BYE")
    return Bye(session)


def _parse_error(session: int, body: memoryview) -> Error:
    (code,) = _ERROR.unpack_from(body)
    return Error(session, code, bytes(body[_ERROR.size:]).decode(errors="replace"))


def _exact(body: memoryview, size: int, kind: str) -> None:
    if len(body) != size:
        raise MalformedDatagram(f"{kind} body of {len(body)} bytes, expected {size}")


_PARSERS = {
    Kind.START: _parse_start,
    Kind.ACCEPT: _parse_accept,
    Kind.DATA: _parse_data,
    Kind.ACK: _parse_ack,
    Kind.FIN: _parse_fin,
    Kind.DONE: _parse_done,
    Kind.BYE: _parse_bye,
    Kind.ERROR: _parse_error,
}
