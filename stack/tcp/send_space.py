"""The send sequence space of one connection (RFC 9293 3.3.1) and its retransmission queue.

SND.UNA, SND.NXT, the peer's window (SND.WND with SND.WL1/WL2 and the
largest window seen) and the queue of bytes not yet acknowledged: the
bytes from SND.UNA on stay in :attr:`SendSpace.buf` until an ACK covers
them, so a retransmission is a slice of it. A FIN, once queued, follows
the last byte. Sequence numbers are the connection's unwrapped ints.
"""
from __future__ import annotations

__all__ = ["SendSpace"]


class SendSpace:
    """SND.UNA/SND.NXT/SND.WND and the unacknowledged bytes (the retransmission queue)."""

    __slots__ = ("una", "nxt", "wnd", "wl1", "wl2", "max_wnd", "wscale", "buf", "base",
                 "fin_queued", "fin_seq", "sml", "up", "probe_end")

    def __init__(self, iss: int) -> None:
        self.una = iss  # SND.UNA
        self.nxt = iss  # SND.NXT
        self.wnd = 0  # SND.WND, scaled
        self.wl1 = 0  # SND.WL1: the sequence number of the last window update
        self.wl2 = 0  # SND.WL2: its acknowledgment number
        self.max_wnd = 0  # the largest window the peer offered (sender SWS, RFC 5961 ACK check)
        self.wscale = 0  # the peer's shift, applied to windows it sends
        # Bytes from ``base`` (SND.UNA, or ISS+1 before the SYN is acked) on, sent or not.
        self.buf = bytearray()
        self.base = iss + 1
        self.fin_queued = False
        self.fin_seq = 0  # the FIN's sequence number, once queued
        self.sml = iss  # end of the last small segment sent (Minshall's Nagle)
        self.up: int | None = None  # the send urgent pointer (end of urgent data)
        self.probe_end: int | None = None  # a zero-window probe byte is out up to here

    # -- the queue -----------------------------------------------------------------------
    @property
    def data_end(self) -> int:
        """The sequence number after the last queued byte (the FIN's, once it is queued)."""
        return self.base + len(self.buf)

    @property
    def unsent(self) -> bool:
        """Queued bytes wait beyond SND.NXT."""
        return self.base + len(self.buf) > self.nxt

    def payload(self, start: int, end: int) -> bytes:
        """The queued bytes of ``[start, end)`` (both within the queue)."""
        base = self.base
        return bytes(self.buf[start - base : end - base])

    def queue_fin(self) -> None:
        """The application closed its side: a FIN follows the queued bytes."""
        self.fin_queued = True
        self.fin_seq = self.base + len(self.buf)

    @property
    def fin_acked(self) -> bool:
        return self.fin_queued and self.una > self.fin_seq

    def acked_to(self, ack: int) -> int:
        """SND.UNA moves to ``ack`` (above it): drop the acknowledged bytes, return how many."""
        base = self.base
        end = base + len(self.buf)
        if ack < end:
            end = ack
        freed = 0
        if end > base:
            del self.buf[: end - base]
            self.base = end
            freed = end - base
        self.una = ack
        if self.up is not None and ack >= self.up:
            self.up = None
        return freed

    # -- the peer's window ---------------------------------------------------------------
    def update_window(self, seq: int, ack: int, window: int) -> int:
        """RFC 9293's SND.WL1/WL2 rule: take ``window`` if this segment is newer.

        Returns the change of SND.WND (0 when the window stays, or the segment is older).
        """
        if self.wl1 < seq or (self.wl1 == seq and self.wl2 <= ack):
            change = window - self.wnd
            if change:
                self.wnd = window
                if window > self.max_wnd:
                    self.max_wnd = window
            self.wl1 = seq
            self.wl2 = ack
            return change
        return 0

    def set_window(self, window: int, wl1: int, wl2: int) -> None:
        """The window of a handshake segment, taken without the WL1/WL2 test."""
        self.wnd = window
        if window > self.max_wnd:
            self.max_wnd = window
        self.wl1 = wl1
        self.wl2 = wl2
