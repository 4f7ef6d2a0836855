"""Hand-built DNS answers for the resolver's tests (the bytes written out, not our builder)."""
from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address


def name(text: str) -> bytes:
    out = b""
    for label in text.rstrip(".").split(".") if text.strip(".") else []:
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(ident: int, *, qr=True, tc=False, rd=True, ra=True, rcode=0, qd=1, an=0, ns=0, ar=0) -> bytes:
    flags = (qr << 15) | (tc << 9) | (rd << 8) | (ra << 7) | rcode
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def question(qname: str, qtype: int = 1, qclass: int = 1) -> bytes:
    return name(qname) + struct.pack("!HH", qtype, qclass)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    """A record whose owner is already encoded (a name or a compression pointer)."""
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def a(owner: bytes, ip: str, ttl: int = 300) -> bytes:
    return rr(owner, 1, IPv4Address(ip).packed, ttl)


def aaaa(owner: bytes, ip: str, ttl: int = 300) -> bytes:
    return rr(owner, 28, IPv6Address(ip).packed, ttl)


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


QNAME_AT = 12  # the question's name starts right after the header


def soa(owner: bytes, minimum: int, ttl: int = 3600, mname: bytes | None = None, rname: bytes | None = None) -> bytes:
    """An SOA record (RFC 1035 3.3.13): two names, then serial, refresh, retry, expire, minimum."""
    names = (mname or name("ns.example.com")) + (rname or name("hostmaster.example.com"))
    return rr(owner, 6, names + struct.pack("!IIIII", 2026120701, 7200, 900, 1209600, minimum), ttl)


def opt(payload: int = 1232, ext_rcode: int = 0, version: int = 0, do: bool = False,
        options: list[tuple[int, bytes]] = (), owner: bytes = b"\0") -> bytes:
    """An EDNS OPT pseudo-record (RFC 6891 6.1.2): class = payload size, TTL = rcode/version/flags."""
    data = b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)
    flags = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0)
    return owner + struct.pack("!HHIH", 41, payload, flags, len(data)) + data


def answer(ident: int, qname: str, records: list[bytes], qtype: int = 1, *, authority: list[bytes] = (),
           additional: list[bytes] = (), **flags) -> bytes:
    return (header(ident, an=len(records), ns=len(authority), ar=len(additional), **flags) + question(qname, qtype)
            + b"".join(records) + b"".join(authority) + b"".join(additional))
