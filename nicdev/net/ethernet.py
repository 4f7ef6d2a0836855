"""The few facts about Ethernet frames that the switch and the ports share."""
from __future__ import annotations

__all__ = ["HEADER_LEN", "MIN_FRAME_LEN", "MAX_FRAME_LEN", "BROADCAST", "is_multicast", "mac_str"]

HEADER_LEN = 14                 # destination MAC, source MAC, EtherType
MIN_FRAME_LEN = HEADER_LEN      # anything shorter has no header: malformed
# The largest frame any of our peers can produce: a 64 KiB IP packet plus the
# Ethernet header (virtio-net and TAP peers may skip padding and FCS).
MAX_FRAME_LEN = 65535 + HEADER_LEN
BROADCAST = b"\xff" * 6


def is_multicast(mac: bytes) -> bool:
    """True for group addresses (multicast and broadcast): the I/G bit is set."""
    return bool(mac[0] & 1)


def mac_str(mac: bytes) -> str:
    """aa:bb:cc:dd:ee:ff"""
    return ":".join(f"{b:02x}" for b in mac)
