"""TcpConnection's loss detection and recovery.

When fast recovery starts (RFC 5681/6582, RFC 6675 IsLost with SACK),
undoing a needless window reduction (RFC 3522 Eifel, RFC 3708 D-SACK) and
tail loss probes (RFC 8985). The state is :mod:`stack.tcp.recovery`'s and
the scoreboard's (:mod:`stack.tcp.scoreboard`); this decides when.
"""
from __future__ import annotations

from stack.tcp.recovery import FAST
from stack.tcp.seq import unwrap
from stack.tcp.state import SENDING


class RecoveryMixin:
    """Loss recovery for :class:`~stack.tcp.connection.TcpConnection`.

    Methods only: the state is in the owner objects the connection composes.
    """

    def _enter_fast_recovery(self, now: float) -> None:
        self.stats["fast_retransmits"] += 1
        self.recovery.undo.start(self.cc, self.snd.una, self.snd.nxt)
        self.cc.on_congestion(now, self.snd.nxt - self.snd.una)
        self.recovery.enter(FAST, self.snd.nxt)
        self.timed.cancel()
        self.timers.tail_probe.stop()
        una = self.snd.una
        if self.sack_ok:
            self._mark_lost_sack()
        # The first unacknowledged segment is retransmitted at once (RFC 5681 3.2 / 6675 5 (4.3)).
        first_sacked = self.scoreboard.first_sacked(self.snd.nxt)
        self.scoreboard.mark_lost(una, min(una + self.snd_mss, first_sacked, self.snd.nxt))
        self._force_rtx = True
        self._want_output = True

    def _is_lost(self, seq: int) -> bool:
        return seq < self.scoreboard.lost_boundary(self.config.dupthresh, self.snd_mss)

    def _mark_lost_sack(self) -> None:
        """RFC 6675 IsLost: the holes below the boundary are lost."""
        board = self.scoreboard
        board.mark_unsacked_lost(self.snd.una, board.lost_boundary(self.config.dupthresh, self.snd_mss))

    def _eifel_check(self, ts, now: float) -> None:
        """RFC 3522: an ACK for the first retransmission echoing an older TSval means the
        original got there: the retransmission (and the reduction) were needless."""
        if self.recovery.undo.eifel_says_needless(ts):
            self._undo(now, "eifel")

    def _dsack_undo(self, block, now: float) -> None:
        """RFC 3708: each D-SACK for a retransmission of the episode shows one was needless."""
        left = unwrap(block[0], self.snd.una)
        right = unwrap(block[1], self.snd.una)
        if self.recovery.undo.dsack_says_needless(left, right, self.snd_mss):
            self._undo(now, "dsack")

    def _undo(self, now: float, why: str) -> None:
        """Put the congestion state back as it was; nothing was lost after all."""
        restored = self.recovery.undo.take()
        if restored.cwnd < self.cc.cwnd:
            restored.set_cwnd(self.cc.cwnd)
        self.cc = restored
        if self.recovery.phase is not None:
            self.recovery.exit()
            self.scoreboard.clear_losses()
        self.stats["undo_" + why] += 1
        self._want_output = True

    def _is_dsack(self, blocks, ack: int) -> bool:
        """RFC 2883: the first block reports a duplicate (below the ACK or inside the second block)."""
        left = unwrap(blocks[0][0], self.snd.una)
        right = unwrap(blocks[0][1], self.snd.una)
        if right <= ack:
            return True
        if len(blocks) > 1:
            l2 = unwrap(blocks[1][0], self.snd.una)
            r2 = unwrap(blocks[1][1], self.snd.una)
            return l2 <= left and right <= r2
        return False

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 7.2: probe the tail after 2*SRTT without ACKs (never past the RTO)."""
        rec = self.recovery
        snd = self.snd
        srtt = self.rtt.srtt
        probe = self.timers.tail_probe
        if (
            not self.sack_ok
            or not self.config.tail_loss_probe
            or rec.phase is not None
            or rec.tlp.high is not None
            or snd.nxt <= snd.una
            or srtt is None
            or self.state not in SENDING
        ):
            probe.stop()
            return
        pto = max(2 * srtt, 0.01)
        if snd.nxt - snd.una <= self.snd_mss:
            pto += 0.2  # one segment out: the peer may be delaying its ACK (WCDelAckT)
        at = now + pto
        rto_at = self.timers.retransmit.at
        if rto_at is None or at < rto_at:
            probe.start(at)
        else:
            probe.stop()

    def _on_tlp(self, now: float) -> None:
        """Send a tail loss probe: new data if the window allows, else the last segment again."""
        una, nxt = self.snd.una, self.snd.nxt
        if nxt <= una or self.recovery.phase is not None or self.recovery.tlp.high is not None:
            return
        self.stats["tlp_probes"] += 1
        data_end = self.snd.data_end
        if data_end > nxt and una + self.snd.wnd > nxt:
            self.recovery.tlp.probe_with_new_data()  # _send_new sends one segment whatever cwnd says
        else:
            start = max(una, nxt - self.snd_mss)
            sacked = self.scoreboard.sacked
            if sacked.covered(start, nxt):
                high = sacked.high  # probe only what lies above everything SACKed
                if high >= nxt:
                    return
                start = max(start, high)
            self.scoreboard.mark_lost_again(start, nxt)
            self._force_rtx = True
            self.recovery.tlp.probe_with_retransmission(nxt)
        self.timers.retransmit.start(now + self.rtt.rto)  # RFC 8985 7.3: the RTO runs again from the probe
        self._want_output = True

    def _tlp_episode(self, ack: int, dsack: bool, now: float) -> None:
        """RFC 8985 7.4: what the ACKs after a probe say."""
        high = self.recovery.tlp.high
        if ack >= high:
            self.recovery.tlp.episode_over()
            if self.recovery.tlp.rtx and not dsack and self.recovery.phase is None:
                # The probe repaired a loss nobody else saw: respond as fast recovery would.
                self.stats["tlp_recoveries"] += 1
                self.cc.on_congestion(now, self._pipe())
            return
        sacked = self.scoreboard.sacked
        if sacked.contains(high - 1):
            # The probe arrived, the holes below it (all sent earlier) did not: lost.
            self.recovery.tlp.episode_over()
            self.stats["tlp_loss_detected"] += 1
            self.scoreboard.mark_unsacked_lost(self.snd.una, sacked.high)
            if self.recovery.phase is None:
                self._enter_fast_recovery(now)
