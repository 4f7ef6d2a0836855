"""TcpConnection's ACK processing: what an acceptable ACK does.

Window updates (SND.WL1/WL2), SACK blocks into the scoreboard, new data
acknowledged (buffer, RTT, congestion window, state moves) and duplicate
ACKs; ``_pipe`` is RFC 6675's estimate of the bytes in flight.
"""
from __future__ import annotations

from stack.tcp.conn_defs import FIN_WAIT_1, LAST_ACK, _HALF
from stack.tcp.recovery import FAST
from stack.tcp.seq import MASK
from stack.tcp.state import AFTER_FIN_ACKED
from stack.wire.tcp import TcpRepr


class AckMixin:
    """ACK processing for :class:`~stack.tcp.connection.TcpConnection`.

    Methods only: the state is in the owner objects the connection composes.
    """

    def _process_ack(self, seg: TcpRepr, seq: int, ack: int, plen: int, fin, now: float) -> None:
        """RFC 9293 fifth step for ESTABLISHED and later: window, SACK, new data acked."""
        snd_una = self.snd.una
        self.timers.persist.probes = 0
        self._last_ack_rx = now
        window = seg.window << self.snd.wscale
        window_changed = False
        if ack >= snd_una:
            change = self.snd.update_window(seq, ack, window)
            window_changed = change != 0
            if change > 0:
                self._want_output = True
                self.timers.persist.backoff = 0
        newly_sacked = 0
        dsack = False
        if self.sack_ok and seg.sack_blocks:
            dsack = self._is_dsack(seg.sack_blocks, ack)
            newly_sacked = self.scoreboard.take_sack(seg.sack_blocks, self.snd.una, self.snd.nxt)
            if dsack and self.recovery.undo.saved_cc is not None:
                self._dsack_undo(seg.sack_blocks[0], now)
        if ack > snd_una:
            self._new_ack(seg, ack, now)
        elif (
            ack == snd_una
            and self.snd.nxt > snd_una
            and plen == 0
            and not fin
            and (newly_sacked > 0 if self.sack_ok else not window_changed)
        ):
            self._dupack(now)
        if self.sack_ok and self.scoreboard.sacked and self.snd.nxt > self.snd.una:
            if self.recovery.phase is None and self._is_lost(self.snd.una):
                self._enter_fast_recovery(now)
            elif self.recovery.phase == FAST:
                self._mark_lost_sack()
                if newly_sacked and self.scoreboard.tracks_retransmits:
                    found = self.scoreboard.detect_lost_retransmits(self.snd.una)
                    if found:
                        self.stats["lost_retransmits"] += found
        if self.recovery.tlp.high is not None:
            self._tlp_episode(ack, dsack, now)

    def _new_ack(self, seg: TcpRepr, ack: int, now: float) -> None:
        """SND.UNA moved to ``ack``: free the buffer, measure, grow cwnd, move states."""
        acked = ack - self.snd.una
        self.bytes_acked += self.snd.acked_to(ack)
        self.scoreboard.acked_to(ack)
        # RTT (RFC 7323 RTTM, else the one timed segment).
        ts = seg.timestamps
        if self.ts_ok and ts is not None and ts[1]:
            self._ts_sample(ts[1], now)
        elif self.timed.seq is not None:
            rtt = self.timed.sample(ack, now)
            if rtt is not None:
                self.rtt.sample(rtt)
        timers = self.timers
        timers.retransmit.retries = 0
        timers.persist.backoff = 0
        undo = self.recovery.undo
        if undo.tsval is not None and ack > undo.una:
            self._eifel_check(ts, now)
        # RFC 6298 5.2/5.3: stop the timer when all is acked, else restart it.
        if self.snd.nxt > ack:
            timers.retransmit.start(now + self.rtt.rto)
        else:
            timers.retransmit.stop()
        self._arm_tlp(now)
        self._ack_grows_cwnd(ack, acked, now)
        self._want_output = True
        if self.snd.fin_queued and ack > self.snd.fin_seq and not self._fin_acked(now):
            return
        self._notify()

    def _ack_grows_cwnd(self, ack: int, acked: int, now: float) -> None:
        """What new data acknowledged does to cwnd and to a recovery episode."""
        rec = self.recovery
        phase = rec.phase
        if phase is None:
            if rec.dupacks or rec.dup_bytes:
                rec.reset_dupacks()
            if self.cwnd_use.allows_growth(self.cc.cwnd, self.cc.ssthresh):
                self.cc.on_ack(acked, now, self.rtt.srtt)
        elif phase == FAST:
            if ack >= rec.recover:
                rec.exit()
                self.cc.on_recovery_exit(now, self._pipe())
            elif not self.sack_ok:
                # RFC 6582 partial ACK: retransmit the next hole, deflate by what left.
                rec.deflate(acked, self.snd_mss)
                self.scoreboard.mark_lost(ack, min(ack + self.snd_mss, self.snd.nxt))
                self._force_rtx = True
            else:
                # With SACK too: the new head is a hole the scoreboard may not
                # call lost yet (nothing SACKed above it); retransmit it now.
                first = self.scoreboard.first_sacked(self.snd.nxt)
                if first > ack:
                    self.scoreboard.mark_lost(ack, min(ack + self.snd_mss, first))
        else:  # LOSS: slow start again after an RTO
            self.cc.on_ack(acked, now, self.rtt.srtt)
            if ack >= rec.recover:
                rec.exit_loss()

    def _fin_acked(self, now: float) -> bool:
        """Our FIN is acknowledged: the state moves on. False when the connection is gone."""
        st = self.state
        self._follow(AFTER_FIN_ACKED, now)
        if st is FIN_WAIT_1 and self._orphan:
            self.timers.close.start(now + self.config.fin_wait2_timeout)
        return st is not LAST_ACK  # (LAST-ACK: now CLOSED, and _to_closed told the owner)

    def _ts_sample(self, tsecr: int, now: float) -> None:
        d = (self._ts_clock(now) - tsecr) & MASK
        if d < _HALF:
            self.rtt.sample(d / 1000.0)

    def _dupack(self, now: float) -> None:
        rec = self.recovery
        self.stats["dupacks_in"] += 1
        # Without SACK each dupACK means a segment left the network (folded into pipe).
        rec.count_dupack(0 if self.sack_ok else self.snd_mss, self.snd.nxt - self.snd.una)
        if rec.phase is None and rec.dupacks >= self.config.dupthresh:
            self._enter_fast_recovery(now)
        self._want_output = True

    def _pipe(self) -> int:
        """Bytes believed in the network (RFC 6675 SetPipe, by byte ranges)."""
        p = self.scoreboard.pipe(self.snd.nxt - self.snd.una) - self.recovery.dup_bytes
        return p if p > 0 else 0
