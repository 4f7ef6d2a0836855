"""TcpConnection's three-way handshake and the options negotiated in it.

SYN-SENT processing (including simultaneous open), taking the peer's
ISN, MSS, window scale, SACK-permitted and timestamps from its SYN, the
handshake RTT sample, and building our SYN or SYN-ACK.
"""
from __future__ import annotations

import errno

from stack.tcp.config import DEFAULT_SEND_MSS
from stack.tcp.conn_defs import (
    Segment,
    SYN_SENT,
    SYN_RECEIVED,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN,
    SYN,
    RST,
    ACK,
    _F_SYN_ACK,
    _MIN_SND_MSS,
    _TS_OPTION_LEN,
)
from stack.tcp.seq import MASK, unwrap
from stack.wire.tcp import TcpRepr


class HandshakeMixin:
    """Opening a :class:`~stack.tcp.connection.TcpConnection`.

    Methods only: the state is in the owner objects the connection composes.
    """

    def _receive_syn_sent(self, seg: TcpRepr, payload, now: float) -> None:
        flags = seg.flags
        ack_ok = False
        ack = 0
        if flags & ACK:
            ack = unwrap(seg.ack, self.snd.una)
            if ack <= self.iss or ack > self.snd.nxt:
                # Not for our SYN: <SEQ=SEG.ACK><CTL=RST> (unless it is a RST).
                if not flags & RST:
                    self._queue_rst(seg.ack)
                self.stats["drop_bad_ack"] += 1
                return
            ack_ok = True
        if flags & RST:
            if ack_ok:
                self.stats["rst_in"] += 1
                self._fail(errno.ECONNREFUSED)
            else:
                self.stats["drop_rst_without_ack"] += 1
            return
        if not flags & SYN:
            self.stats["drop_no_syn"] += 1
            return
        self._last_rx = now
        self._accept_syn(seg)
        if ack_ok:
            self.snd.una = ack
            self.snd.set_window(seg.window, self.irs, ack)  # never scaled in a SYN (RFC 7323 2.2)
            self._take_handshake_rtt(seg, now)
            self._established(now)
            self._ack_now = True
            self._want_output = True
            if len(payload) or flags & FIN:
                self._receive_text(self.rcv.nxt, payload, bool(flags & FIN), now)
        else:
            # Simultaneous open (MUST-10): answer with SYN,ACK from our ISS.
            self._set_state(SYN_RECEIVED)
            self.snd.set_window(seg.window, self.irs, self.iss)
            self._syn_pending = True
            self.timers.retransmit.stop()
            self._want_output = True
            self.stats["simultaneous_open"] += 1

    def _accept_syn(self, seg: TcpRepr) -> None:
        """Take the peer's ISN and options from its SYN."""
        cfg = self.config
        self.irs = seg.seq
        self.sack_ok = cfg.sack and seg.sack_permitted
        self.ts_ok = cfg.timestamps and seg.timestamps is not None
        if self.ts_ok:
            self.ts_recent = seg.timestamps[0]
        self.ws_ok = cfg.window_scaling and seg.window_scale is not None
        if self.ws_ok:
            self.snd.wscale = min(seg.window_scale, 14)  # RFC 7323 2.3
            self.rcv.wscale = cfg.window_shift
        else:
            self.snd.wscale = self.rcv.wscale = 0
        peer_mss = seg.mss if seg.mss is not None else DEFAULT_SEND_MSS
        opt = _TS_OPTION_LEN if self.ts_ok else 0
        # MUST-16: Eff.snd.MSS = min(SendMSS + 20, MMS_S) - TCP header - IP options.
        self.snd_mss = max(min(peer_mss, cfg.mss), _MIN_SND_MSS) - opt
        self.rcv.mss = min(cfg.mss - opt, DEFAULT_SEND_MSS)
        self.cc.set_mss(self.snd_mss)
        self.rcv.open(seg.seq + 1, min(cfg.rcvbuf, 65535))

    def _take_handshake_rtt(self, seg: TcpRepr, now: float) -> None:
        if self.ts_ok and seg.timestamps and seg.timestamps[1]:
            self._ts_sample(seg.timestamps[1], now)
        elif self.timed.seq is not None and not self.timed.syn_retransmitted:
            self.rtt.sample(now - self.timed.sent_at)
        self.timed.cancel()

    def _established(self, now: float) -> None:
        self._set_state(ESTABLISHED)
        self._connected = True
        self.timers.retransmit.retries = 0
        self.timers.retransmit.stop()
        self._syn_pending = False
        if self.timed.syn_retransmitted:
            self.rtt.reset_after_syn_retransmit()
        self._last_ack_rx = now
        if self.snd.fin_queued:
            self._set_state(FIN_WAIT_1)  # a CLOSE that waited for the handshake
        self._want_output = True
        self._notify()

    def _syn_segment(self, now: float) -> Segment:
        cfg = self.config
        window = min(cfg.rcvbuf, 0xFFFF)
        if self.state is SYN_SENT:
            r = TcpRepr(
                self._lport,
                self._rport,
                self.iss,
                0,
                SYN,
                window,
                mss=cfg.mss,
                window_scale=cfg.window_shift if cfg.window_scaling else None,
                sack_permitted=cfg.sack,
                timestamps=(self._ts_clock(now), 0) if cfg.timestamps else None,
            )
        else:  # SYN-RECEIVED: options only as the peer offered them
            r = TcpRepr(
                self._lport,
                self._rport,
                self.iss,
                self.rcv.nxt & MASK,
                _F_SYN_ACK,
                window,
                mss=cfg.mss,
                window_scale=self.rcv.wscale if self.ws_ok else None,
                sack_permitted=self.sack_ok,
                timestamps=(self._ts_clock(now), self.ts_recent) if self.ts_ok else None,
            )
            self.rcv.last_ack_sent = self.rcv.nxt
        self.segs_out += 1
        return r, b""
