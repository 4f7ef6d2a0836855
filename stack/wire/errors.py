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
