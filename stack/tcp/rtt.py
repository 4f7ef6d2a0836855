"""The retransmission timer's estimator (RFC 6298).

Samples come from the timestamp echo (RFC 7323) or from one timed segment
at a time (Karn's rule: never from a segment that was retransmitted).
The RTO is ``SRTT + max(G, 4 * RTTVAR)``, clamped to ``[min_rto, max_rto]``;
each expiry doubles it (``backoff``) until a new sample arrives.
"""
from __future__ import annotations

__all__ = ["RttEstimator", "TimedSegment"]


class RttEstimator:
    """SRTT, RTTVAR and RTO in seconds, with exponential backoff."""

    __slots__ = ("srtt", "rttvar", "min_rto", "max_rto", "granularity", "_base_rto", "backoff", "samples")

    def __init__(
        self, initial_rto: float = 1.0, min_rto: float = 0.2, max_rto: float = 120.0, granularity: float = 0.001
    ) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.granularity = granularity
        self._base_rto = min(max(initial_rto, min_rto), max_rto)
        self.backoff = 0  # expiries since the last sample
        self.samples = 0

    @property
    def rto(self) -> float:
        """The current timeout, backoff included."""
        return min(self._base_rto * (1 << self.backoff), self.max_rto)

    def sample(self, r: float) -> None:
        """Feed one round-trip measurement (seconds); clears the backoff (RFC 6298 5.7)."""
        if r < 0:
            return
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.samples += 1
        self.backoff = 0
        rto = self.srtt + max(self.granularity, 4 * self.rttvar)
        self._base_rto = min(max(rto, self.min_rto), self.max_rto)

    def on_timeout(self) -> None:
        """The timer expired: back off (RFC 6298 5.5)."""
        if self._base_rto * (1 << self.backoff) < self.max_rto:
            self.backoff += 1

    def reset_after_syn_retransmit(self) -> None:
        """RFC 6298 5.7: a retransmitted SYN without a sample leaves RTO at 3 s."""
        if self.srtt is None:
            self._base_rto = min(max(3.0, self.min_rto), self.max_rto)
        self.backoff = 0


class TimedSegment:
    """The one segment timed for an RTT sample when timestamps are off (RFC 6298 with Karn).

    Only one is timed at a time; a retransmission cancels it (Karn's rule:
    an ACK cannot tell which copy it answers). A SYN that had to be resent
    gives no sample for the whole handshake.
    """

    __slots__ = ("seq", "sent_at", "syn_retransmitted")

    def __init__(self) -> None:
        self.seq: int | None = None  # the sequence number whose ACK ends the measurement
        self.sent_at = 0.0
        self.syn_retransmitted = False

    def start(self, seq: int, now: float) -> None:
        self.seq = seq
        self.sent_at = now

    def cancel(self) -> None:
        self.seq = None

    def sample(self, ack: int, now: float) -> float | None:
        """The RTT if ``ack`` covers the timed segment (the measurement ends), else None."""
        seq = self.seq
        if seq is not None and ack >= seq:
            self.seq = None
            return now - self.sent_at
        return None
