"""Token buckets keyed by destination, for ICMP error rate limiting.

RFC 1812 4.3.2.8 and RFC 1122 3.2.2 ask hosts to limit the ICMP errors they
send, so a flood towards a closed port cannot be turned into a flood back.
Like Linux, each destination gets its own bucket: a burst, then a steady
rate. Time is passed in (sans-IO).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

__all__ = ["KeyedRateLimiter"]


class KeyedRateLimiter:
    """``allow(key, now)`` says whether one more event for ``key`` may pass.

    ``burst`` events pass at once, then ``rate`` per second. At most
    ``max_keys`` buckets are kept; the least recently used one is forgotten
    first (a forgotten key starts again with a full bucket).
    """

    def __init__(self, burst: int = 6, rate: float = 1.0, max_keys: int = 256) -> None:
        if burst < 1 or rate <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be >= 1 and rate > 0")
        self.burst = burst
        self.rate = rate
        self.max_keys = max_keys
        # key -> (tokens, time of last refill)
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def allow(self, key: Hashable, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
