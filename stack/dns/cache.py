"""Answers kept for their TTL, on the caller's clock (sans-IO: ``now`` is passed in)."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from stack.dns.errors import DnsError

__all__ = ["DnsCache"]


@dataclass(frozen=True)
class _Entry:
    value: Any
    expires: float


class DnsCache:
    """(name, type) -> a value until its TTL runs out.

    The value is what the resolver learnt: the addresses or a whole answer
    (positive caching), or the :class:`DnsError` of an NXDOMAIN/NODATA answer
    (negative caching, RFC 2308), kept at most ``max_negative_ttl`` seconds;
    positive ones at most ``max_ttl``. A TTL of 0 is not cached (RFC 1035
    3.2.1: use it only for the transaction at hand). ``max_entries`` bounds
    the memory: the entry closest to expiry goes first. Thread-safe: one
    cache may serve lookups made from several threads.
    """

    def __init__(self, max_entries: int = 1024, max_ttl: float = 86400.0,
                 max_negative_ttl: float = 3600.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(name: str, rtype: str) -> tuple[str, str]:
        return name.rstrip(".").lower(), rtype

    def put(self, name: str, rtype: str, value: Any, ttl: float, now: float) -> None:
        """Keep ``value`` for ``ttl`` seconds from ``now`` (bounded); an empty value is not kept."""
        bound = self.max_negative_ttl if isinstance(value, DnsError) else self.max_ttl
        ttl = min(ttl, bound)
        if ttl <= 0 or not value:
            return
        key = self._key(name, rtype)
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.max_entries:
                self._evict_locked(now)
            self._entries[key] = _Entry(value, now + ttl)

    def get(self, name: str, rtype: str, now: float) -> Any:
        """The cached value, or None if there is none or it expired."""
        found = self.get_with_ttl(name, rtype, now)
        return found[0] if found is not None else None

    def get_with_ttl(self, name: str, rtype: str, now: float) -> tuple[Any, int] | None:
        """The cached value and the seconds it has left (rounded up, so at least 1), or None."""
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
            return entry.value, math.ceil(entry.expires - now)

    def _evict_locked(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            del self._entries[min(self._entries, key=lambda k: self._entries[k].expires)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
