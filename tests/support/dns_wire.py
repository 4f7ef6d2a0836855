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


def answer(ident: int, qname: str, records: list[bytes], qtype: int = 1, **flags) -> bytes:
    return header(ident, an=len(records), **flags) + question(qname, qtype) + b"".join(records)
