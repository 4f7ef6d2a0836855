"""TcpConnection's timers: :meth:`poll_at`, :meth:`poll` and what expires.

The deadlines themselves are :mod:`stack.tcp.timers` objects.

Retransmission (RFC 6298, with SYN retries and zero-window stalls),
persist (zero-window probing), keepalive, delayed ACK, tail loss probe and
the close timer (TIME-WAIT, FIN-WAIT-2 of an orphan).
"""
from __future__ import annotations

import errno

from stack.tcp.recovery import FAST, LOSS
from stack.tcp.conn_defs import (
    Segment,
    CLOSED,
    SYN_SENT,
    SYN_RECEIVED,
    ESTABLISHED,
    FIN_WAIT_2,
    CLOSE_WAIT,
    _F_ACK,
)


class TimerMixin:
    """Timers for :class:`~stack.tcp.connection.TcpConnection`.

    Methods only: the state is in the owner objects the connection composes.
    """

    def poll_at(self) -> float | None:
        """When :meth:`poll` has work: 0.0 for "now", None for "only on input"."""
        if self._want_output or self._ctl_out or self._ack_now:
            return 0.0
        t = self.timers.earliest()
        if self.config.keepalive and self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            ka = self._keepalive_deadline()
            if t is None or ka < t:
                t = ka
        return t

    def _keepalive_deadline(self) -> float:
        ka = self.timers.keepalive
        ka.start_if_stopped(self._last_rx + self.config.keepalive_idle)
        return ka.at

    def poll(self, now: float) -> list[Segment]:
        """Run due timers and return the segments to transmit now."""
        out: list[Segment] = []
        due = self.timers.earliest()
        if due is not None and now >= due:
            self._run_timers(now)
        if self.state is not CLOSED:
            if self.config.keepalive and self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
                if now >= self._keepalive_deadline():
                    self._on_keepalive(now, out)
        if self._ctl_out:
            out.extend(self._ctl_out)
            self._ctl_out.clear()
        self._want_output = False  # (after the timers, which may ask for output)
        if self.state is not CLOSED:
            self._output(now, out)
        return out

    def _run_timers(self, now: float) -> None:
        """Whichever of the timers has expired, in this order."""
        timers = self.timers
        if timers.close.take_expired(now):
            self.stats["closed_by_timer"] += 1
            self._to_closed()
        if self.state is CLOSED:
            return
        if timers.retransmit.take_expired(now):
            self._on_rto(now)
        if timers.persist.take_expired(now):
            self._on_persist(now)
        if timers.tail_probe.take_expired(now):
            self._on_tlp(now)
        if timers.delayed_ack.take_expired(now):
            self._ack_now = True

    def _on_rto(self, now: float) -> None:
        self.recovery.tlp.cancel()
        self.stats["timeouts"] += 1
        st = self.state
        if st is SYN_SENT or st is SYN_RECEIVED:
            self._syn_timeout()
        elif self.snd.nxt > self.snd.una:
            self._data_timeout(now)

    def _syn_timeout(self) -> None:
        """The SYN (or SYN-ACK) went unanswered: resend it, or give up after the retries."""
        cfg = self.config
        limit = cfg.syn_retries if self.state is SYN_SENT else cfg.synack_retries
        if self.timers.retransmit.retries >= limit:
            if self._passive:
                self.stats["synack_timeout"] += 1
                self._to_closed()
            else:
                self._fail(self._soft_error or errno.ETIMEDOUT)
            return
        self.timers.retransmit.retries += 1
        self.rtt.on_timeout()
        self.timed.syn_retransmitted = True
        self.timed.cancel()
        self._syn_pending = True
        self.stats["retransmits"] += 1
        self._want_output = True

    def _data_timeout(self, now: float) -> None:
        """RFC 6298 5.4-5.7: back off, and resend from SND.UNA (or give up)."""
        cfg = self.config
        self.rtt.on_timeout()
        self.timed.cancel()
        if self.snd.wnd == 0:
            # The peer shrank its window to zero with data out: our retransmissions
            # are window probes and do not end the connection while it answers
            # (MUST-37); without any ACK for max_rto it does end (as Linux).
            if now - self._last_ack_rx > cfg.max_rto:
                self._fail(self._soft_error or errno.ETIMEDOUT)
                return
            head = min(self.snd.una + self.snd_mss, self.snd.nxt)
            self.scoreboard.mark_lost_again(self.snd.una, head)
        else:
            self.timers.retransmit.retries += 1
            if self.timers.retransmit.retries > cfg.max_retries:
                self._fail(self._soft_error or errno.ETIMEDOUT)
                return
            self._enter_loss_recovery(now)
        self._force_rtx = True
        self.timers.retransmit.start(now + self.rtt.rto)
        self._want_output = True

    def _enter_loss_recovery(self, now: float) -> None:
        """RFC 5681 3.1 / 6298 5.5: cwnd to one segment, everything out is lost."""
        rec = self.recovery
        if rec.phase is None:
            rec.undo.start(self.cc, self.snd.una, self.snd.nxt)
            self.cc.on_rto(now, self._pipe())
        else:
            rec.undo.no_eifel()  # the episode goes on
            if rec.phase == FAST or self.timers.retransmit.retries > 1:
                # In fast recovery, or the same data timing out again with no ACK
                # between: ssthresh was set for this loss already (as Linux).
                self.cc.on_rto_in_recovery(now)
            else:  # loss recovery made progress (ACKs) and timed out anew: reduce again
                self.cc.on_rto(now, self._pipe())
        rec.enter(LOSS, self.snd.nxt)
        rec.reset_dupacks()
        self.scoreboard.forget_retransmissions()
        # As Linux's tcp_enter_loss: all unSACKed data is lost.
        self.scoreboard.mark_unsacked_lost(self.snd.una, self.snd.nxt)

    def _on_persist(self, now: float) -> None:
        if self.snd.nxt != self.snd.una or not self.snd.unsent:
            self.timers.persist.backoff = 0
            return
        self.timers.persist.probes += 1
        if self.timers.persist.probes > self.config.max_retries:
            self._fail(self._soft_error or errno.ETIMEDOUT)
            return
        self.timers.persist.back_off(self.rtt.rto, self.config.max_rto)
        self._force_send = True
        self._want_output = True

    def _on_keepalive(self, now: float, out: list[Segment]) -> None:
        cfg = self.config
        if self.timers.keepalive.probes == 0 and now < self._last_rx + cfg.keepalive_idle:
            self.timers.keepalive.start(self._last_rx + cfg.keepalive_idle)
            return
        if self.snd.nxt != self.snd.una or self.snd.unsent:
            # Data is moving (or stuck): the retransmission timer watches it.
            self.timers.keepalive.start(now + cfg.keepalive_idle)
            return
        if self.timers.keepalive.probes >= cfg.keepalive_count:
            self.stats["keepalive_timeout"] += 1
            self._fail(self._soft_error or errno.ETIMEDOUT)
            return
        self.timers.keepalive.probes += 1
        self.stats["keepalives"] += 1
        # SEG.SEQ = SND.NXT - 1, no data: the peer must answer with an ACK (SHLD-12).
        out.append(self._make(self.snd.nxt - 1, _F_ACK, b"", now))
        self.timers.keepalive.start(now + cfg.keepalive_interval)
