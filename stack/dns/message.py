"""DNS messages (RFC 1035 4.1): build a query, read an answer. No state, no I/O.

EDNS(0) (RFC 6891): a query may carry an OPT record advertising the UDP
payload size we accept; an OPT record in an answer is read into
:class:`Edns` (payload size, the extended RCODE's upper bits, version, DO
bit, options kept but not interpreted).

Every way a message can be wrong (cut short, a label too long, a name
longer than 255 bytes, a compression pointer past the end or into a loop,
counts that promise more records than there are, SOA or OPT data of the
wrong shape, two OPT records) is a
:class:`MalformedMessage` naming what and where: a hostile answer gives an
error, never another exception.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from stack.dns.errors import DnsError, MalformedMessage

__all__ = ["RecordType", "Rcode", "CLASS_IN", "Header", "Question", "Record", "Edns", "Message",
           "encode_name", "build_query", "parse_message", "read_name", "read_questions", "same_name",
           "soa_minimum"]

CLASS_IN = 1
HEADER = struct.Struct("!HHHHHH")
FIXED_RR = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH after the owner name
SOA_NUMBERS = struct.Struct("!IIIII")  # serial, refresh, retry, expire, minimum after the two names
OPTION = struct.Struct("!HH")  # an EDNS option's code and length
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
    OPT = 41


class Rcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16  # EDNS version not supported (needs the OPT record's upper RCODE bits)


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
class Edns:
    """The OPT pseudo-record of a message (RFC 6891 6.1.2)."""

    payload_size: int       # the largest UDP message the sender accepts (the OPT's class)
    extended_rcode: int     # the RCODE's upper 8 bits
    version: int
    dnssec_ok: bool
    options: tuple[tuple[int, bytes], ...] = ()  # (code, data), none interpreted here


@dataclass(frozen=True)
class Message:
    header: Header
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]  # the OPT record, if any, is there and in ``edns``
    edns: Edns | None = None

    @property
    def rcode(self) -> int:
        """The full 12-bit RCODE: the header's 4 bits and, with EDNS, the OPT's upper 8."""
        upper = self.edns.extended_rcode if self.edns is not None else 0
        return (upper << 4) | self.header.rcode


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


def build_query(ident: int, name: str, rtype: int, recursion_desired: bool = True, *,
                edns_payload: int | None = None) -> bytes:
    """A standard query (opcode 0) with one question of class IN; with ``edns_payload``
    an OPT record (EDNS version 0, no options) saying we accept UDP answers that big."""
    if not 0 <= ident <= 0xFFFF:
        raise ValueError(f"transaction id must be 0..65535, got {ident}")
    if edns_payload is not None and not 512 <= edns_payload <= 0xFFFF:
        raise ValueError(f"EDNS payload size must be 512..65535, got {edns_payload}")
    flags = FLAG_RD if recursion_desired else 0
    wire = encode_name(name) + struct.pack("!HH", rtype, CLASS_IN)
    if edns_payload is None:
        return HEADER.pack(ident, flags, 1, 0, 0, 0) + wire
    opt = b"\0" + FIXED_RR.pack(RecordType.OPT, edns_payload, 0, 0)  # owner: the root
    return HEADER.pack(ident, flags, 1, 0, 0, 1) + wire + opt


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
    if rtype == RecordType.SOA:
        return _soa_text(buf[:start + len(rdata)], start)
    if rtype == RecordType.OPT:
        _read_options(rdata)  # only to refuse a malformed one
    return None


def _soa_text(buf: bytes, start: int) -> str:
    """SOA data in zone-file order; the two names may be compressed (RFC 1035 3.3.13)."""
    mname, offset = read_name(buf, start)
    rname, offset = read_name(buf, offset)
    if offset + SOA_NUMBERS.size != len(buf):
        raise MalformedMessage(f"SOA record has {len(buf) - offset} bytes after its names ({SOA_NUMBERS.size} expected)")
    return " ".join([mname or ".", rname or "."] + [str(n) for n in SOA_NUMBERS.unpack_from(buf, offset)])


def soa_minimum(record: Record) -> int:
    """The MINIMUM field of an SOA record read by :func:`parse_message` (its last 4 bytes)."""
    if record.rtype != RecordType.SOA:
        raise ValueError(f"not an SOA record: type {record.rtype}")
    return struct.unpack_from("!I", record.rdata, len(record.rdata) - 4)[0]


def _read_options(rdata: bytes) -> tuple[tuple[int, bytes], ...]:
    options, offset = [], 0
    while offset < len(rdata):
        if offset + OPTION.size > len(rdata):
            raise MalformedMessage(f"EDNS option at byte {offset} of the OPT data is cut short")
        code, length = OPTION.unpack_from(rdata, offset)
        data = rdata[offset + OPTION.size:offset + OPTION.size + length]
        if len(data) < length:
            raise MalformedMessage(f"EDNS option {code} promises {length} bytes, {len(data)} there")
        options.append((code, data))
        offset += OPTION.size + length
    return tuple(options)


def _edns(additional: tuple[Record, ...]) -> Edns | None:
    """The message's OPT record as :class:`Edns` (RFC 6891 6.1.1: at most one, owned by the root)."""
    opts = [r for r in additional if r.rtype == RecordType.OPT]
    if not opts:
        return None
    if len(opts) > 1:
        raise MalformedMessage(f"{len(opts)} OPT records (at most one allowed)")
    opt = opts[0]
    if opt.name:
        raise MalformedMessage(f"OPT record owned by {opt.name!r}, not the root")
    # The TTL field holds the extended RCODE, the version and the flags; read the raw
    # 32 bits again, since _read_record maps TTLs with the top bit set to 0.
    return Edns(opt.rclass, opt.ttl >> 24, (opt.ttl >> 16) & 0xFF, bool(opt.ttl & 0x8000),
                _read_options(opt.rdata))


def _read_record(buf: bytes, offset: int) -> tuple[Record, int]:
    name, offset = read_name(buf, offset)
    if offset + FIXED_RR.size > len(buf):
        raise MalformedMessage(f"record for {name!r} is cut short")
    rtype, rclass, ttl, rdlength = FIXED_RR.unpack_from(buf, offset)
    start = offset + FIXED_RR.size
    rdata = buf[start:start + rdlength]
    if len(rdata) < rdlength:
        raise MalformedMessage(f"record for {name!r} promises {rdlength} bytes of data, {len(rdata)} there")
    if rtype != RecordType.OPT:  # (an OPT's "TTL" is flags: see _edns)
        ttl = ttl if ttl < 0x80000000 else 0  # RFC 2181 8: a TTL with the top bit set counts as 0
    return Record(name, rtype, rclass, ttl, rdata, _rdata_value(buf, rtype, start, rdata)), start + rdlength


def read_header(buf: bytes) -> Header:
    if len(buf) < HEADER.size:
        raise MalformedMessage(f"message of {len(buf)} bytes is shorter than a header ({HEADER.size})")
    return Header(*HEADER.unpack_from(buf, 0))


def _read_questions(buf: bytes, header: Header) -> tuple[tuple[Question, ...], int]:
    offset = HEADER.size
    questions = []
    for _ in range(header.qdcount):
        question, offset = _read_question(buf, offset)
        questions.append(question)
    return tuple(questions), offset


def read_questions(buf: bytes) -> tuple[Question, ...]:
    """Only the header's questions: what a truncated answer (cut anywhere after them) still says."""
    buf = bytes(buf)
    return _read_questions(buf, read_header(buf))[0]


def parse_message(buf: bytes) -> Message:
    """The whole message; a :class:`MalformedMessage` if any part cannot be read."""
    buf = bytes(buf)
    header = read_header(buf)
    questions, offset = _read_questions(buf, header)
    sections: list[list[Record]] = [[], [], []]
    for section, count in zip(sections, (header.ancount, header.nscount, header.arcount)):
        for _ in range(count):
            record, offset = _read_record(buf, offset)
            section.append(record)
    answers, authority, additional = (tuple(s) for s in sections)
    return Message(header, questions, answers, authority, additional, _edns(additional))
