"""Packet formats: zero-copy views and checked reprs, no state.

Every format has a *view* class (typed accessors over a buffer, settable on a
writable one) and a *Repr* (a dataclass whose ``parse`` checks everything
and raises :class:`MalformedPacket`, and whose ``emit`` serializes).  See
docs/stack-wire.md for conventions.
"""

from nicdev.virtio.checksum import fold, internet_checksum, ones_complement_sum, verify

from .arp import ARP_LEN, ArpOperation, ArpPacket, ArpRepr
from .checksum import pseudo_header_sum_v4
from .errors import MalformedPacket
from .ethernet import EtherType, EthernetFrame, EthernetRepr, MacAddress
from .icmpv4 import (
    DestUnreachable,
    DestUnreachableCode,
    EchoReply,
    EchoRequest,
    Icmpv4Message,
    Icmpv4Other,
    Icmpv4Packet,
    Icmpv4Repr,
    TimeExceeded,
    TimeExceededCode,
    emit_icmpv4,
    error_payload,
    parse_icmpv4,
)
from .ipv4 import IpProtocol, Ipv4Packet, Ipv4Repr, ipv4_address
from .tcp import (
    Mss,
    Sack,
    SackPermitted,
    TcpFlags,
    TcpOption,
    TcpRepr,
    TcpSegment,
    Timestamps,
    UnknownOption,
    WindowScale,
    emit_options,
    parse_options,
)
from .udp import UdpDatagram, UdpRepr

__all__ = [
    "ARP_LEN",
    "ArpOperation",
    "ArpPacket",
    "ArpRepr",
    "DestUnreachable",
    "DestUnreachableCode",
    "EchoReply",
    "EchoRequest",
    "EtherType",
    "EthernetFrame",
    "EthernetRepr",
    "Icmpv4Message",
    "Icmpv4Other",
    "Icmpv4Packet",
    "Icmpv4Repr",
    "IpProtocol",
    "Ipv4Packet",
    "Ipv4Repr",
    "MacAddress",
    "MalformedPacket",
    "Mss",
    "Sack",
    "SackPermitted",
    "TcpFlags",
    "TcpOption",
    "TcpRepr",
    "TcpSegment",
    "TimeExceeded",
    "TimeExceededCode",
    "Timestamps",
    "UdpDatagram",
    "UdpRepr",
    "UnknownOption",
    "WindowScale",
    "emit_icmpv4",
    "emit_options",
    "error_payload",
    "fold",
    "internet_checksum",
    "ipv4_address",
    "ones_complement_sum",
    "parse_icmpv4",
    "parse_options",
    "pseudo_header_sum_v4",
    "verify",
]
