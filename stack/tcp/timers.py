"""A TCP connection's timers as objects: a deadline each, and what belongs to it.

Sans-IO like the rest of the engine: a timer holds an absolute time
(seconds, the caller's clock) or None, and the connection asks whether it
expired at ``now``. The retry and probe counts live with the timer whose
expiries they count.
"""
from __future__ import annotations

__all__ = ["Timer", "RetransmitTimer", "PersistTimer", "KeepaliveTimer", "ConnectionTimers"]


class Timer:
    """One deadline, or none while stopped."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None

    def start(self, at: float) -> None:
        self.at = at

    def start_if_stopped(self, at: float) -> None:
        """Start unless already running (a running timer keeps its deadline)."""
        if self.at is None:
            self.at = at

    def stop(self) -> None:
        self.at = None

    def take_expired(self, now: float) -> bool:
        """True (and stopped) if the deadline has come; else nothing changes."""
        at = self.at
        if at is not None and now >= at:
            self.at = None
            return True
        return False


class RetransmitTimer(Timer):
    """RFC 6298's retransmission timer (also the SYN and SYN-ACK retransmissions)."""

    __slots__ = ("retries",)

    def __init__(self) -> None:
        super().__init__()
        self.retries = 0  # expiries in a row without progress


class PersistTimer(Timer):
    """Zero-window probing (RFC 9293 3.8.6.1): exponential backoff, bounded probes."""

    __slots__ = ("backoff", "probes")

    def __init__(self) -> None:
        super().__init__()
        self.backoff = 0  # the interval is RTO * 2**backoff
        self.probes = 0  # probes sent without an ACK

    def interval(self, rto: float, max_rto: float) -> float:
        return min(rto * (1 << self.backoff), max_rto)

    def back_off(self, rto: float, max_rto: float) -> None:
        """Double the next interval, up to ``max_rto``."""
        if rto * (1 << self.backoff) < max_rto:
            self.backoff += 1


class KeepaliveTimer(Timer):
    """Keepalives (RFC 9293 3.8.4): armed lazily from the last segment received."""

    __slots__ = ("probes",)

    def __init__(self) -> None:
        super().__init__()
        self.probes = 0  # keepalives sent without an answer

    def reset(self) -> None:
        """The peer was heard from: no probe is out, the idle time starts again."""
        self.probes = 0
        self.at = None


class ConnectionTimers:
    """All timers of one connection; :meth:`earliest` is what ``poll_at`` reports."""

    __slots__ = ("retransmit", "persist", "tail_probe", "delayed_ack", "keepalive", "close")

    def __init__(self) -> None:
        self.retransmit = RetransmitTimer()
        self.persist = PersistTimer()
        self.tail_probe = Timer()  # RFC 8985 tail loss probe
        self.delayed_ack = Timer()
        self.keepalive = KeepaliveTimer()
        self.close = Timer()  # TIME-WAIT, or FIN-WAIT-2 of an orphan

    def earliest(self) -> float | None:
        """The first deadline among the running timers (keepalive aside: it is armed lazily)."""
        # Unrolled: this runs for every poll and poll_at.
        t = self.retransmit.at
        x = self.persist.at
        if x is not None and (t is None or x < t):
            t = x
        x = self.tail_probe.at
        if x is not None and (t is None or x < t):
            t = x
        x = self.delayed_ack.at
        if x is not None and (t is None or x < t):
            t = x
        x = self.close.at
        if x is not None and (t is None or x < t):
            t = x
        return t

    def stop_all(self) -> None:
        for timer in (self.retransmit, self.persist, self.tail_probe, self.delayed_ack, self.keepalive, self.close):
            timer.at = None
