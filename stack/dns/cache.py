"""Answers kept for their TTL, on the caller's clock (sans-IO: ``now`` is passed in)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["DnsCache"]


@dataclass(frozen=True)
class _Entry:
    addresses: tuple[str, ...]
    expires: float


class DnsCache:
    """(name, type) -> addresses until the answer's smallest TTL runs out.

    A TTL of 0 is not cached (RFC 1035 3.2.1: use it only for the
    transaction at hand). ``max_entries`` bounds the memory: the entry
    closest to expiry goes first. Thread-safe: one cache may serve lookups
    made from several threads.
    """

    def __init__(self, max_entries: int = 1024, max_ttl: float = 86400.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(name: str, rtype: str) -> tuple[str, str]:
        return name.rstrip(".").lower(), rtype

    def put(self, name: str, rtype: str, addresses: list[str], ttl: float, now: float) -> None:
        if ttl <= 0 or not addresses:
            return
        key = self._key(name, rtype)
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.max_entries:
                self._evict_locked(now)
            self._entries[key] = _Entry(tuple(addresses), now + min(ttl, self.max_ttl))

    def get(self, name: str, rtype: str, now: float) -> list[str] | None:
        """The cached addresses, or None if there are none or they expired."""
        key = self._key(name, rtype)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires <= now:
                del self._entries[key]
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            return list(entry.addresses)

    def _evict_locked(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            del self._entries[min(self._entries, key=lambda k: self._entries[k].expires)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
