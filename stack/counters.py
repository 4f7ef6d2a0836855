"""Per-protocol packet counters for the stack.

Every layer counts what it received, sent and dropped; a drop is counted
under ``drop.<reason>`` so that a malformed packet's ``MalformedPacket.reason``
shows up by name (``counters.snapshot()["ipv4"]["drop.bad_checksum"]``).
Plain data, no locking: the interface that owns it runs under one lock.
"""
from __future__ import annotations

from collections import Counter

__all__ = ["Counters"]


class Counters:
    """A dict of ``collections.Counter``, one per protocol name."""

    def __init__(self) -> None:
        self._by_proto: dict[str, Counter[str]] = {}

    def bump(self, proto: str, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` of protocol ``proto``."""
        self._by_proto.setdefault(proto, Counter())[name] += n

    def drop(self, proto: str, reason: str) -> None:
        """Count one packet of ``proto`` dropped for ``reason``."""
        self.bump(proto, "drop." + reason)

    def get(self, proto: str, name: str) -> int:
        """The current value of one counter (0 if never bumped)."""
        return self._by_proto.get(proto, Counter())[name]

    def drops(self, proto: str | None = None) -> int:
        """Total drops, for one protocol or all of them."""
        protos = [proto] if proto is not None else list(self._by_proto)
        return sum(
            value
            for p in protos
            for key, value in self._by_proto.get(p, Counter()).items()
            if key.startswith("drop.")
        )

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A deep copy as plain dicts, safe to hand to another thread."""
        return {proto: dict(c) for proto, c in sorted(self._by_proto.items())}
