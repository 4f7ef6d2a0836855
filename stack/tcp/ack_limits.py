"""Rate limits on the ACKs a connection sends in answer to segments it rejects.

RFC 5961 section 7 asks for a limit on challenge ACKs (a token bucket per
connection here); ACKs for out-of-window segments are spaced out as
Linux's tcp_oow_rate_limited does, so two ends that disagree on the
window cannot ping-pong ACKs at line rate.
"""
from __future__ import annotations

__all__ = ["AckLimits"]


class AckLimits:
    """The challenge-ACK token bucket and the time of the last out-of-window ACK."""

    __slots__ = ("_tokens", "_tokens_time", "_oow_time")

    def __init__(self, burst: int) -> None:
        self._tokens = float(burst)
        self._tokens_time = 0.0
        self._oow_time = -1e18

    def challenge_allowed(self, now: float, rate: float, burst: int) -> bool:
        """May a challenge ACK go now (``rate`` tokens a second, at most ``burst``)? Takes a token."""
        tokens = self._tokens + (now - self._tokens_time) * rate
        if tokens > burst:
            tokens = float(burst)
        self._tokens_time = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def oow_ack_allowed(self, now: float, interval: float) -> bool:
        """May an ACK for an out-of-window segment go now (one per ``interval``)?"""
        if now - self._oow_time < interval:
            return False
        self._oow_time = now
        return True
