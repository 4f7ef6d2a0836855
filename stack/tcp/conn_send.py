"""TcpConnection's send path: what :meth:`poll` puts on the wire.

Building segments (ACK, advertised window with receiver SWS avoidance,
timestamps, SACK blocks), retransmitting lost ranges, segmenting new data
under cwnd and the peer's window (Nagle, sender SWS avoidance, zero-window
probes), urgent data and RSTs.
"""
from __future__ import annotations

from stack.tcp.conn_defs import (
    Segment,
    SYN_SENT,
    SYN_RECEIVED,
    FIN_WAIT_2,
    TIME_WAIT,
    FIN,
    RST,
    PSH,
    URG,
    _F_ACK,
    _FLAG,
    _SACK_LIMIT,
    _SACK_LIMIT_TS,
    _sack_option_len,
)
from stack.tcp.state import SENDING
from stack.tcp.seq import MASK
from stack.wire.tcp import TcpRepr


class SendMixin:
    """Segment output for :class:`~stack.tcp.connection.TcpConnection`.

    Methods only: the state is in the owner objects the connection composes.
    """

    def _ts_clock(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & MASK

    def _make(self, seq: int, flags, payload: bytes, now: float) -> Segment:
        """Build an outgoing segment with ACK, window and options; it carries our ACK."""
        rcv = self.rcv
        window = rcv.window_field(self.config.rcvbuf - len(self.rx.data))
        r = TcpRepr(self._lport, self._rport, seq & MASK, rcv.nxt & MASK, flags, window)
        if self.ts_ok:
            r.timestamps = (self._ts_clock(now), self.ts_recent)
        rx = self.rx
        if self.sack_ok and (rx.dsack is not None or rx.ooo):  # something for SACK blocks
            limit = _SACK_LIMIT_TS if self.ts_ok else _SACK_LIMIT  # what fits in 40 option bytes
            blocks = rx.sack_blocks(limit)
            r.sack_blocks = tuple((s & MASK, e & MASK) for s, e in blocks)
        rcv.acked()
        self._ack_now = False
        delayed_ack = self.timers.delayed_ack
        if delayed_ack.at is not None:
            delayed_ack.stop()
        self.segs_out += 1
        return r, payload

    def _output(self, now: float, out: list[Segment]) -> None:
        st = self.state
        if st is SYN_SENT or st is SYN_RECEIVED:
            if self._syn_pending:
                self._syn_pending = False
                self._ack_now = False  # a SYN-ACK carries the ACK
                out.append(self._syn_segment(now))
                if self.snd.nxt == self.iss:
                    self.snd.nxt = self.iss + 1
                if self.timers.retransmit.at is None:
                    self.timers.retransmit.start(now + self.rtt.rto)
                if self.timed.seq is None and not self.timed.syn_retransmitted:
                    self.timed.start(self.iss + 1, now)
            elif self._ack_now:
                if st is SYN_RECEIVED:  # an unacceptable segment: <SEQ=SND.NXT><ACK=RCV.NXT>
                    out.append(self._make(self.snd.nxt, _F_ACK, b"", now))
                self._ack_now = False
            return
        if st is TIME_WAIT:
            if self._ack_now:
                out.append(self._make(self.snd.nxt, _F_ACK, b"", now))
            return
        if st in SENDING:
            self._send_data(now, out)
        if st is FIN_WAIT_2 and self._orphan:
            self.timers.close.start_if_stopped(now + self.config.fin_wait2_timeout)
        if self._ack_now:
            out.append(self._make(self.snd.nxt, _F_ACK, b"", now))

    def _seg_mss(self) -> int:
        """The payload that fits the next data segment (as Linux's tcp_current_mss).

        The MSS counts data only; options other than the fixed header take
        from it (RFC 9293 3.7.1, RFC 6691). ``snd_mss`` already leaves room
        for the timestamps every segment carries; the SACK blocks that
        :meth:`_make` adds come and go with out-of-order data (and a D-SACK
        goes on one segment only), so their bytes are taken off here, for
        each segment. The count is exactly what :meth:`_make` emits. With
        ``snd_mss`` at least 48 less timestamps, this stays >= 8 bytes.
        """
        mss = self.snd_mss
        rx = self.rx
        if self.sack_ok and (rx.dsack is not None or rx.ooo):
            n = rx.sack_block_count()
            limit = _SACK_LIMIT_TS if self.ts_ok else _SACK_LIMIT
            mss -= _sack_option_len(n if n < limit else limit)
        return mss

    def segment_mss(self, header: TcpRepr) -> int:
        """The payload per wire segment for a segment this connection built:
        ``snd_mss`` less its SACK option. A TSO segment's pieces each repeat
        the header, so this is its ``gso_size``."""
        return self.snd_mss - _sack_option_len(len(header.sack_blocks))

    def _send_data(self, now: float, out: list[Segment]) -> None:
        cc = self.cc
        board = self.scoreboard
        while True:
            # Per segment: the SACK blocks (so the room for data) can change
            # from one to the next.
            mss = self._seg_mss()
            if board.has_unsent_loss and self._retransmit_one(now, out, mss):
                continue
            if not self._send_new(now, out, mss, cc):
                break
        snd = self.snd
        self.cwnd_use.note(snd.una, snd.nxt, self._pipe() + self.snd_mss > cc.cwnd)
        # Persist timer: data waits, nothing is in flight to bring an ACK.
        timers = self.timers
        if timers.persist.at is None and timers.retransmit.at is None and snd.nxt == snd.una and snd.unsent:
            timers.persist.start(now + timers.persist.interval(self.rtt.rto, self.config.max_rto))

    def _retransmit_one(self, now: float, out: list[Segment], mss: int) -> bool:
        rng = self.scoreboard.next_retransmission(mss)
        if rng is None:
            return False
        s, e = rng
        if not self._force_rtx and self._pipe() + (e - s) > self.cc.cwnd:
            return False
        self._force_rtx = False
        self.scoreboard.retransmitted(s, e, self.snd.nxt if self.sack_ok else None)
        rec = self.recovery
        if rec.phase is not None and rec.undo.saved_cc is not None:
            rec.undo.retransmitted(s, e, self._ts_clock(now) if self.ts_ok else None)
        flags = _F_ACK
        data_end = e
        if self.snd.fin_queued and e > self.snd.fin_seq:
            flags |= FIN
            data_end = self.snd.fin_seq
        payload = self.snd.payload(s, data_end) if data_end > s else b""
        if payload and data_end == self.snd.data_end:
            flags |= PSH
        seg = self._make(s, flags, payload, now)
        self._mark_urgent(seg[0], s)
        out.append(seg)
        self.stats["retransmits"] += 1
        self.timed.cancel()  # Karn: nothing retransmitted is timed
        if self.timers.retransmit.at is None:
            self.timers.retransmit.start(now + self.rtt.rto)
        return True

    def _send_new(self, now: float, out: list[Segment], mss: int, cc) -> bool:
        """Send one segment of new data (or the FIN); False when nothing may go."""
        snd = self.snd
        nxt = snd.nxt
        base = snd.base
        data_end = base + len(snd.buf)
        left = data_end - nxt
        if left <= 0:
            if snd.fin_queued and nxt == snd.fin_seq:
                # A bare FIN (it needs no window; MUST-61 PSH rule is moot).
                out.append(self._make(nxt, _F_ACK | FIN, b"", now))
                snd.nxt = nxt + 1
                if self.timers.retransmit.at is None:
                    self.timers.retransmit.start(now + self.rtt.rto)
                return False
            return False
        n = left if left < mss else mss
        usable = snd.una + snd.wnd - nxt
        force = self._force_send or self.recovery.tlp.force
        if usable < n:
            if usable <= 0:
                if force and nxt == snd.una:
                    self._send_window_probe(now, out)
                return False
            if not force and usable < snd.max_wnd // 2:
                return False  # sender SWS avoidance (RFC 9293 3.8.6.2.1)
            n = usable
        elif n < mss and not force and not self.config.nodelay and not snd.fin_queued:
            # Nagle with Minshall's refinement (as Linux): hold a partial segment
            # while an earlier partial one is unacknowledged.
            if snd.sml > snd.una:
                return False
        flight = self._pipe()
        if flight + n > cc.cwnd and flight > 0 and not self.recovery.tlp.force:
            return False
        if n == mss and not force:
            tso = self.config.tso_max
            if tso > mss:
                # TSO: whole MSSes up to what the window, cwnd and the NIC
                # allow go out as one segment; the NIC cuts it back into MSSes.
                # Only full MSSes, so Nagle and SWS (decided on the first) hold
                # for the total; a partial tail goes next, by the usual rules.
                room = min(left, usable, tso, max(cc.cwnd - flight, mss))
                if room >= 2 * mss:
                    n = room - room % mss
        self._force_send = False
        end = nxt + n
        flags = 0x18 if end == data_end else 0x10  # ACK, and PSH on the last of the queue
        if snd.fin_queued and end == snd.fin_seq:
            flags |= 0x01
        off = nxt - base
        payload = bytes(snd.buf[off : off + n])
        seg = self._make(nxt, _FLAG[flags], payload, now)
        if snd.up is not None:
            self._mark_urgent(seg[0], nxt)
        out.append(seg)
        snd.nxt = end + 1 if flags & 0x01 else end
        self.bytes_sent += n
        if n < mss:
            snd.sml = end
        snd.probe_end = None
        if not self.ts_ok and self.timed.seq is None:
            self.timed.start(end, now)
        if self.timers.retransmit.at is None:
            self.timers.retransmit.start(now + self.rtt.rto)
        persist = self.timers.persist
        if persist.at is not None:
            persist.stop()
        if self.recovery.tlp.force:
            self.recovery.tlp.sent_new_data(snd.nxt)
            return False  # the probe is one segment
        self._arm_tlp(now)
        return not flags & 0x01

    def _send_window_probe(self, now: float, out: list[Segment]) -> None:
        """Zero-window probe: one new octet, not counted as sent until the peer acknowledges it (MUST-36)."""
        self._force_send = False
        nxt = self.snd.nxt
        out.append(self._make(nxt, _F_ACK, self.snd.payload(nxt, nxt + 1), now))
        self.snd.probe_end = nxt + 1
        self.stats["window_probes"] += 1

    def _mark_urgent(self, r: TcpRepr, seq: int) -> None:
        # MUST-62: the pointer is the offset of the first non-urgent octet.
        up = self.snd.up
        if up is not None and up > seq:
            r.flags |= URG
            r.urgent = min(up - seq, 0xFFFF)

    def _queue_rst(self, wire_seq: int) -> None:
        self._ctl_out.append((TcpRepr(self._lport, self._rport, wire_seq & MASK, 0, RST, 0), b""))
        self.stats["rst_out"] += 1
