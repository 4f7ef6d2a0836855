"""The sender's scoreboard (RFC 6675): what the peer SACKed, what is lost, what was resent.

Sequence numbers are the connection's unwrapped ints. The scoreboard knows
ranges only; the connection says where SND.UNA and SND.NXT are when it
matters. Without SACK it still holds the ranges NewReno and the RTO mark
lost and the retransmissions of them.
"""
from __future__ import annotations

from stack.tcp.ranges import RangeSet
from stack.tcp.seq import unwrap

__all__ = ["Scoreboard"]


class Scoreboard:
    """SACKed, lost and retransmitted byte ranges above SND.UNA."""

    __slots__ = ("sacked", "lost", "retrans", "_rtx_high")

    def __init__(self) -> None:
        self.sacked = RangeSet()
        self.lost = RangeSet()
        self.retrans = RangeSet()  # retransmitted and not yet SACKed or acked
        # Retransmitted chunk start -> (its end, SND.NXT when it was resent), to see it lost again.
        self._rtx_high: dict[int, tuple[int, int]] = {}

    # -- what the peer says --------------------------------------------------------------
    def take_sack(self, blocks, una: int, nxt: int) -> int:
        """Record the peer's SACK blocks (wire numbers); return the bytes newly SACKed."""
        new = 0
        for left, right in blocks:
            left = unwrap(left, una)
            right = unwrap(right, una)
            if not una < left < right <= nxt:
                continue  # D-SACK or bogus: ignored
            added = self.sacked.add(left, right)
            if added:
                new += added
                self.lost.remove(left, right)
                self.retrans.remove(left, right)
        return new

    def acked_to(self, ack: int) -> None:
        """SND.UNA moved to ``ack``: forget everything below it."""
        if self.sacked or self.lost or self.retrans:
            self.sacked.discard_below(ack)
            self.lost.discard_below(ack)
            self.retrans.discard_below(ack)
            rtx_high = self._rtx_high
            if rtx_high:
                for start in [k for k, (end, _) in rtx_high.items() if end <= ack]:
                    del rtx_high[start]

    # -- loss marking --------------------------------------------------------------------
    def first_sacked(self, default: int) -> int:
        """The lowest SACKed sequence number, or ``default`` with nothing SACKed."""
        return self.sacked.ranges()[0][0] if self.sacked else default

    def lost_boundary(self, dupthresh: int, mss: int) -> int:
        """RFC 6675 IsLost: everything unSACKed below this is lost."""
        ranges = self.sacked.ranges()
        if not ranges:
            return 0
        b1 = ranges[-dupthresh][0] if len(ranges) >= dupthresh else 0
        thr = (dupthresh - 1) * mss
        acc = 0
        b2 = 0
        for s, e in reversed(ranges):
            if e - s > thr - acc:
                b2 = e - 1 - (thr - acc)
                break
            acc += e - s
        return max(b1, b2)

    def mark_unsacked_lost(self, una: int, end: int) -> None:
        """Mark everything in ``[una, end)`` that is not SACKed as lost."""
        pos = una
        for s, e in self.sacked:
            if s >= end:
                break
            if pos < s:
                self.lost.add(pos, s)
            pos = max(pos, e)
        if pos < end:
            self.lost.add(pos, end)

    def mark_lost(self, start: int, end: int) -> None:
        """``[start, end)`` is lost (what was already resent of it is not sent again yet)."""
        self.lost.add(start, end)

    def mark_lost_again(self, start: int, end: int) -> None:
        """``[start, end)`` is lost, even where it was already resent: send it (again)."""
        self.lost.add(start, end)
        self.retrans.remove(start, end)

    def detect_lost_retransmits(self, una: int) -> int:
        """A retransmission is lost if data sent after it was SACKed (as Linux did
        before RACK): it becomes sendable again. Returns how many were found."""
        high = self.sacked.high
        found = 0
        for start, (end, hi) in list(self._rtx_high.items()):
            if end <= una or self.retrans.covered(start, end) == 0:
                del self._rtx_high[start]  # delivered (acked or SACKed)
            elif high is not None and high > hi:
                del self._rtx_high[start]
                self.retrans.remove(start, end)
                found += 1
        return found

    @property
    def tracks_retransmits(self) -> bool:
        return bool(self._rtx_high)

    # -- retransmission ------------------------------------------------------------------
    @property
    def has_unsent_loss(self) -> bool:
        """Some lost range was not retransmitted yet (a cheap first test)."""
        return self.lost.total > self.retrans.total

    def next_retransmission(self, mss: int) -> tuple[int, int] | None:
        """The first lost range not yet resent, at most ``mss`` long."""
        retrans = self.retrans
        for s, e in self.lost:
            rng = retrans.first_gap(s, e, mss)
            if rng is not None:
                return rng
        return None

    def retransmitted(self, start: int, end: int, snd_nxt: int | None) -> None:
        """``[start, end)`` was resent; with ``snd_nxt`` it is watched for being lost again."""
        self.retrans.add(start, end)
        if snd_nxt is not None:
            self._rtx_high[start] = (end, snd_nxt)

    def forget_retransmissions(self) -> None:
        """Resend what is lost from scratch (a timeout, a smaller MSS)."""
        self.retrans.clear()
        self._rtx_high.clear()

    def pipe(self, outstanding: int) -> int:
        """RFC 6675 SetPipe by byte ranges, for ``outstanding`` = SND.NXT - SND.UNA."""
        return outstanding - self.sacked.total - self.lost.total + self.retrans.total

    def clear_losses(self) -> None:
        """Nothing is lost after all (an undone recovery): SACKs stay."""
        self.lost.clear()
        self.forget_retransmissions()

    def clear(self) -> None:
        self.sacked.clear()
        self.clear_losses()
