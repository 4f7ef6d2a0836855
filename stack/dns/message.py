"""DNS messages (RFC 1035 4.1): build a query, read an answer. No state, no I/O.

Every way a message can be wrong (cut short, a label too long, a name
longer than 255 bytes, a compression pointer past the end or into a loop,
counts that promise more records than there are) is a
:class:`MalformedMessage` naming what and where: a hostile answer gives an
error, never another exception.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from stack.dns.errors import DnsError, MalformedMessage

__all__ = ["RecordType", "Rcode", "CLASS_IN", "Header", "Question", "Record", "Message",
           "encode_name", "build_query", "parse_message", "read_name", "same_name"]

CLASS_IN = 1
HEADER = struct.Struct("!HHHHHH")
FIXED_RR = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH after the owner name
MAX_NAME = 255           # bytes on the wire, RFC 1035 3.1
MAX_LABEL = 63
MAX_POINTERS = 32        # compression jumps followed in one name before we call it a loop
FLAG_QR = 0x8000
FLAG_TC = 0x0200
FLAG_RD = 0x0100


class RecordType(enum.IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    MX = 15
    TXT = 16
    AAAA = 28


class Rcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


def rcode_name(code: int) -> str:
    try:
        return Rcode(code).name
    except ValueError:
        return f"RCODE {code}"


@dataclass(frozen=True)
class Header:
    ident: int
    flags: int
    qdcount: int = 0
    ancount: int = 0
    nscount: int = 0
    arcount: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


@dataclass(frozen=True)
class Question:
    name: str
    rtype: int
    rclass: int = CLASS_IN


@dataclass(frozen=True)
class Record:
    """One resource record; ``value`` is the address text (A, AAAA) or the
    target name (CNAME, NS, PTR), None for types we do not interpret."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    value: str | None


@dataclass(frozen=True)
class Message:
    header: Header
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]


def same_name(a: str, b: str) -> bool:
    """DNS names compare without case (RFC 4343) and without the root's trailing dot."""
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def encode_name(name: str) -> bytes:
    """``www.example.com`` as length-prefixed labels; a bad name is a :class:`DnsError`."""
    text = name.rstrip(".") if name != "." else ""
    out = bytearray()
    for label in text.split(".") if text else []:
        try:
            raw = label.encode("ascii")
        except UnicodeEncodeError:
            raise DnsError(f"bad name {name!r}: only ASCII names (IDNA is not done here)") from None
        if not 1 <= len(raw) <= MAX_LABEL:
            raise DnsError(f"bad name {name!r}: every label must be 1..{MAX_LABEL} bytes")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > MAX_NAME:
        raise DnsError(f"bad name {name!r}: longer than {MAX_NAME} bytes")
    return bytes(out)


def build_query(ident: int, name: str, rtype: int, recursion_desired: bool = True) -> bytes:
    """A standard query (opcode 0) with one question of class IN."""
    if not 0 <= ident <= 0xFFFF:
        raise ValueError(f"transaction id must be 0..65535, got {ident}")
    flags = FLAG_RD if recursion_desired else 0
    return HEADER.pack(ident, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", rtype, CLASS_IN)


def read_name(buf: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (compression pointers followed, at most
    :data:`MAX_POINTERS` jumps, never to the same place twice) and the offset
    just past it in the record it started in."""
    labels: list[str] = []
    length = 1  # the root's zero byte
    end = None  # where the name ends in its record (after the first pointer)
    seen: set[int] = set()
    while True:
        if offset >= len(buf):
            raise MalformedMessage(f"name at byte {offset} runs past the end ({len(buf)} bytes)")
        size = buf[offset]
        if size & 0xC0 == 0xC0:
            if offset + 1 >= len(buf):
                raise MalformedMessage(f"compression pointer at byte {offset} is cut short")
            target = ((size & 0x3F) << 8) | buf[offset + 1]
            if end is None:
                end = offset + 2
            if target in seen or len(seen) >= MAX_POINTERS:
                raise MalformedMessage(f"compression loop: pointer at byte {offset} to byte {target}")
            if target >= len(buf):
                raise MalformedMessage(f"compression pointer at byte {offset} points past the end (to {target})")
            seen.add(target)
            offset = target
            continue
        if size & 0xC0:
            raise MalformedMessage(f"label at byte {offset} has reserved type bits {size >> 6:#x}")
        if size == 0:
            return ".".join(labels), end if end is not None else offset + 1
        label = buf[offset + 1:offset + 1 + size]
        if len(label) < size:
            raise MalformedMessage(f"label at byte {offset} runs past the end")
        length += size + 1
        if length > MAX_NAME:
            raise MalformedMessage(f"name at byte {offset} is longer than {MAX_NAME} bytes")
        labels.append(label.decode("ascii", errors="backslashreplace").replace(".", "\\."))
        offset += size + 1


def _read_question(buf: bytes, offset: int) -> tuple[Question, int]:
    name, offset = read_name(buf, offset)
    if offset + 4 > len(buf):
        raise MalformedMessage(f"question for {name!r} is cut short")
    rtype, rclass = struct.unpack_from("!HH", buf, offset)
    return Question(name, rtype, rclass), offset + 4


def _rdata_value(buf: bytes, rtype: int, start: int, rdata: bytes) -> str | None:
    if rtype == RecordType.A:
        if len(rdata) != 4:
            raise MalformedMessage(f"A record with {len(rdata)} bytes of data (4 expected)")
        return str(IPv4Address(rdata))
    if rtype == RecordType.AAAA:
        if len(rdata) != 16:
            raise MalformedMessage(f"AAAA record with {len(rdata)} bytes of data (16 expected)")
        return str(IPv6Address(rdata))
    if rtype in (RecordType.CNAME, RecordType.NS, RecordType.PTR):
        # The target may point back into the whole message (compression).
        name, end = read_name(buf[:start + len(rdata)], start)
        if end != start + len(rdata):
            raise MalformedMessage(f"{RecordType(rtype).name} record's name does not fill its data")
        return name
    return None


def _read_record(buf: bytes, offset: int) -> tuple[Record, int]:
    name, offset = read_name(buf, offset)
    if offset + FIXED_RR.size > len(buf):
        raise MalformedMessage(f"record for {name!r} is cut short")
    rtype, rclass, ttl, rdlength = FIXED_RR.unpack_from(buf, offset)
    start = offset + FIXED_RR.size
    rdata = buf[start:start + rdlength]
    if len(rdata) < rdlength:
        raise MalformedMessage(f"record for {name!r} promises {rdlength} bytes of data, {len(rdata)} there")
    ttl = ttl if ttl < 0x80000000 else 0  # RFC 2181 8: a TTL with the top bit set counts as 0
    return Record(name, rtype, rclass, ttl, rdata, _rdata_value(buf, rtype, start, rdata)), start + rdlength


def read_header(buf: bytes) -> Header:
    if len(buf) < HEADER.size:
        raise MalformedMessage(f"message of {len(buf)} bytes is shorter than a header ({HEADER.size})")
    return Header(*HEADER.unpack_from(buf, 0))


def parse_message(buf: bytes) -> Message:
    """The whole message; a :class:`MalformedMessage` if any part cannot be read."""
    buf = bytes(buf)
    header = read_header(buf)
    offset = HEADER.size
    questions = []
    for _ in range(header.qdcount):
        question, offset = _read_question(buf, offset)
        questions.append(question)
    sections: list[list[Record]] = [[], [], []]
    for section, count in zip(sections, (header.ancount, header.nscount, header.arcount)):
        for _ in range(count):
            record, offset = _read_record(buf, offset)
            section.append(record)
    return Message(header, tuple(questions), *(tuple(s) for s in sections))
