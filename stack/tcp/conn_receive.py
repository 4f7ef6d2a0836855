"""TcpConnection's receive path: segment arrival (RFC 9293 3.10.7).

Header prediction for in-order data and pure ACKs, then the steps of
3.10.7.4 one method each: the sequence number (PAWS, RFC 7323, and the
acceptability test), RST, SYN (both with RFC 5961 challenge ACKs), ACK,
URG, the text (in order and out of order) and the FIN.
"""
from __future__ import annotations

import errno

from stack.tcp.conn_defs import (
    CLOSED,
    SYN_SENT,
    SYN_RECEIVED,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    CLOSE_WAIT,
    CLOSING,
    LAST_ACK,
    TIME_WAIT,
    FIN_BIT,
    SYN_BIT,
    RST_BIT,
    ACK_BIT,
    URG_BIT,
    _HALF,
)
from stack.tcp.seq import MASK, unwrap
from stack.tcp.state import AFTER_FIN, RECEIVING
from stack.wire.tcp import TcpRepr


class ReceiveMixin:
    """Segment arrival for :class:`~stack.tcp.connection.TcpConnection`.

    Methods only: the state is in the owner objects the connection composes.
    """

    def receive_segment(self, seg: TcpRepr, payload, now: float) -> None:
        """Process one arriving segment (RFC 9293 3.10.7). Never raises for bad input."""
        self.segs_in += 1
        st = self.state
        if st is ESTABLISHED:
            # Fast path: in-order data or a pure ACK, nothing special (the
            # common case of a bulk transfer in either direction).
            flags = int(seg.flags)
            if (
                flags & 0x37 == 0x10
                and not self.rx.ooo
                and self.rx.ooo_fin is None
                and not self.recovery.phase
                and self.recovery.tlp.high is None
            ):
                # (0x37: exactly ACK among FIN, SYN, RST, ACK, URG)
                seq = unwrap(seg.seq, self.rcv.nxt)
                if seq == self.rcv.nxt and self._fast_path(seg, seq, payload, now):
                    return
            self._receive_synchronized(seg, payload, now)
            return
        if st is SYN_SENT:
            self._receive_syn_sent(seg, payload, now)
        elif st is not CLOSED:
            self._receive_synchronized(seg, payload, now)

    def _fast_path(self, seg: TcpRepr, seq: int, payload, now: float) -> bool:
        """Header prediction: return False to fall back to the full rules."""
        ts = seg.timestamps
        if self.ts_ok:
            if ts is None or (ts[0] - self.ts_recent) & MASK >= _HALF:
                return False
        snd = self.snd
        snd_una = snd.una
        ack = unwrap(seg.ack, snd_una)
        if ack < snd_una or ack > snd.nxt or seg.sack_blocks:
            return False
        n = len(payload)
        rcv = self.rcv
        if n and (self.rx.read_shutdown or seq + n > rcv.adv):
            return False
        window = seg.window << snd.wscale
        if ack == snd_una and n == 0 and window == snd.wnd and snd.nxt != snd_una:
            return False  # a duplicate ACK: the full path counts it
        self._last_rx = now
        keepalive = self.timers.keepalive
        if keepalive.at is not None or keepalive.probes:
            keepalive.reset()
        if ts is not None and seq <= rcv.last_ack_sent:
            self.ts_recent = ts[0]
        if snd.update_window(seq, ack, window) > 0:
            self._want_output = True
        self.timers.persist.probes = 0
        self._last_ack_rx = now
        if ack > snd_una:
            self._new_ack(seg, ack, now)
        if n:
            self.rx.data += payload  # (not after SHUT_RD: the full path takes that)
            rcv.take(n)
            self.bytes_received += n
            if rcv.ack_due:
                self._ack_now = True
                self._want_output = True
            else:
                self.timers.delayed_ack.start_if_stopped(now + self.config.delayed_ack)
            self._notify()
        return True

    def _receive_synchronized(self, seg: TcpRepr, payload, now: float) -> None:
        """Segment arrival in a synchronized state (and SYN-RECEIVED), RFC 9293 3.10.7.4.

        One method per step of the RFC; each returns whether processing goes on.
        """
        flags = int(seg.flags)
        seq = unwrap(seg.seq, self.rcv.nxt)
        plen = len(payload)
        if self.state is SYN_RECEIVED and flags & SYN_BIT and not flags & RST_BIT and seq == self.irs:
            if self._repeated_syn(seg, seq, flags, now):
                return
        if not self._check_sequence(seg, seq, plen, flags, now):  # first
            return
        if flags & RST_BIT:  # second
            self._check_rst(seq, now)
            return
        # Third, security: not implemented (RFC 9293 3.10.7.4 allows ignoring it).
        if flags & SYN_BIT:  # fourth
            self._check_syn(now)
            return
        fin = flags & FIN_BIT
        if not self._check_ack(seg, seq, plen, flags, now):  # fifth
            return
        if not self._more_after_ack(fin, now):
            return
        if flags & URG_BIT:  # sixth
            self._check_urg(seg, seq)
        if plen or fin:  # seventh and eighth
            self._segment_text(seq, payload, fin, now)

    def _repeated_syn(self, seg: TcpRepr, seq: int, flags: int, now: float) -> bool:
        """SYN-RECEIVED and the peer's SYN again: True when that settled the segment."""
        if not flags & ACK_BIT:
            # The peer retransmitted its SYN: our SYN-ACK was lost; resend it.
            self._syn_pending = True
            self._want_output = True
            self.stats["syn_retransmit_seen"] += 1
            return True
        if not self._passive and unwrap(seg.ack, self.snd.una) == self.snd.nxt:
            # Simultaneous open, step 6 of RFC 9293 figure 8: the peer's SYN,ACK
            # completes our handshake (its SYN is old news; as Linux does).
            self._take_handshake_rtt(seg, now)
            self.snd.una = self.snd.nxt
            self._established(now)
            self.snd.set_window(seg.window, seq, self.snd.una)
            return True
        return False

    def _check_sequence(self, seg: TcpRepr, seq: int, plen: int, flags: int, now: float) -> bool:
        """First step: PAWS (RFC 7323 5.3) and the acceptability test; False drops the segment."""
        rst = flags & RST_BIT
        ts = seg.timestamps
        if self.ts_ok and not rst:  # (PAWS and the TSopt requirement never apply to RSTs)
            if ts is None:
                self.stats["drop_no_timestamp"] += 1
                return False
            if (ts[0] - self.ts_recent) & MASK >= _HALF and not self._disordered_ack(seg, seq, plen, flags):
                self.stats["drop_paws"] += 1
                self._send_dupack(now, pure=False)
                return False
        seglen = plen + (1 if flags & SYN_BIT else 0) + (1 if flags & FIN_BIT else 0)
        if not self.rcv.acceptable(seq, seglen):
            self._unacceptable(seg, seq, plen, seglen, flags, now)
            return False
        self._last_rx = now
        self.timers.keepalive.reset()
        if ts is not None and self.ts_ok and seq <= self.rcv.last_ack_sent and (ts[0] - self.ts_recent) & MASK < _HALF:
            self.ts_recent = ts[0]  # RFC 7323 4.3 (never backwards: a disordered ACK is older)
        return True

    def _unacceptable(self, seg: TcpRepr, seq: int, plen: int, seglen: int, flags: int, now: float) -> None:
        """A segment outside the window: dropped, and usually answered with an ACK."""
        if flags & RST_BIT:
            self.stats["drop_rst_out_of_window"] += 1
            return
        self.stats["drop_out_of_window"] += 1
        rn = self.rcv.nxt
        if self.state is TIME_WAIT and flags & FIN_BIT:
            self.timers.close.start(now + self.config.time_wait)  # the peer's FIN again
        if self.rcv.available == 0 and seq == rn and flags & ACK_BIT and not flags & SYN_BIT:
            # RFC 9293: with a zero window, still take valid ACKs (and URG, RST).
            self._process_ack_only(seg, now)
        if plen and seq < rn and self.sack_ok:
            self.rx.dsack = (seq, min(seq + plen, rn))  # tell the sender it was a duplicate
        self._send_dupack(now, pure=seglen == 0)

    def _check_rst(self, seq: int, now: float) -> None:
        """Second step: RST (RFC 5961 3.2: an exact match resets, otherwise challenge)."""
        if seq == self.rcv.nxt:
            self.stats["rst_in"] += 1
            self._on_reset()
        else:
            self.stats["rst_challenged"] += 1
            self._challenge_ack(now)

    def _check_syn(self, now: float) -> None:
        """Fourth step: a SYN in a synchronized state (RFC 5961 4.2)."""
        if self.state is SYN_RECEIVED and self._passive:
            # Back to LISTEN: this embryonic connection is dropped.
            self.stats["syn_in_syn_received"] += 1
            self._to_closed()
            return
        self.stats["syn_challenged"] += 1
        self._challenge_ack(now)

    def _check_ack(self, seg: TcpRepr, seq: int, plen: int, flags: int, now: float) -> bool:
        """Fifth step: the ACK field; False when the segment is done with."""
        if not flags & ACK_BIT:
            self.stats["drop_no_ack"] += 1
            return False
        ack = unwrap(seg.ack, self.snd.una)
        if self.state is SYN_RECEIVED and not self._ack_of_syn(seg, seq, ack, now):
            return False
        if ack > self.snd.nxt:
            if self.snd.probe_end is not None and ack <= self.snd.probe_end:
                self.snd.nxt = ack  # the peer took our zero-window probe byte
                self.snd.probe_end = None
            else:
                self.stats["drop_ack_unsent"] += 1
                self._challenge_ack(now)
                return False
        if ack < self.snd.una - self.snd.max_wnd:
            self.stats["drop_ack_too_old"] += 1
            self._challenge_ack(now)
            return False
        self._process_ack(seg, seq, ack, plen, flags & FIN_BIT, now)
        return True

    def _ack_of_syn(self, seg: TcpRepr, seq: int, ack: int, now: float) -> bool:
        """SYN-RECEIVED: an ACK of our SYN makes it ESTABLISHED; False when it does not."""
        if not self.snd.una < ack <= self.snd.nxt:
            self._queue_rst(seg.ack)
            self.stats["drop_bad_ack"] += 1
            return False
        if self.listener is not None and not self.listener._admit(self):
            # Accept queue full: act as if the ACK was lost (Linux).
            self.stats["drop_accept_queue_full"] += 1
            return False
        self._take_handshake_rtt(seg, now)
        self.snd.una = ack
        self._established(now)
        self.snd.set_window(seg.window << self.snd.wscale, seq, ack)
        return True

    def _more_after_ack(self, fin: int, now: float) -> bool:
        """After the ACK: may the rest of the segment (URG, text, FIN) still matter?"""
        st = self.state
        if st is CLOSED or st is CLOSING or st is LAST_ACK:
            return False  # nothing more to take from this segment
        if st is TIME_WAIT:
            if fin:
                self._ack_now = True
                self._want_output = True
                self.timers.close.start(now + self.config.time_wait)
            return False
        return True

    def _check_urg(self, seg: TcpRepr, seq: int) -> None:
        """Sixth step: the urgent pointer (MUST-31), while data may still arrive."""
        if self.state not in RECEIVING:
            return
        up = seq + seg.urgent
        if self.rx.urgent is None or up > self.rx.urgent:
            self.rx.urgent = up
            self.stats["urgent_in"] += 1
            self._notify()

    def _segment_text(self, seq: int, payload, fin: int, now: float) -> None:
        """Seventh and eighth steps: trim the text to the window, then take it and the FIN."""
        rn = self.rcv.nxt
        if seq < rn:
            payload = payload[rn - seq :]
            seq = rn
        right = self.rcv.adv
        if seq + len(payload) > right:
            payload = payload[: max(0, right - seq)]
            fin = 0  # the FIN lies beyond the window: not taken
        if self.state in RECEIVING:
            if self._orphan and len(payload):
                # Data for a closed socket: nobody will read it (RFC 9293 SHLD-3, Linux).
                self.stats["rst_data_after_close"] += 1
                self.abort()
                self.error = errno.ECONNRESET
                return
            self._receive_text(seq, payload, bool(fin), now)
        elif fin:
            self._ack_now = True  # CLOSE-WAIT and later: a repeated FIN, ACK it
            self._want_output = True

    def _disordered_ack(self, seg: TcpRepr, seq: int, plen: int, flags: int) -> bool:
        """A duplicate ACK that was merely reordered, exempt from PAWS (as Linux does).

        Only a pure ACK at RCV.NXT that repeats SND.UNA, keeps the window and
        is older than TS.Recent by less than one RTO (in TSval milliseconds):
        it carries SACK information, and dropping it would hide a loss.
        """
        if plen or flags & 0x07 or seq != self.rcv.nxt:
            return False
        if unwrap(seg.ack, self.snd.una) != self.snd.una or (seg.window << self.snd.wscale) != self.snd.wnd:
            return False
        age_ms = (self.ts_recent - seg.timestamps[0]) & MASK
        if age_ms > self.rtt.rto * 1000:
            return False
        self.stats["paws_disordered_ack"] += 1
        return True

    def _process_ack_only(self, seg: TcpRepr, now: float) -> None:
        ack = unwrap(seg.ack, self.snd.una)
        if self.snd.una <= ack <= self.snd.nxt:
            seq = unwrap(seg.seq, self.rcv.nxt)
            self._process_ack(seg, seq, ack, 0, 0, now)

    def _receive_text(self, seq: int, payload, fin: bool, now: float) -> None:
        """Seventh/eighth steps: queue data in order or out of order, then the FIN."""
        n = len(payload)
        rn = self.rcv.nxt
        if seq == rn:
            had_ooo = bool(self.rx.ooo)
            if n:
                self.rx.take(payload)
                self.rcv.take(n)
                rn = seq + n
                self.bytes_received += n
            if had_ooo:
                moved = self.rx.take_ready(rn)
                rn += moved
                self.bytes_received += moved
                self.rcv.nxt = rn
                self._ack_now = True  # a hole was (partly) filled: ACK at once
                self.stats["ooo_filled"] += 1
            fin = fin and seq + n == rn  # (a FIN below data held out of order is bogus)
            if self.rx.ooo_fin is not None and rn == self.rx.ooo_fin:
                fin = True
                self.rx.ooo_fin = None
            if fin:
                self._on_fin(now)
            elif self._ack_now or self.rx.ooo:
                self._ack_now = True
            elif self.rcv.ack_due:
                self._ack_now = True
            elif n:
                self.timers.delayed_ack.start_if_stopped(now + self.config.delayed_ack)
            if n or had_ooo:
                self._notify()
        else:
            # Out of order: keep it (bounded), remember a FIN, and send a dupACK now.
            if n:
                added = self.rx.ooo.add(seq, payload)
                if added < 0:
                    self.stats["drop_ooo_full"] += 1
                else:
                    self.stats["ooo_segments"] += 1
                    if added == 0 and self.sack_ok:
                        self.rx.dsack = (seq, seq + n)
            if fin:
                self.rx.ooo_fin = seq + n
            self._ack_now = True
        if self._ack_now:
            self._want_output = True

    def _on_fin(self, now: float) -> None:
        if self.rx.fin_received:
            self._ack_now = True
            return
        self.rx.fin_received = True
        self.rcv.nxt += 1
        self._ack_now = True
        self._want_output = True
        if self.state is FIN_WAIT_1 and self.snd.fin_acked:
            self._enter_time_wait(now)
        else:
            self._follow(AFTER_FIN, now)
        self._notify()

    def _on_reset(self) -> None:
        st = self.state
        if st is SYN_RECEIVED:
            if self._passive:
                self._to_closed()  # back to LISTEN: the listener forgets it
            else:
                self._fail(errno.ECONNREFUSED)
        elif st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._fail(errno.ECONNRESET)
        else:
            self._to_closed()

    def _send_dupack(self, now: float, pure: bool) -> None:
        """An ACK for an unacceptable segment; pure ACKs are rate-limited (as Linux)."""
        if pure and not self.ack_limits.oow_ack_allowed(now, self.config.oow_ack_interval):
            self.stats["oow_ack_suppressed"] += 1
            return
        self._ack_now = True
        self._want_output = True

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 challenge ACK, token-bucket limited per connection (section 7)."""
        cfg = self.config
        if not self.ack_limits.challenge_allowed(now, cfg.challenge_ack_rate, cfg.challenge_ack_burst):
            self.stats["challenge_ack_suppressed"] += 1
            return
        self.stats["challenge_acks"] += 1
        self._ack_now = True
        self._want_output = True
