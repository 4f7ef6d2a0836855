"""ARP (RFC 826) for Ethernet and IPv4: a packet view and a checked repr."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from .errors import MalformedPacket
from .ethernet import MacAddress
from .ipv4 import ipv4_address

__all__ = ["ARP_LEN", "ArpOperation", "ArpPacket", "ArpRepr"]

#: Length of an Ethernet/IPv4 ARP packet.
ARP_LEN = 28

_FIXED = struct.Struct("!HHBBH")
_U16 = struct.Struct("!H")
_ETH_IPV4 = struct.Struct("!HHBBH6sI6sI")

_HTYPE_ETHERNET = 1
_PTYPE_IPV4 = 0x0800


class ArpOperation(IntEnum):
    REQUEST = 1
    REPLY = 2


_OPERATIONS = {1: ArpOperation.REQUEST, 2: ArpOperation.REPLY}


def _u16_field(offset: int, doc: str) -> property:
    def get(self) -> int:
        return _U16.unpack_from(self.buf, offset)[0]

    def put(self, value: int) -> None:
        _U16.pack_into(self.buf, offset, value)

    return property(get, put, doc=doc)


def _u8_field(offset: int, doc: str) -> property:
    def get(self) -> int:
        return self.buf[offset]

    def put(self, value: int) -> None:
        self.buf[offset] = value

    return property(get, put, doc=doc)


def _addr_field(index: int, doc: str) -> property:
    # index: 0 sender hardware, 1 sender protocol, 2 target hardware,
    # 3 target protocol; where each sits depends on the two length bytes.
    def span(self) -> tuple[int, int]:
        h, p = self.buf[4], self.buf[5]
        start = 8 + (index // 2) * (h + p) + (h if index % 2 else 0)
        return start, start + (p if index % 2 else h)

    def get(self) -> bytes:
        a, b = span(self)
        return bytes(self.buf[a:b])

    def put(self, value: bytes) -> None:
        a, b = span(self)
        if len(value) != b - a:
            raise ValueError(f"address must be {b - a} bytes, got {len(value)}")
        self.buf[a:b] = value

    return property(get, put, doc=doc)


class ArpPacket:
    """A zero-copy view of an ARP packet with any address lengths.

    The address accessors use the lengths in the packet, so this view also
    reads non-Ethernet/IPv4 ARP; :class:`ArpRepr` accepts Ethernet/IPv4 only.
    Construction checks that the addresses the length bytes announce fit.
    """

    __slots__ = ("buf",)

    def __init__(self, buf) -> None:
        if len(buf) < 8 or len(buf) < 8 + 2 * (buf[4] + buf[5]):
            raise MalformedPacket("arp: truncated", f"{len(buf)} bytes")
        self.buf = buf

    hardware_type = _u16_field(0, "1 for Ethernet.")
    protocol_type = _u16_field(2, "An EtherType; 0x0800 for IPv4.")
    hardware_len = _u8_field(4, "Hardware address length (6 for Ethernet).")
    protocol_len = _u8_field(5, "Protocol address length (4 for IPv4).")
    operation = _u16_field(6, "1 request, 2 reply.")
    source_hardware_addr = _addr_field(0, "Sender hardware address.")
    source_protocol_addr = _addr_field(1, "Sender protocol address.")
    target_hardware_addr = _addr_field(2, "Target hardware address.")
    target_protocol_addr = _addr_field(3, "Target protocol address.")


@dataclass(slots=True)
class ArpRepr:
    """An Ethernet/IPv4 ARP request or reply."""

    operation: ArpOperation
    sender_mac: MacAddress
    sender_ip: IPv4Address
    target_mac: MacAddress
    target_ip: IPv4Address

    @classmethod
    def parse(cls, buf) -> "ArpRepr":
        """Parse an ARP packet (bytes after the Ethernet header; padding ignored)."""
        if len(buf) < 8:
            raise MalformedPacket("arp: truncated", f"{len(buf)} bytes")
        htype, ptype, hlen, plen, op = _FIXED.unpack_from(buf, 0)
        if htype != _HTYPE_ETHERNET or ptype != _PTYPE_IPV4 or hlen != 6 or plen != 4:
            raise MalformedPacket(
                "arp: unsupported hardware/protocol",
                f"htype {htype} ptype {ptype:#06x} hlen {hlen} plen {plen}",
            )
        if len(buf) < ARP_LEN:
            raise MalformedPacket("arp: truncated", f"{len(buf)} bytes")
        operation = _OPERATIONS.get(op)
        if operation is None:
            raise MalformedPacket("arp: unsupported operation", f"operation {op}")
        _, _, _, _, _, sha, spa, tha, tpa = _ETH_IPV4.unpack_from(buf, 0)
        return cls(
            operation,
            MacAddress._trusted(sha),
            ipv4_address(spa),
            MacAddress._trusted(tha),
            ipv4_address(tpa),
        )

    def emit(self) -> bytes:
        """The 28-byte ARP packet (the caller adds the Ethernet header)."""
        return _ETH_IPV4.pack(
            _HTYPE_ETHERNET,
            _PTYPE_IPV4,
            6,
            4,
            self.operation,
            self.sender_mac.packed,
            int(self.sender_ip),
            self.target_mac.packed,
            int(self.target_ip),
        )
