"""The receive sequence space of one connection (RFC 9293 3.3.1): RCV.NXT and RCV.WND.

It decides what window to advertise (receiver silly-window avoidance,
RFC 9293 3.8.6.2.2, and window scaling, RFC 7323), whether a segment
falls in the window, and when in-order data calls for an ACK at once
rather than a delayed one. Sequence numbers are the connection's
unwrapped ints; the free buffer space comes from the caller.
"""
from __future__ import annotations

__all__ = ["ReceiveWindow"]


class ReceiveWindow:
    """RCV.NXT, the right edge advertised so far, and the delayed-ACK count."""

    __slots__ = ("nxt", "adv", "wscale", "mss", "sws_thresh", "unacked", "last_ack_sent")

    def __init__(self, rcvbuf: int, mss: int, rcv_mss: int) -> None:
        self.nxt = 0  # RCV.NXT
        self.adv = 0  # the highest right edge ever advertised (it never moves left)
        self.wscale = 0  # our shift, applied to windows we send
        self.mss = rcv_mss  # the largest segment seen (for the delayed-ACK rule)
        self.unacked = 0  # bytes taken in order since our last ACK
        self.last_ack_sent = 0  # RCV.NXT in the last ACK sent (Last.ACK.sent of RFC 7323)
        self.sws_thresh = 1
        self.configure(rcvbuf, mss)

    def configure(self, rcvbuf: int, mss: int) -> None:
        """The receive buffer or MSS changed: the SWS threshold follows."""
        self.sws_thresh = min(rcvbuf // 2, mss) or 1

    def open(self, nxt: int, window: int) -> None:
        """The peer's SYN was taken: RCV.NXT is ``nxt``, the first window ``window`` bytes."""
        self.nxt = nxt
        self.last_ack_sent = nxt
        self.adv = nxt + window

    @property
    def available(self) -> int:
        """RCV.WND: what the peer may still send beyond RCV.NXT."""
        wnd = self.adv - self.nxt
        return wnd if wnd > 0 else 0

    def acceptable(self, seq: int, seglen: int) -> bool:
        """RFC 9293 3.10.7.4's acceptability test, ``seglen`` counting SYN and FIN."""
        rn = self.nxt
        wnd = self.available
        if seglen == 0:
            # RFC 9293 says RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND; like Linux we also
            # take SEG.SEQ = RCV.NXT+RCV.WND: a sender that filled our window
            # sends its ACKs from exactly there (RFC 9293 appendix A.2).
            return rn <= seq <= rn + wnd
        if wnd == 0:
            return False
        last = seq + seglen - 1
        return (rn <= seq < rn + wnd) or (rn <= last < rn + wnd)

    def take(self, n: int) -> None:
        """``n`` bytes arrived in order at RCV.NXT and were taken."""
        self.nxt += n
        if n > self.mss:
            self.mss = n
        self.unacked += n

    @property
    def ack_due(self) -> bool:
        """Two full segments arrived since our last ACK: ACK now (RFC 9293 3.8.6.3)."""
        return self.unacked >= 2 * self.mss

    def window_field(self, free: int) -> int:
        """The window field to send with ``free`` buffer bytes, with receiver SWS avoidance.

        The right edge never moves left (it is remembered as advertised).
        """
        if free < 0:
            free = 0
        rn = self.nxt
        edge = self.adv
        cand = rn + free
        if cand - edge >= self.sws_thresh:
            edge = cand
        win = edge - rn
        if win < 0:
            win = 0
        shift = self.wscale
        field = win >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        right = rn + (field << shift)
        if right > self.adv:
            self.adv = right
        return field

    def update_due(self, free: int) -> bool:
        """Reading opened the window enough to tell the peer at once."""
        cand = self.nxt + free
        cur = self.adv - self.nxt
        return cand - self.adv >= self.sws_thresh and (cand - self.nxt) >= 2 * cur

    def acked(self) -> None:
        """An ACK for RCV.NXT went out."""
        self.last_ack_sent = self.nxt
        self.unacked = 0
