"""Loss recovery state of one connection: which episode runs, its undo record, the tail probe.

* :class:`LossRecovery`: no recovery, fast recovery (RFC 5681/6582/6675)
  or loss recovery after an RTO, with RFC 6582's "recover" point and the
  duplicate ACK count.
* :class:`UndoRecord`: what is needed to undo a window reduction that
  proves needless (RFC 3522 Eifel detection, RFC 3708 D-SACKs).
* :class:`TailProbe`: an RFC 8985 tail loss probe and its episode.

The connection decides when an episode starts and ends (it sees the
ACKs, the scoreboard and the timers); these objects keep the state and
the arithmetic of each. Sequence numbers are the connection's unwrapped ints.
"""
from __future__ import annotations

import copy

from stack.tcp.ranges import RangeSet
from stack.tcp.seq import MASK

__all__ = ["LossRecovery", "UndoRecord", "TailProbe", "FAST", "LOSS"]

FAST = "fast"  # fast recovery: dupACKs or SACKs showed a loss
LOSS = "loss"  # loss recovery: the retransmission timer expired

_HALF = 0x80000000


class UndoRecord:
    """The congestion state before a loss response, kept until the episode proves real."""

    __slots__ = ("saved_cc", "retrans", "rtx", "tsval", "una", "high")

    def __init__(self) -> None:
        self.saved_cc = None  # the congestion control before the episode (None: nothing to undo)
        self.retrans = 0  # retransmissions of the episode not yet shown needless
        self.rtx = RangeSet()  # what the episode retransmitted (only their D-SACKs count)
        self.tsval: int | None = None  # TSval of its first retransmission (Eifel)
        self.una = 0  # SND.UNA and SND.NXT when the episode began
        self.high = 0

    def start(self, cc, una: int, nxt: int) -> None:
        """A loss response begins: remember the congestion state before it."""
        self.saved_cc = copy.copy(cc)
        self.retrans = 0
        self.rtx.clear()
        self.tsval = None
        self.una = una
        self.high = nxt

    def retransmitted(self, start: int, end: int, tsval: int | None) -> None:
        """The episode resent ``[start, end)``; ``tsval`` its timestamp, if timestamps are on."""
        self.retrans += 1
        self.rtx.add(start, end)
        if self.retrans == 1 and tsval is not None:
            self.tsval = tsval

    def eifel_says_needless(self, ts) -> bool:
        """RFC 3522: does an ACK of the first retransmission echo an older TSval?

        One look only, at the first ACK that covers it.
        """
        first_rtx_tsval = self.tsval
        self.tsval = None
        if ts is None or not ts[1]:
            return False
        return (ts[1] - first_rtx_tsval) & MASK >= _HALF

    def dsack_says_needless(self, left: int, right: int, mss: int) -> bool:
        """RFC 3708: a D-SACK of ``[left, right)``; True once every retransmission proved needless.

        A D-SACK for data never retransmitted (the link duplicated the
        original) says nothing about the retransmissions: only what the
        episode resent counts.
        """
        if not (self.una <= left < right <= self.high) or self.retrans <= 0:
            return False
        resent = self.rtx.covered(left, right)
        if resent <= 0:
            return False
        self.retrans -= -(-resent // mss)
        return self.retrans <= 0

    def no_eifel(self) -> None:
        """The episode goes on past an RTO: its first retransmission no longer tells (RFC 3522)."""
        self.tsval = None

    def forget(self) -> None:
        """Nothing to undo any more (the congestion control was replaced): the
        record is spent, so no later ACK or D-SACK asks for an undo."""
        self.take()

    def take(self):
        """The saved congestion state, for an undo; the record is spent."""
        saved = self.saved_cc
        self.saved_cc = None
        self.rtx.clear()
        self.tsval = None
        return saved


class TailProbe:
    """RFC 8985 tail loss probe: the probe out and what it was."""

    __slots__ = ("high", "rtx", "force")

    def __init__(self) -> None:
        self.high: int | None = None  # SND.NXT after a probe, until its episode ends
        self.rtx = False  # the probe was a retransmission (not new data)
        self.force = False  # the next new segment is a probe: cwnd does not hold it

    def probe_with_new_data(self) -> None:
        """The next new segment is the probe: it goes whatever cwnd says."""
        self.force = True
        self.rtx = False

    def probe_with_retransmission(self, nxt: int) -> None:
        """The probe resends the last segment; its episode runs until SND.NXT ``nxt`` is acked."""
        self.rtx = True
        self.high = nxt

    def sent_new_data(self, nxt: int) -> None:
        """The new-data probe went out; its episode runs until SND.NXT ``nxt`` is acked."""
        self.force = False
        self.high = nxt

    def episode_over(self) -> None:
        self.high = None

    def cancel(self) -> None:
        self.high = None
        self.force = False


class LossRecovery:
    """Which recovery episode runs (None, :data:`FAST` or :data:`LOSS`) and its counters."""

    __slots__ = ("phase", "recover", "dupacks", "dup_bytes", "undo", "tlp")

    def __init__(self) -> None:
        self.phase: str | None = None
        self.recover = 0  # SND.NXT when the episode began (RFC 6582 "recover")
        self.dupacks = 0
        self.dup_bytes = 0  # NewReno without SACK: each dupACK stands for one segment that left
        self.undo = UndoRecord()
        self.tlp = TailProbe()

    def enter(self, phase: str, recover: int) -> None:
        self.phase = phase
        self.recover = recover

    def count_dupack(self, mss: int, outstanding: int) -> None:
        """A duplicate ACK; without SACK (``mss`` > 0) it stands for one segment that left
        the network (RFC 5681 inflation, RFC 3042 limited transmit), at most what is out."""
        self.dupacks += 1
        if mss:
            self.dup_bytes = min(self.dup_bytes + mss, outstanding)

    def deflate(self, acked: int, mss: int) -> None:
        """RFC 6582 partial ACK: the segments ``acked`` covers left; the one resent is out."""
        self.dup_bytes = max(0, self.dup_bytes - acked + mss)

    def reset_dupacks(self) -> None:
        self.dupacks = 0
        self.dup_bytes = 0

    def exit(self) -> None:
        """The episode is over (all of it acknowledged, or undone)."""
        self.phase = None
        self.reset_dupacks()

    def exit_loss(self) -> None:
        """Loss recovery is over: everything out at the RTO was acknowledged.

        The dupACK count starts again; ``dup_bytes`` stays as it is (as it always has).
        """
        self.phase = None
        self.dupacks = 0
