"""The one exception every wire parser raises for bad input."""

from __future__ import annotations


class MalformedPacket(ValueError):
    """A packet that cannot be parsed.

    ``reason`` is a short, stable, machine-friendly string such as
    ``"ipv4: bad checksum"``: the interface counts dropped packets by it, so
    reasons are a fixed vocabulary (see docs/stack-wire.md), never carrying
    per-packet values.  Extra detail for humans goes in ``detail``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


#: Every reason a parser in stack.wire may give, so counters can be set up
#: ahead of time and a typo is caught by the tests.
REASONS = (
    "ethernet: truncated",
    "arp: truncated",
    "arp: unsupported hardware/protocol",
    "arp: unsupported operation",
    "ipv4: truncated",
    "ipv4: bad version",
    "ipv4: bad header length",
    "ipv4: bad total length",
    "ipv4: bad checksum",
    "icmpv4: truncated",
    "icmpv4: truncated error",
    "icmpv4: bad checksum",
    "udp: truncated",
    "udp: bad length",
    "udp: zero destination port",
    "udp: bad checksum",
    "tcp: truncated",
    "tcp: bad data offset",
    "tcp: zero port",
    "tcp: bad checksum",
    "tcp: bad option length",
)
