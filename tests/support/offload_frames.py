"""Frame builders and an independent checksum checker for the offload tests.

Not a test module. The checker sums 16-bit words in a plain loop, so it
shares nothing with nicdev.net.offload's big-integer trick.
"""
from __future__ import annotations

import struct

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")
SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6 = bytes.fromhex("fd000000000000000000000000000001")
DST6 = bytes.fromhex("fd000000000000000000000000000002")

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
# NOP NOP TIMESTAMP(10): the options Linux puts on every data segment.
TIMESTAMPS = b"\x01\x01\x08\x0a" + struct.pack(">II", 0x01020304, 0x0A0B0C0D)


def naive_sum(data: bytes) -> int:
    """Ones' complement sum of 16-bit big-endian words, one word at a time."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack(">H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def naive_checksum(data: bytes, initial: int = 0) -> int:
    total = naive_sum(data) + initial
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo4(proto: int, length: int, src: bytes = SRC4, dst: bytes = DST4) -> int:
    return naive_sum(src + dst + struct.pack(">BBH", 0, proto, length))


def pseudo6(proto: int, length: int, src: bytes = SRC6, dst: bytes = DST6) -> int:
    return naive_sum(src + dst + struct.pack(">IxxxB", length, proto))


def eth(ethertype: int, vlan: int | None = None) -> bytes:
    tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
    return DST_MAC + SRC_MAC + tag + struct.pack(">H", ethertype)


def tcp_header(seq: int, flags: int, options: bytes = b"", *, ack: int = 0x11223344, window: int = 501,
               sport: int = 40000, dport: int = 5001, urgent: int = 0) -> bytes:
    assert len(options) % 4 == 0
    doff = (20 + len(options)) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, urgent) + options


def ipv4_header(payload_len: int, proto: int = 6, ident: int = 0x1234, *, df: bool = True, ttl: int = 64) -> bytes:
    hdr = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0x4000 if df else 0, ttl,
                                proto, 0, SRC4, DST4))
    struct.pack_into(">H", hdr, 10, naive_checksum(bytes(hdr)))
    return bytes(hdr)


def ipv6_header(payload_len: int, proto: int = 6) -> bytes:
    return struct.pack(">IHBB16s16s", 0x60000000, payload_len, proto, 64, SRC6, DST6)


def tcp4_frame(payload: bytes, *, seq: int = 1000, flags: int = ACK | PSH, options: bytes = b"",
               ident: int = 0x1234, vlan: int | None = None, partial: bool = True) -> bytes:
    """An Ethernet/IPv4/TCP frame; `partial`: the TCP checksum field holds the
    pseudo-header sum (what a sender with checksum offload leaves), else the
    full checksum."""
    tcp = bytearray(tcp_header(seq, flags, options) + payload)
    ph = pseudo4(6, len(tcp))
    value = (ph if partial else naive_checksum(bytes(tcp), ph))
    struct.pack_into(">H", tcp, 16, value)
    return eth(0x0800, vlan) + ipv4_header(len(tcp), 6, ident) + bytes(tcp)


def tcp6_frame(payload: bytes, *, seq: int = 1000, flags: int = ACK | PSH, options: bytes = b"") -> bytes:
    tcp = bytearray(tcp_header(seq, flags, options) + payload)
    struct.pack_into(">H", tcp, 16, pseudo6(6, len(tcp)))
    return eth(0x86DD) + ipv6_header(len(tcp)) + bytes(tcp)


def udp4_frame(payload: bytes, *, partial: bool = True, ident: int = 0x1234) -> bytes:
    udp = bytearray(struct.pack(">HHHH", 4000, 5000, 8 + len(payload), 0) + payload)
    ph = pseudo4(17, len(udp))
    struct.pack_into(">H", udp, 6, ph if partial else (naive_checksum(bytes(udp), ph) or 0xFFFF))
    return eth(0x0800) + ipv4_header(len(udp), 17, ident, df=False) + bytes(udp)


def split_tcp4(frame: bytes, l3: int = 14):
    """(ip header, tcp header, payload) of a finished IPv4/TCP frame."""
    ihl = (frame[l3] & 0x0F) * 4
    total = struct.unpack_from(">H", frame, l3 + 2)[0]
    ip = frame[l3:l3 + ihl]
    l4 = l3 + ihl
    doff = (frame[l4 + 12] >> 4) * 4
    return ip, frame[l4:l4 + doff], frame[l4 + doff:l3 + total]


def tcp4_checksums_ok(frame: bytes, l3: int = 14) -> bool:
    """Both the IPv4 header checksum and the TCP checksum verify."""
    ip, tcp, payload = split_tcp4(frame, l3)
    segment = tcp + payload
    return naive_checksum(ip) == 0 and naive_checksum(segment, pseudo4(6, len(segment))) == 0
