"""Was cwnd what held sending back? (RFC 7661's idea, Linux's tcp_is_cwnd_limited.)

cwnd grows only while it is the limit: an application- or window-limited
flow keeps its cwnd. The mark is decided when sending stops, not when
ACKs come: ACKs often arrive in a batch that is processed before anything
is sent again, and the flight shrinks with every ACK of it, so a test at
ACK time would credit only the first ACK of each round trip. As Linux's
tcp_cwnd_validate, the mark and the largest flight hold until the window
they describe has been acknowledged (or a stronger signal comes).
"""
from __future__ import annotations

__all__ = ["CwndUse"]


class CwndUse:
    """Per window of data: was cwnd the limit, and the largest flight."""

    __slots__ = ("limited", "max_flight", "_until")

    def __init__(self) -> None:
        self.limited = False
        self.max_flight = 0  # the largest SND.NXT - SND.UNA of the window
        self._until = 0  # SND.NXT when they were noted: they hold until it is acknowledged

    def note(self, una: int, nxt: int, limited: bool) -> None:
        """Sending stopped with SND.UNA/SND.NXT here; ``limited``: cwnd had no room for a segment."""
        flight = nxt - una
        if una >= self._until or limited or (not self.limited and flight > self.max_flight):
            self.limited = limited
            self.max_flight = flight
            self._until = nxt

    def allows_growth(self, cwnd: int, ssthresh: int) -> bool:
        """Grow cwnd on this ACK? In slow start, up to twice the largest flight of the window."""
        return self.limited or (cwnd < ssthresh and cwnd < 2 * self.max_flight)
