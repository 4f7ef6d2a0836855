"""One TCP connection as a sans-IO state machine (RFC 9293).

Segments come in with :meth:`TcpConnection.receive_segment`, the
application calls :meth:`send`, :meth:`recv`, :meth:`shutdown_write`,
:meth:`close` and :meth:`abort`, and :meth:`poll` returns the segments to
send now as ``(TcpRepr, payload)`` pairs (ports, sequence numbers, flags,
window and options filled in; the IP layer adds addresses and the checksum).
:meth:`poll_at` says when the next timer runs. Nothing here reads a clock:
``now`` (seconds, float) comes in with every call that needs it.

Inside, sequence numbers are *unwrapped* ints (see :func:`stack.tcp.seq.unwrap`):
the hot path compares plain ints and only the wire sees 32 bits.

What the engine does, by RFC:

* RFC 9293: the eleven states, simultaneous open and close, half-close, the
  segment arrival rules of 3.10.7, RST generation, TIME-WAIT of 2*MSL,
  receiver and sender silly-window avoidance, zero-window probing, Nagle.
* RFC 5961: RSTs must hit RCV.NXT exactly, in-window RSTs and any SYN get a
  rate-limited challenge ACK, ACKs outside [SND.UNA - MAX.SND.WND, SND.NXT]
  are dropped.
* RFC 7323: window scaling, timestamps for RTT measurement and PAWS.
* RFC 6298: the retransmission timer (Karn, backoff, retry limit).
* RFC 5681/6582 NewReno fast retransmit and recovery without SACK; RFC 2018
  SACK with RFC 6675's scoreboard (``pipe``) with it; congestion control is
  pluggable (:mod:`stack.tcp.congestion`, CUBIC by default).
* Delayed ACKs (every second full segment, never for out-of-order data, a
  hole being filled, a FIN or a window update) and keepalives.
"""
from __future__ import annotations

import copy
import errno
from collections import Counter
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Callable

from stack.tcp.config import DEFAULT_SEND_MSS, TcpConfig
from stack.tcp.congestion import make_congestion_control
from stack.tcp.ranges import RangeSet
from stack.tcp.reassembly import ReassemblyQueue
from stack.tcp.rtt import RttEstimator
from stack.tcp.seq import MASK, unwrap
from stack.tcp.state import TcpState
from stack.wire.tcp import TcpFlags, TcpRepr

__all__ = ["TcpConnection", "TcpInfo", "Endpoint", "Segment"]

Endpoint = tuple[IPv4Address, int]
Segment = tuple[TcpRepr, bytes]

S = TcpState
CLOSED, SYN_SENT, SYN_RECEIVED, ESTABLISHED = S.CLOSED, S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED
FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT = S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT
CLOSING, LAST_ACK, TIME_WAIT = S.CLOSING, S.LAST_ACK, S.TIME_WAIT

FIN, SYN, RST, PSH, ACK, URG = TcpFlags.FIN, TcpFlags.SYN, TcpFlags.RST, TcpFlags.PSH, TcpFlags.ACK, TcpFlags.URG
_F_ACK = TcpFlags.ACK
_FLAG = tuple(TcpFlags(i) for i in range(256))  # int -> TcpFlags without IntFlag arithmetic
_F_SYN_ACK = TcpFlags.SYN | TcpFlags.ACK
_RECEIVING = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
_SENDING = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
_RST_ON_ABORT = frozenset({SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT})
_HALF = 0x80000000
_MIN_SND_MSS = 48  # Linux's tcp_min_snd_mss: a tiny MSS option must not explode segment counts
_TS_OPTION_LEN = 12


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """A snapshot of one connection, like a line of ``ss -ti``."""

    state: TcpState
    local: Endpoint
    remote: Endpoint
    send_queue: int  # bytes queued and not yet acknowledged
    recv_queue: int  # bytes received and not yet read
    snd_mss: int
    rcv_mss: int
    cwnd: int  # bytes
    ssthresh: int | None  # bytes; None while still "infinite"
    srtt: float | None  # seconds
    rttvar: float | None
    rto: float
    snd_wnd: int
    rcv_wnd: int
    in_flight: int  # RFC 6675 pipe, bytes
    retransmits: int  # segments retransmitted, all causes
    timeouts: int  # RTO expiries
    fast_retransmits: int
    bytes_acked: int
    bytes_received: int
    bytes_sent: int  # new data bytes sent (retransmissions not counted)
    segs_in: int
    segs_out: int
    sacked: int
    lost: int
    congestion: str
    options: tuple[str, ...]  # "ts", "sack", "wscale:S,R"
    error: int | None


class TcpConnection:
    """A TCP connection between ``local`` and ``remote`` (sans-IO).

    Make one with :meth:`connect` (active open, SYN-SENT) or
    :meth:`from_syn` (passive open from a listener, SYN-RECEIVED).
    """

    def __init__(
        self,
        local: Endpoint,
        remote: Endpoint,
        iss: int,
        config: TcpConfig | None = None,
        *,
        ts_offset: int = 0,
        listener=None,
    ) -> None:
        cfg = config or TcpConfig()
        self.config = cfg
        self.local = local
        self.remote = remote
        self._lport = local[1]
        self._rport = remote[1]
        self.state = CLOSED
        self.iss = iss & MASK
        # Send sequence space (unwrapped).
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0  # the peer's shift, applied to windows it sends
        self.rcv_wscale = 0  # our shift, applied to windows we send
        # Receive sequence space.
        self.irs: int | None = None
        self.rcv_nxt = 0
        self.rcv_adv = 0  # the highest right edge ever advertised
        # Options.
        self.ts_ok = False
        self.sack_ok = False
        self.ws_ok = False
        self.ts_recent = 0
        self._ts_offset = ts_offset & MASK
        self._last_ack_sent = 0
        self.snd_mss = min(DEFAULT_SEND_MSS, cfg.mss)
        self.rcv_mss = min(DEFAULT_SEND_MSS, cfg.mss)
        self._sws_thresh = min(cfg.rcvbuf // 2, cfg.mss) or 1
        # Send buffer: bytes from SND.UNA (or ISS+1) on; FIN after them once queued.
        self._sndbuf = bytearray()
        self._snd_base = self.iss + 1
        self._fin_queued = False
        self._fin_seq = 0
        self._snd_sml = self.iss  # end of the last small segment sent (Minshall's Nagle)
        self._snd_up: int | None = None
        self._probe_end: int | None = None  # a zero-window probe byte is out up to here
        # Receive buffer.
        self._rx = bytearray()
        self._ooo = ReassemblyQueue(cfg.ooo_bytes, cfg.max_ooo_blocks)
        self._ooo_fin: int | None = None
        self._fin_received = False
        self._read_shutdown = False
        self._orphan = False  # the application closed it: nobody will read
        self._rcv_up: int | None = None
        self._unacked_rcv = 0
        self._dsack: tuple[int, int] | None = None  # a duplicate to report first (RFC 2883)
        # Loss recovery: the scoreboard (RFC 6675) and NewReno state.
        self._sacked = RangeSet()
        self._lost = RangeSet()
        self._retrans = RangeSet()
        self._rtx_hi: dict[int, tuple[int, int]] = {}  # retransmitted chunk start -> (end, SND.NXT then)
        self._dupacks = 0
        self._dup_bytes = 0  # NewReno without SACK: each dupACK stands for one segment that left
        self._recovery: str | None = None  # None, "fast" or "loss"
        self._recover = 0
        self._force_rtx = False
        # Undoing a needless window reduction (RFC 3522 Eifel detection, RFC 3708 D-SACK).
        self._undo_cc = None  # the congestion state before the episode began
        self._undo_retrans = 0  # retransmissions of the episode not yet shown needless
        self._undo_tsval: int | None = None  # TSval of its first retransmission
        self._undo_una = 0
        self._undo_high = 0
        self.cc = make_congestion_control(cfg.congestion, self.snd_mss, cfg.initial_window)
        self.rtt = RttEstimator(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._syn_retransmitted = False
        # Timers (absolute times or None).
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._tlp_at: float | None = None
        self._tlp_high: int | None = None  # SND.NXT after a tail loss probe, until its episode ends
        self._tlp_rtx = False  # the probe was a retransmission (not new data)
        self._tlp_force = False  # the next new segment is a probe: cwnd does not hold it
        self._delack_at: float | None = None
        self._ka_at: float | None = None
        self._close_at: float | None = None
        self._persist_backoff = 0
        self._probes_out = 0
        self._retries = 0
        self._ka_probes = 0
        self._last_rx = 0.0
        self._last_ack_rx = 0.0
        self._force_send = False
        # Output.
        self._syn_pending = False
        self._ack_now = False
        self._want_output = False
        self._ctl_out: list[Segment] = []
        self._chack_tokens = float(cfg.challenge_ack_burst)
        self._chack_time = 0.0
        self._oow_time = -1e18
        # The socket layer's view.
        self.error: int | None = None  # pending asynchronous error (errno)
        self._soft_error: int | None = None  # ICMP errors kept for a timeout (RFC 1122 4.2.3.9)
        self._connected = False
        self._passive = False
        self.listener = listener
        self.on_change: Callable[[], None] | None = None
        self.stats: Counter[str] = Counter()
        self.bytes_acked = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.segs_in = 0
        self.segs_out = 0

    # -- construction ------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        local: Endpoint,
        remote: Endpoint,
        iss: int,
        now: float,
        config: TcpConfig | None = None,
        *,
        ts_offset: int = 0,
    ) -> "TcpConnection":
        """Active open: SYN-SENT, the SYN goes out on the next :meth:`poll`."""
        conn = cls(local, remote, iss, config, ts_offset=ts_offset)
        conn.state = SYN_SENT
        conn.snd_nxt = conn.iss  # the SYN is "sent" when poll emits it
        conn._syn_pending = True
        conn._want_output = True
        conn._last_rx = now
        return conn

    @classmethod
    def from_syn(
        cls,
        local: Endpoint,
        remote: Endpoint,
        syn: TcpRepr,
        iss: int,
        now: float,
        config: TcpConfig | None = None,
        *,
        ts_offset: int = 0,
        listener=None,
    ) -> "TcpConnection":
        """Passive open: a listener got ``syn``; SYN-RECEIVED, SYN-ACK on the next poll."""
        conn = cls(local, remote, iss, config, ts_offset=ts_offset, listener=listener)
        conn._passive = True
        conn.state = SYN_RECEIVED
        conn._accept_syn(syn)
        conn._syn_pending = True
        conn._want_output = True
        conn._last_rx = now
        return conn

    @classmethod
    def from_cookie(
        cls,
        local: Endpoint,
        remote: Endpoint,
        iss: int,
        irs: int,
        mss: int,
        ack: TcpRepr,
        now: float,
        config: TcpConfig | None = None,
    ) -> "TcpConnection":
        """ESTABLISHED from a valid SYN cookie (the listener kept no state).

        The cookie carried only the MSS, so the connection runs without
        window scaling, SACK or timestamps (as Linux's cookies without TS).
        """
        conn = cls(local, remote, iss, config)
        conn._passive = True
        conn.irs = irs
        conn.rcv_nxt = irs + 1
        conn._last_ack_sent = conn.rcv_nxt
        conn.snd_una = conn.snd_nxt = conn.iss + 1
        conn.snd_mss = max(min(mss, conn.config.mss), _MIN_SND_MSS)
        conn.rcv_mss = min(conn.config.mss, DEFAULT_SEND_MSS)
        conn.cc.set_mss(conn.snd_mss)
        conn.snd_wnd = conn.max_snd_wnd = ack.window
        conn.snd_wl1 = conn.rcv_nxt
        conn.snd_wl2 = conn.snd_una
        conn.rcv_adv = conn.rcv_nxt + min(conn.config.rcvbuf, 0xFFFF)
        conn._last_rx = now
        conn._established(now)
        conn.stats["from_syn_cookie"] += 1
        return conn

    def configure(self, **changes) -> None:
        """Change settings (``nodelay``, ``rcvbuf``, ``sndbuf``, ``keepalive*``...) now."""
        cfg = replace(self.config, **changes)
        self.config = cfg
        self._sws_thresh = min(cfg.rcvbuf // 2, cfg.mss) or 1
        self._ooo.max_bytes = cfg.ooo_bytes
        if "keepalive" in changes or "keepalive_idle" in changes:
            self._ka_at = None
            self._ka_probes = 0
        if "congestion" in changes and changes["congestion"].lower() != self.cc.name:
            # TCP_CONGESTION on a live connection: the new algorithm starts from today's window.
            old = self.cc
            self.cc = make_congestion_control(cfg.congestion, self.snd_mss, cfg.initial_window)
            self.cc.ssthresh = old.ssthresh
            self.cc.set_cwnd(old.cwnd)
            self._undo_cc = None
        self._want_output = True
        self._notify()

    # -- application calls ------------------------------------------------------------
    def send(self, data, urgent: bool = False) -> int:
        """Queue ``data``; return how many bytes fit the send buffer (maybe 0).

        Raises ``OSError(EPIPE)`` once the sending side is shut down or the
        connection is gone (the pending error, if any, is raised instead).
        With ``urgent`` the urgent pointer marks the end of this data (MUST-30).
        """
        if self.state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT) or self._fin_queued:
            if self.error is not None:
                err, self.error = self.error, None
                raise OSError(err, errno.errorcode.get(err, str(err)))
            raise OSError(errno.EPIPE, "the connection cannot send any more")
        room = self.config.sndbuf - len(self._sndbuf)
        n = len(data)
        if n > room:
            n = room if room > 0 else 0
        if n:
            self._sndbuf += data[:n] if n < len(data) else data
            if urgent:
                self._snd_up = self._snd_base + len(self._sndbuf)
            self._want_output = True
        return n

    def recv(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` received bytes; ``b""`` if none are waiting.

        Whether ``b""`` means end of stream is :attr:`eof`; an error is in
        :attr:`error`.
        """
        rx = self._rx
        if not rx or max_bytes <= 0:
            return b""
        if max_bytes >= len(rx):
            data = bytes(rx)
            rx.clear()
        else:
            data = bytes(rx[:max_bytes])
            del rx[:max_bytes]
        if self.state in _RECEIVING and self._window_update_due():
            # The window opened enough to tell the peer now (never delay this).
            self._ack_now = True
            self._want_output = True
        return data

    def shutdown_write(self) -> None:
        """Half-close: a FIN follows the queued data (CLOSE of RFC 9293 3.10.4)."""
        st = self.state
        if st is SYN_SENT:
            self._to_closed()
            return
        if self._fin_queued or st not in (SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return
        self._fin_queued = True
        self._fin_seq = self._snd_base + len(self._sndbuf)
        if st is ESTABLISHED:
            self._set_state(FIN_WAIT_1)
        elif st is CLOSE_WAIT:
            self._set_state(LAST_ACK)
        # SYN-RECEIVED: the FIN waits for ESTABLISHED (RFC 9293 3.10.4).
        self._want_output = True

    def shutdown_read(self) -> None:
        """No more reading: queued data is dropped, later data is acked and dropped."""
        self._read_shutdown = True
        self._rx.clear()
        self._notify()

    def close(self) -> None:
        """The application is done. Unread data makes it an abort with RST (as Linux)."""
        st = self.state
        if st is CLOSED:
            return
        if st is SYN_SENT:
            self._to_closed()
            return
        if self._rx and st in _RST_ON_ABORT:
            self.stats["rst_unread_data"] += 1
            self.abort()
            return
        self._orphan = True
        self._read_shutdown = True
        self.shutdown_write()
        if self.state is FIN_WAIT_2:
            self._want_output = True  # poll arms the FIN-WAIT-2 timeout

    def abort(self) -> None:
        """ABORT: send RST where RFC 9293 3.10.5 says so, then CLOSED."""
        if self.state in _RST_ON_ABORT:
            self._ctl_out.append((TcpRepr(self._lport, self._rport, self.snd_nxt & MASK, 0, RST, 0), b""))
            self.stats["rst_out"] += 1
        self._to_closed()

    def icmp_error(self, err: int, hard: bool = False) -> None:
        """An ICMP error about this connection (RFC 9293 3.9.1, MUST-56).

        Soft errors (unreachable net/host, time exceeded) never abort: they
        are kept and reported if the connection later times out. A hard
        error (``hard=True``, e.g. port or protocol unreachable) aborts a
        connection that is still opening, like Linux.
        """
        if hard and self.state in (SYN_SENT, SYN_RECEIVED):
            self._fail(err)
            return
        self._soft_error = err

    def set_error(self, err: int) -> None:
        """The link layer gave up on our next hop (ARP failed), as the interface reports it.

        An opening connection fails at once with ``err`` (Linux reports
        EHOSTUNREACH after its ARP retries); an established one keeps it as a
        soft error, reported only if the connection then times out.
        """
        if self.state is SYN_SENT:
            self._fail(err)
        else:
            self._soft_error = err

    def path_mtu(self, mtu: int) -> None:
        """ICMP "fragmentation needed": segments must fit ``mtu`` from now on.

        Everything outstanding is resent in smaller segments, without a
        congestion response (the network said "too big", not "congested").
        """
        opt = _TS_OPTION_LEN if self.ts_ok else 0
        mss = max(mtu - 40, _MIN_SND_MSS) - opt
        if mss >= self.snd_mss or self.state not in _SENDING:
            return
        self.snd_mss = mss
        self.cc.mss = mss
        self.stats["pmtu_reductions"] += 1
        self._retrans.clear()
        self._rtx_hi.clear()
        pos = self.snd_una
        for s, e in self._sacked:
            if pos < s:
                self._lost.add(pos, s)
            pos = max(pos, e)
        if pos < self.snd_nxt:
            self._lost.add(pos, self.snd_nxt)
        self._force_rtx = True
        self._want_output = True

    def take_error(self) -> int | None:
        """The pending error, cleared (SO_ERROR)."""
        err, self.error = self.error, None
        return err

    # -- what the socket layer looks at -----------------------------------------------
    @property
    def connected(self) -> bool:
        """The handshake completed at some point."""
        return self._connected

    @property
    def eof(self) -> bool:
        """Nothing more will ever be readable (FIN read, read side shut, or closed)."""
        if self._rx:
            return False
        return self._fin_received or self._read_shutdown or self.state is CLOSED

    @property
    def readable(self) -> bool:
        return bool(self._rx) or self.eof or self.error is not None

    @property
    def writable(self) -> bool:
        """A send would accept data now, or the connection failed (poll wakes up)."""
        if self.error is not None:
            return True
        if self.state is CLOSED:
            return True  # failed or closed: a send fails at once instead of blocking
        if self.state not in (ESTABLISHED, CLOSE_WAIT) or self._fin_queued:
            return False
        queued = len(self._sndbuf)
        free = self.config.sndbuf - queued
        return free > 0 and free >= queued // 2

    @property
    def finished(self) -> bool:
        """CLOSED with nothing left to send: the owner may forget this connection."""
        return self.state is CLOSED and not self._ctl_out

    @property
    def send_queue(self) -> int:
        return len(self._sndbuf)

    @property
    def recv_queue(self) -> int:
        return len(self._rx)

    @property
    def all_acked(self) -> bool:
        """Everything sent and queued (FIN included) was acknowledged (for SO_LINGER)."""
        return not self._sndbuf and (not self._fin_queued or self.snd_una > self._fin_seq)

    @property
    def urgent_pending(self) -> int:
        """Urgent bytes received and not yet read (MUST-33); data stays in line."""
        if self._rcv_up is None:
            return 0
        read_pos = self.rcv_nxt - len(self._rx)
        return max(0, self._rcv_up - read_pos)

    def info(self) -> TcpInfo:
        """A snapshot for ``ss -ti``-style listings."""
        cc = self.cc
        options = []
        if self.ts_ok:
            options.append("ts")
        if self.sack_ok:
            options.append("sack")
        if self.snd_wscale or self.rcv_wscale:
            options.append(f"wscale:{self.snd_wscale},{self.rcv_wscale}")
        return TcpInfo(
            state=self.state,
            local=self.local,
            remote=self.remote,
            send_queue=len(self._sndbuf),
            recv_queue=len(self._rx),
            snd_mss=self.snd_mss,
            rcv_mss=self.rcv_mss,
            cwnd=cc.cwnd,
            ssthresh=None if cc.ssthresh >= 1 << 62 else cc.ssthresh,
            srtt=self.rtt.srtt,
            rttvar=self.rtt.rttvar,
            rto=self.rtt.rto,
            snd_wnd=self.snd_wnd,
            rcv_wnd=max(0, self.rcv_adv - self.rcv_nxt),
            in_flight=self._pipe(),
            retransmits=self.stats["retransmits"],
            timeouts=self.stats["timeouts"],
            fast_retransmits=self.stats["fast_retransmits"],
            bytes_acked=self.bytes_acked,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            segs_in=self.segs_in,
            segs_out=self.segs_out,
            sacked=self._sacked.total,
            lost=self._lost.total,
            congestion=cc.name,
            options=tuple(options),
            error=self.error,
        )

    # -- timers -------------------------------------------------------------------------
    def poll_at(self) -> float | None:
        """When :meth:`poll` has work: 0.0 for "now", None for "only on input"."""
        if self._want_output or self._ctl_out or self._ack_now:
            return 0.0
        t = self._rto_at
        for x in (self._persist_at, self._tlp_at, self._delack_at, self._close_at):
            if x is not None and (t is None or x < t):
                t = x
        if self.config.keepalive and self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            ka = self._keepalive_deadline()
            if t is None or ka < t:
                t = ka
        return t

    def _keepalive_deadline(self) -> float:
        if self._ka_at is None:
            self._ka_at = self._last_rx + self.config.keepalive_idle
        return self._ka_at

    def poll(self, now: float) -> list[Segment]:
        """Run due timers and return the segments to transmit now."""
        out: list[Segment] = []
        if self._close_at is not None and now >= self._close_at:
            self._close_at = None
            self.stats["closed_by_timer"] += 1
            self._to_closed()
        st = self.state
        if st is not CLOSED:
            if self._rto_at is not None and now >= self._rto_at:
                self._on_rto(now)
            if self._persist_at is not None and now >= self._persist_at:
                self._on_persist(now)
            if self._tlp_at is not None and now >= self._tlp_at:
                self._on_tlp(now)
            if self._delack_at is not None and now >= self._delack_at:
                self._delack_at = None
                self._ack_now = True
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

    # -- receiving ----------------------------------------------------------------------
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
                and not self._ooo
                and self._ooo_fin is None
                and not self._recovery
                and self._tlp_high is None
            ):
                # (0x37: exactly ACK among FIN, SYN, RST, ACK, URG)
                seq = unwrap(seg.seq, self.rcv_nxt)
                if seq == self.rcv_nxt and self._fast_path(seg, seq, payload, now):
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
        ack = unwrap(seg.ack, self.snd_una)
        snd_una = self.snd_una
        if ack < snd_una or ack > self.snd_nxt or seg.sack_blocks:
            return False
        n = len(payload)
        if n and (self._read_shutdown or seq + n > self.rcv_adv):
            return False
        window = seg.window << self.snd_wscale
        if ack == snd_una and n == 0 and window == self.snd_wnd and self.snd_nxt != snd_una:
            return False  # a duplicate ACK: the full path counts it
        self._last_rx = now
        self._ka_probes = 0
        self._ka_at = None
        if ts is not None and seq <= self._last_ack_sent:
            self.ts_recent = ts[0]
        # Window update (SND.WL1/WL2 rule).
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            if window != self.snd_wnd:
                if window > self.snd_wnd:
                    self._want_output = True
                self.snd_wnd = window
                if window > self.max_snd_wnd:
                    self.max_snd_wnd = window
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        self._probes_out = 0
        self._last_ack_rx = now
        if ack > snd_una:
            self._new_ack(seg, ack, now)
        if n:
            self._rx += payload
            self.rcv_nxt = seq + n
            self.bytes_received += n
            if n > self.rcv_mss:
                self.rcv_mss = n
            self._unacked_rcv += n
            if self._unacked_rcv >= 2 * self.rcv_mss:
                self._ack_now = True
                self._want_output = True
            elif self._delack_at is None:
                self._delack_at = now + self.config.delayed_ack
            self._notify()
        return True

    def _receive_syn_sent(self, seg: TcpRepr, payload, now: float) -> None:
        flags = seg.flags
        ack_ok = False
        ack = 0
        if flags & ACK:
            ack = unwrap(seg.ack, self.snd_una)
            if ack <= self.iss or ack > self.snd_nxt:
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
            self.snd_una = ack
            self.snd_wnd = seg.window  # never scaled in a SYN (RFC 7323 2.2)
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = self.irs
            self.snd_wl2 = ack
            self._take_handshake_rtt(seg, now)
            self._established(now)
            self._ack_now = True
            self._want_output = True
            if len(payload) or flags & FIN:
                self._receive_text(self.rcv_nxt, payload, bool(flags & FIN), now)
        else:
            # Simultaneous open (MUST-10): answer with SYN,ACK from our ISS.
            self._set_state(SYN_RECEIVED)
            self.snd_wnd = seg.window
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = self.irs
            self.snd_wl2 = self.iss
            self._syn_pending = True
            self._rto_at = None
            self._want_output = True
            self.stats["simultaneous_open"] += 1

    def _accept_syn(self, seg: TcpRepr) -> None:
        """Take the peer's ISN and options from its SYN."""
        cfg = self.config
        self.irs = seg.seq
        self.rcv_nxt = seg.seq + 1
        self._last_ack_sent = self.rcv_nxt
        self.sack_ok = cfg.sack and seg.sack_permitted
        self.ts_ok = cfg.timestamps and seg.timestamps is not None
        if self.ts_ok:
            self.ts_recent = seg.timestamps[0]
        self.ws_ok = cfg.window_scaling and seg.window_scale is not None
        if self.ws_ok:
            self.snd_wscale = min(seg.window_scale, 14)  # RFC 7323 2.3
            self.rcv_wscale = cfg.window_shift
        else:
            self.snd_wscale = self.rcv_wscale = 0
        peer_mss = seg.mss if seg.mss is not None else DEFAULT_SEND_MSS
        opt = _TS_OPTION_LEN if self.ts_ok else 0
        # MUST-16: Eff.snd.MSS = min(SendMSS + 20, MMS_S) - TCP header - IP options.
        self.snd_mss = max(min(peer_mss, cfg.mss), _MIN_SND_MSS) - opt
        self.rcv_mss = min(cfg.mss - opt, DEFAULT_SEND_MSS)
        self.cc.set_mss(self.snd_mss)
        self.rcv_adv = self.rcv_nxt + min(cfg.rcvbuf, 65535)

    def _take_handshake_rtt(self, seg: TcpRepr, now: float) -> None:
        if self.ts_ok and seg.timestamps and seg.timestamps[1]:
            self._ts_sample(seg.timestamps[1], now)
        elif self._rtt_seq is not None and not self._syn_retransmitted:
            self.rtt.sample(now - self._rtt_time)
        self._rtt_seq = None

    def _established(self, now: float) -> None:
        self._set_state(ESTABLISHED)
        self._connected = True
        self._retries = 0
        self._rto_at = None
        self._syn_pending = False
        if self._syn_retransmitted:
            self.rtt.reset_after_syn_retransmit()
        self._last_ack_rx = now
        if self._fin_queued:
            self._set_state(FIN_WAIT_1)  # a CLOSE that waited for the handshake
        self._want_output = True
        self._notify()

    def _receive_synchronized(self, seg: TcpRepr, payload, now: float) -> None:
        st = self.state
        flags = int(seg.flags)
        rst = flags & RST
        syn = flags & SYN
        fin = flags & FIN
        plen = len(payload)
        rn = self.rcv_nxt
        seq = unwrap(seg.seq, rn)
        if st is SYN_RECEIVED and syn and not rst and seq == self.irs:
            if not flags & ACK:
                # The peer retransmitted its SYN: our SYN-ACK was lost; resend it.
                self._syn_pending = True
                self._want_output = True
                self.stats["syn_retransmit_seen"] += 1
                return
            if not self._passive and unwrap(seg.ack, self.snd_una) == self.snd_nxt:
                # Simultaneous open, step 6 of RFC 9293 figure 8: the peer's SYN,ACK
                # completes our handshake (its SYN is old news; as Linux does).
                self._take_handshake_rtt(seg, now)
                self.snd_una = self.snd_nxt
                self._established(now)
                self.snd_wnd = seg.window
                self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
                self.snd_wl1 = seq
                self.snd_wl2 = self.snd_una
                return
        # RFC 7323 5.3: PAWS and the TSopt requirement (never for RSTs).
        ts = seg.timestamps
        if self.ts_ok and not rst:
            if ts is None:
                self.stats["drop_no_timestamp"] += 1
                return
            if (ts[0] - self.ts_recent) & MASK >= _HALF and not self._disordered_ack(seg, seq, plen, flags):
                self.stats["drop_paws"] += 1
                self._send_dupack(now, pure=False)
                return
        # First: is the segment acceptable (RFC 9293 3.10.7.4)?
        wnd = self.rcv_adv - rn
        if wnd < 0:
            wnd = 0
        seglen = plen + (1 if syn else 0) + (1 if fin else 0)
        if seglen == 0:
            # RFC 9293 says RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND; like Linux we also
            # take SEG.SEQ = RCV.NXT+RCV.WND: a sender that filled our window
            # sends its ACKs from exactly there (RFC 9293 appendix A.2).
            ok = rn <= seq <= rn + wnd
        elif wnd == 0:
            ok = False
        else:
            last = seq + seglen - 1
            ok = (rn <= seq < rn + wnd) or (rn <= last < rn + wnd)
        if not ok:
            if rst:
                self.stats["drop_rst_out_of_window"] += 1
                return
            self.stats["drop_out_of_window"] += 1
            if st is TIME_WAIT and fin:
                self._close_at = now + self.config.time_wait  # the peer's FIN again
            if wnd == 0 and seq == rn and flags & ACK and not syn:
                # RFC 9293: with a zero window, still take valid ACKs (and URG, RST).
                self._process_ack_only(seg, now)
            if plen and seq < rn and self.sack_ok:
                self._dsack = (seq, min(seq + plen, rn))  # tell the sender it was a duplicate
            self._send_dupack(now, pure=seglen == 0)
            return
        self._last_rx = now
        self._ka_probes = 0
        self._ka_at = None
        if ts is not None and self.ts_ok and seq <= self._last_ack_sent and (ts[0] - self.ts_recent) & MASK < _HALF:
            self.ts_recent = ts[0]  # RFC 7323 4.3 (never backwards: a disordered ACK is older)
        # Second: RST (RFC 5961 3.2: exact match resets, otherwise challenge).
        if rst:
            if seq == rn:
                self.stats["rst_in"] += 1
                self._on_reset()
            else:
                self.stats["rst_challenged"] += 1
                self._challenge_ack(now)
            return
        # Fourth: SYN in a synchronized state (RFC 5961 4.2).
        if syn:
            if st is SYN_RECEIVED and self._passive:
                # Back to LISTEN: this embryonic connection is dropped.
                self.stats["syn_in_syn_received"] += 1
                self._to_closed()
                return
            self.stats["syn_challenged"] += 1
            self._challenge_ack(now)
            return
        # Fifth: the ACK field.
        if not flags & ACK:
            self.stats["drop_no_ack"] += 1
            return
        ack = unwrap(seg.ack, self.snd_una)
        if st is SYN_RECEIVED:
            if self.snd_una < ack <= self.snd_nxt:
                if self.listener is not None and not self.listener._admit(self):
                    # Accept queue full: act as if the ACK was lost (Linux).
                    self.stats["drop_accept_queue_full"] += 1
                    return
                self._take_handshake_rtt(seg, now)
                self.snd_una = ack
                self._established(now)
                st = self.state
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
                self.snd_wl1 = seq
                self.snd_wl2 = ack
            else:
                self._queue_rst(seg.ack)
                self.stats["drop_bad_ack"] += 1
                return
        if ack > self.snd_nxt:
            if self._probe_end is not None and ack <= self._probe_end:
                self.snd_nxt = ack  # the peer took our zero-window probe byte
                self._probe_end = None
            else:
                self.stats["drop_ack_unsent"] += 1
                self._challenge_ack(now)
                return
        if ack < self.snd_una - self.max_snd_wnd:
            self.stats["drop_ack_too_old"] += 1
            self._challenge_ack(now)
            return
        self._process_ack(seg, seq, ack, plen, fin, now)
        st = self.state
        if st is CLOSED:
            return
        if st is CLOSING or st is LAST_ACK:
            return  # nothing more to take from this segment
        if st is TIME_WAIT:
            if fin:
                self._ack_now = True
                self._want_output = True
                self._close_at = now + self.config.time_wait
            return
        # Sixth: URG.
        if flags & URG and st in _RECEIVING:
            up = seq + seg.urgent
            if self._rcv_up is None or up > self._rcv_up:
                self._rcv_up = up
                self.stats["urgent_in"] += 1
                self._notify()
        # Seventh and eighth: text and FIN.
        if plen or fin:
            if seq < rn:
                cut = rn - seq
                payload = payload[cut:]
                seq = rn
            right = self.rcv_adv
            if seq + len(payload) > right:
                payload = payload[: max(0, right - seq)]
                fin = 0  # the FIN lies beyond the window: not taken
            if st in _RECEIVING:
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
        if plen or flags & 0x07 or seq != self.rcv_nxt:
            return False
        if unwrap(seg.ack, self.snd_una) != self.snd_una or (seg.window << self.snd_wscale) != self.snd_wnd:
            return False
        age_ms = (self.ts_recent - seg.timestamps[0]) & MASK
        if age_ms > self.rtt.rto * 1000:
            return False
        self.stats["paws_disordered_ack"] += 1
        return True

    def _process_ack_only(self, seg: TcpRepr, now: float) -> None:
        ack = unwrap(seg.ack, self.snd_una)
        if self.snd_una <= ack <= self.snd_nxt:
            seq = unwrap(seg.seq, self.rcv_nxt)
            self._process_ack(seg, seq, ack, 0, 0, now)

    def _process_ack(self, seg: TcpRepr, seq: int, ack: int, plen: int, fin, now: float) -> None:
        """RFC 9293 fifth step for ESTABLISHED and later: window, SACK, new data acked."""
        snd_una = self.snd_una
        self._probes_out = 0
        self._last_ack_rx = now
        window = seg.window << self.snd_wscale
        window_changed = False
        if ack >= snd_una and (self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack)):
            if window != self.snd_wnd:
                window_changed = True
                if window > self.snd_wnd:
                    self._want_output = True
                    self._persist_backoff = 0
                self.snd_wnd = window
                if window > self.max_snd_wnd:
                    self.max_snd_wnd = window
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        newly_sacked = 0
        dsack = False
        if self.sack_ok and seg.sack_blocks:
            dsack = self._is_dsack(seg.sack_blocks, ack)
            newly_sacked = self._take_sack(seg.sack_blocks)
            if dsack and self._undo_cc is not None:
                self._dsack_undo(seg.sack_blocks[0], now)
        if ack > snd_una:
            self._new_ack(seg, ack, now)
        elif (
            ack == snd_una
            and self.snd_nxt > snd_una
            and plen == 0
            and not fin
            and (newly_sacked > 0 if self.sack_ok else not window_changed)
        ):
            self._dupack(now)
        if self.sack_ok and self._sacked and self.snd_nxt > self.snd_una:
            if self._recovery is None and self._is_lost(self.snd_una):
                self._enter_fast_recovery(now)
            elif self._recovery == "fast":
                self._mark_lost_sack()
                if newly_sacked and self._rtx_hi:
                    self._detect_lost_retransmits()
        if self._tlp_high is not None:
            self._tlp_episode(ack, dsack, now)

    def _new_ack(self, seg: TcpRepr, ack: int, now: float) -> None:
        """SND.UNA moved to ``ack``: free the buffer, measure, grow cwnd, move states."""
        snd_una = self.snd_una
        acked = ack - snd_una
        base = self._snd_base
        end = base + len(self._sndbuf)
        if ack < end:
            end = ack
        if end > base:
            del self._sndbuf[: end - base]
            self._snd_base = end
            self.bytes_acked += end - base
        self.snd_una = ack
        if self._snd_up is not None and ack >= self._snd_up:
            self._snd_up = None
        if self._sacked or self._lost or self._retrans:
            self._sacked.discard_below(ack)
            self._lost.discard_below(ack)
            self._retrans.discard_below(ack)
            if self._rtx_hi:
                for start in [k for k, (end, _) in self._rtx_hi.items() if end <= ack]:
                    del self._rtx_hi[start]
        # RTT (RFC 7323 RTTM, else the one timed segment; Karn via _rtt_seq reset).
        ts = seg.timestamps
        if self.ts_ok and ts is not None and ts[1]:
            self._ts_sample(ts[1], now)
        elif self._rtt_seq is not None and ack >= self._rtt_seq:
            self.rtt.sample(now - self._rtt_time)
            self._rtt_seq = None
        self._retries = 0
        self._persist_backoff = 0
        if self._undo_tsval is not None and ack > self._undo_una:
            self._eifel_check(ts, now)
        # RFC 6298 5.2/5.3: stop the timer when all is acked, else restart it.
        if self.snd_nxt > ack:
            self._rto_at = now + self.rtt.rto
        else:
            self._rto_at = None
        self._arm_tlp(now)
        rec = self._recovery
        if rec is None:
            self._dupacks = 0
            self._dup_bytes = 0
            # Grow cwnd only while it is what limits sending (RFC 7661's idea, Linux's
            # tcp_is_cwnd_limited): an application- or window-limited flow keeps its cwnd.
            cwnd = self.cc.cwnd
            flight = self.snd_nxt - snd_una
            if flight + self.snd_mss >= cwnd or (cwnd < self.cc.ssthresh and cwnd < 2 * flight):
                self.cc.on_ack(acked, now, self.rtt.srtt)
        elif rec == "fast":
            if ack >= self._recover:
                self._recovery = None
                self._dupacks = 0
                self._dup_bytes = 0
                self.cc.on_recovery_exit(now, self._pipe())
            elif not self.sack_ok:
                # RFC 6582 partial ACK: retransmit the next hole, deflate by what left.
                self._dup_bytes = max(0, self._dup_bytes - acked + self.snd_mss)
                self._lost.add(ack, min(ack + self.snd_mss, self.snd_nxt))
                self._force_rtx = True
            else:
                # With SACK too: the new head is a hole the scoreboard may not
                # call lost yet (nothing SACKed above it); retransmit it now.
                first = self._sacked.ranges()[0][0] if self._sacked else self.snd_nxt
                if first > ack:
                    self._lost.add(ack, min(ack + self.snd_mss, first))
        else:  # "loss": slow start again after an RTO
            self.cc.on_ack(acked, now, self.rtt.srtt)
            if ack >= self._recover:
                self._recovery = None
                self._dupacks = 0
        self._want_output = True
        st = self.state
        if self._fin_queued and ack > self._fin_seq:
            # Our FIN is acknowledged.
            if st is FIN_WAIT_1:
                self._set_state(FIN_WAIT_2)
                if self._orphan:
                    self._close_at = now + self.config.fin_wait2_timeout
            elif st is CLOSING:
                self._enter_time_wait(now)
            elif st is LAST_ACK:
                self._to_closed()
                return
        self._notify()

    def _ts_sample(self, tsecr: int, now: float) -> None:
        d = (self._ts_clock(now) - tsecr) & MASK
        if d < _HALF:
            self.rtt.sample(d / 1000.0)

    def _take_sack(self, blocks) -> int:
        """Record the peer's SACK blocks; return the bytes newly SACKed."""
        una, nxt = self.snd_una, self.snd_nxt
        new = 0
        for left, right in blocks:
            left = unwrap(left, una)
            right = unwrap(right, una)
            if not una < left < right <= nxt:
                continue  # D-SACK or bogus: ignored
            added = self._sacked.add(left, right)
            if added:
                new += added
                self._lost.remove(left, right)
                self._retrans.remove(left, right)
        return new

    def _dupack(self, now: float) -> None:
        self._dupacks += 1
        self.stats["dupacks_in"] += 1
        if not self.sack_ok:
            # Each dupACK means a segment left the network (RFC 5681 inflation /
            # RFC 3042 limited transmit, folded into pipe).
            self._dup_bytes = min(self._dup_bytes + self.snd_mss, self.snd_nxt - self.snd_una)
        if self._recovery is None and self._dupacks >= self.config.dupthresh:
            self._enter_fast_recovery(now)
        self._want_output = True

    def _enter_fast_recovery(self, now: float) -> None:
        self.stats["fast_retransmits"] += 1
        self._start_undo_episode()
        self.cc.on_congestion(now, self.snd_nxt - self.snd_una)
        self._recovery = "fast"
        self._recover = self.snd_nxt
        self._rtt_seq = None
        self._tlp_at = None
        una = self.snd_una
        if self.sack_ok:
            self._mark_lost_sack()
        # The first unacknowledged segment is retransmitted at once (RFC 5681 3.2 / 6675 5 (4.3)).
        first_sacked = self._sacked.ranges()[0][0] if self._sacked else self.snd_nxt
        self._lost.add(una, min(una + self.snd_mss, first_sacked, self.snd_nxt))
        self._force_rtx = True
        self._want_output = True

    def _is_lost(self, seq: int) -> bool:
        return seq < self._lost_boundary()

    def _lost_boundary(self) -> int:
        """RFC 6675 IsLost: everything unSACKed below this is lost."""
        ranges = self._sacked.ranges()
        if not ranges:
            return 0
        k = self.config.dupthresh
        b1 = ranges[-k][0] if len(ranges) >= k else 0
        thr = (k - 1) * self.snd_mss
        acc = 0
        b2 = 0
        for s, e in reversed(ranges):
            if e - s > thr - acc:
                b2 = e - 1 - (thr - acc)
                break
            acc += e - s
        return max(b1, b2)

    def _mark_lost_sack(self) -> None:
        boundary = self._lost_boundary()
        pos = self.snd_una
        if boundary <= pos:
            return
        for s, e in self._sacked:
            if s >= boundary:
                break
            if pos < s:
                self._lost.add(pos, s)
            if e > pos:
                pos = e
        if pos < boundary:
            self._lost.add(pos, boundary)

    def _start_undo_episode(self) -> None:
        """Remember the congestion state before a loss response, in case it proves needless."""
        self._undo_cc = copy.copy(self.cc)
        self._undo_retrans = 0
        self._undo_tsval = None
        self._undo_una = self.snd_una
        self._undo_high = self.snd_nxt

    def _eifel_check(self, ts, now: float) -> None:
        """RFC 3522: an ACK for the first retransmission echoing an older TSval means the
        original got there: the retransmission (and the reduction) were needless."""
        first_rtx_tsval = self._undo_tsval
        self._undo_tsval = None  # one look, at the first ACK covering it
        if ts is None or not ts[1]:
            return
        if (ts[1] - first_rtx_tsval) & MASK >= _HALF:
            self._undo(now, "eifel")

    def _dsack_undo(self, block, now: float) -> None:
        """RFC 3708: each D-SACK for a retransmission of the episode shows one was needless."""
        left = unwrap(block[0], self.snd_una)
        right = unwrap(block[1], self.snd_una)
        if not (self._undo_una <= left < right <= self._undo_high) or self._undo_retrans <= 0:
            return
        self._undo_retrans -= -(-(right - left) // self.snd_mss)
        if self._undo_retrans <= 0:
            self._undo(now, "dsack")

    def _undo(self, now: float, why: str) -> None:
        """Put the congestion state back as it was; nothing was lost after all."""
        restored = self._undo_cc
        self._undo_cc = None
        self._undo_tsval = None
        if restored.cwnd < self.cc.cwnd:
            restored.set_cwnd(self.cc.cwnd)
        self.cc = restored
        if self._recovery is not None:
            self._recovery = None
            self._lost.clear()
            self._retrans.clear()
            self._rtx_hi.clear()
            self._dupacks = 0
            self._dup_bytes = 0
        self.stats["undo_" + why] += 1
        self._want_output = True

    def _is_dsack(self, blocks, ack: int) -> bool:
        """RFC 2883: the first block reports a duplicate (below the ACK or inside the second block)."""
        left = unwrap(blocks[0][0], self.snd_una)
        right = unwrap(blocks[0][1], self.snd_una)
        if right <= ack:
            return True
        if len(blocks) > 1:
            l2 = unwrap(blocks[1][0], self.snd_una)
            r2 = unwrap(blocks[1][1], self.snd_una)
            return l2 <= left and right <= r2
        return False

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 7.2: probe the tail after 2*SRTT without ACKs (never past the RTO)."""
        if (
            not self.sack_ok
            or not self.config.tail_loss_probe
            or self._recovery is not None
            or self._tlp_high is not None
            or self.snd_nxt <= self.snd_una
            or self.rtt.srtt is None
            or self.state not in _SENDING
        ):
            self._tlp_at = None
            return
        pto = max(2 * self.rtt.srtt, 0.01)
        if self.snd_nxt - self.snd_una <= self.snd_mss:
            pto += 0.2  # one segment out: the peer may be delaying its ACK (WCDelAckT)
        at = now + pto
        self._tlp_at = at if self._rto_at is None or at < self._rto_at else None

    def _on_tlp(self, now: float) -> None:
        """Send a tail loss probe: new data if the window allows, else the last segment again."""
        self._tlp_at = None
        una, nxt = self.snd_una, self.snd_nxt
        if nxt <= una or self._recovery is not None or self._tlp_high is not None:
            return
        self.stats["tlp_probes"] += 1
        data_end = self._snd_base + len(self._sndbuf)
        if data_end > nxt and una + self.snd_wnd > nxt:
            self._tlp_force = True  # _send_new sends one segment whatever cwnd says
            self._tlp_rtx = False
        else:
            start = max(una, nxt - self.snd_mss)
            if self._sacked.covered(start, nxt):
                high = self._sacked.high  # probe only what lies above everything SACKed
                if high >= nxt:
                    return
                start = max(start, high)
            self._lost.add(start, nxt)
            self._retrans.remove(start, nxt)
            self._force_rtx = True
            self._tlp_rtx = True
            self._tlp_high = nxt
        self._rto_at = now + self.rtt.rto  # RFC 8985 7.3: the RTO runs again from the probe
        self._want_output = True

    def _tlp_episode(self, ack: int, dsack: bool, now: float) -> None:
        """RFC 8985 7.4: what the ACKs after a probe say."""
        high = self._tlp_high
        if ack >= high:
            self._tlp_high = None
            if self._tlp_rtx and not dsack and self._recovery is None:
                # The probe repaired a loss nobody else saw: respond as fast recovery would.
                self.stats["tlp_recoveries"] += 1
                self.cc.on_congestion(now, self._pipe())
            return
        if self._sacked.contains(high - 1):
            # The probe arrived, the holes below it (all sent earlier) did not: lost.
            self._tlp_high = None
            self.stats["tlp_loss_detected"] += 1
            pos = self.snd_una
            for s, e in self._sacked:
                if pos < s:
                    self._lost.add(pos, s)
                pos = max(pos, e)
            if self._recovery is None:
                self._enter_fast_recovery(now)

    def _detect_lost_retransmits(self) -> None:
        """A retransmission is lost if data sent after it was SACKed (as Linux did
        before RACK): send it again now instead of waiting for the RTO."""
        high = self._sacked.high
        una = self.snd_una
        for start, (end, hi) in list(self._rtx_hi.items()):
            if end <= una or self._retrans.covered(start, end) == 0:
                del self._rtx_hi[start]  # delivered (acked or SACKed)
            elif high is not None and high > hi:
                del self._rtx_hi[start]
                self._retrans.remove(start, end)
                self.stats["lost_retransmits"] += 1

    def _pipe(self) -> int:
        """Bytes believed in the network (RFC 6675 SetPipe, by byte ranges)."""
        p = (self.snd_nxt - self.snd_una) - self._sacked.total - self._lost.total + self._retrans.total - self._dup_bytes
        return p if p > 0 else 0

    def _receive_text(self, seq: int, payload, fin: bool, now: float) -> None:
        """Seventh/eighth steps: queue data in order or out of order, then the FIN."""
        n = len(payload)
        rn = self.rcv_nxt
        if seq == rn:
            had_ooo = bool(self._ooo)
            if n:
                if not self._read_shutdown:
                    self._rx += payload
                self.rcv_nxt = rn = seq + n
                self.bytes_received += n
                if n > self.rcv_mss:
                    self.rcv_mss = n
                self._unacked_rcv += n
            if had_ooo:
                while True:
                    chunk = self._ooo.pop_ready(rn)
                    if chunk is None:
                        break
                    if not self._read_shutdown:
                        self._rx += chunk
                    rn += len(chunk)
                    self.bytes_received += len(chunk)
                self.rcv_nxt = rn
                self._ack_now = True  # a hole was (partly) filled: ACK at once
                self.stats["ooo_filled"] += 1
            fin = fin and seq + n == rn  # (a FIN below data held out of order is bogus)
            if self._ooo_fin is not None and rn == self._ooo_fin:
                fin = True
                self._ooo_fin = None
            if fin:
                self._on_fin(now)
            elif self._ack_now or self._ooo:
                self._ack_now = True
            elif self._unacked_rcv >= 2 * self.rcv_mss:
                self._ack_now = True
            elif n and self._delack_at is None:
                self._delack_at = now + self.config.delayed_ack
            if n or had_ooo:
                self._notify()
        else:
            # Out of order: keep it (bounded), remember a FIN, and send a dupACK now.
            if n:
                added = self._ooo.add(seq, payload)
                if added < 0:
                    self.stats["drop_ooo_full"] += 1
                else:
                    self.stats["ooo_segments"] += 1
                    if added == 0 and self.sack_ok:
                        self._dsack = (seq, seq + n)
            if fin:
                self._ooo_fin = seq + n
            self._ack_now = True
        if self._ack_now:
            self._want_output = True

    def _on_fin(self, now: float) -> None:
        if self._fin_received:
            self._ack_now = True
            return
        self._fin_received = True
        self.rcv_nxt += 1
        self._ack_now = True
        self._want_output = True
        st = self.state
        if st is ESTABLISHED or st is SYN_RECEIVED:
            self._set_state(CLOSE_WAIT)
        elif st is FIN_WAIT_1:
            if self._fin_queued and self.snd_una > self._fin_seq:
                self._enter_time_wait(now)
            else:
                self._set_state(CLOSING)  # simultaneous close
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)
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

    # -- sending ------------------------------------------------------------------------
    def _ts_clock(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & MASK

    def _window_field(self) -> int:
        """The window to advertise, with receiver SWS avoidance (RFC 9293 3.8.6.2.2)."""
        free = self.config.rcvbuf - len(self._rx)
        if free < 0:
            free = 0
        rn = self.rcv_nxt
        edge = self.rcv_adv
        cand = rn + free
        if cand - edge >= self._sws_thresh:
            edge = cand
        win = edge - rn
        if win < 0:
            win = 0
        shift = self.rcv_wscale
        field = win >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        right = rn + (field << shift)
        if right > self.rcv_adv:
            self.rcv_adv = right
        return field

    def _window_update_due(self) -> bool:
        free = self.config.rcvbuf - len(self._rx)
        cand = self.rcv_nxt + free
        cur = self.rcv_adv - self.rcv_nxt
        return cand - self.rcv_adv >= self._sws_thresh and (cand - self.rcv_nxt) >= 2 * cur

    def _make(self, seq: int, flags, payload: bytes, now: float) -> Segment:
        """Build an outgoing segment with ACK, window and options; it carries our ACK."""
        r = TcpRepr(self._lport, self._rport, seq & MASK, self.rcv_nxt & MASK, flags, self._window_field())
        if self.ts_ok:
            r.timestamps = (self._ts_clock(now), self.ts_recent)
        if self.sack_ok and (self._ooo or self._dsack):
            limit = 3 if self.ts_ok else 4
            blocks = []
            if self._dsack is not None:
                blocks.append(self._dsack)
                self._dsack = None
            if self._ooo:
                blocks += self._ooo.sack_blocks(limit - len(blocks))
            r.sack_blocks = tuple((s & MASK, e & MASK) for s, e in blocks)
        self._last_ack_sent = self.rcv_nxt
        self._ack_now = False
        self._delack_at = None
        self._unacked_rcv = 0
        self.segs_out += 1
        return r, payload

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
                self.rcv_nxt & MASK,
                _F_SYN_ACK,
                window,
                mss=cfg.mss,
                window_scale=self.rcv_wscale if self.ws_ok else None,
                sack_permitted=self.sack_ok,
                timestamps=(self._ts_clock(now), self.ts_recent) if self.ts_ok else None,
            )
            self._last_ack_sent = self.rcv_nxt
        self.segs_out += 1
        return r, b""

    def _output(self, now: float, out: list[Segment]) -> None:
        st = self.state
        if st is SYN_SENT or st is SYN_RECEIVED:
            if self._syn_pending:
                self._syn_pending = False
                self._ack_now = False  # a SYN-ACK carries the ACK
                out.append(self._syn_segment(now))
                if self.snd_nxt == self.iss:
                    self.snd_nxt = self.iss + 1
                if self._rto_at is None:
                    self._rto_at = now + self.rtt.rto
                if self._rtt_seq is None and not self._syn_retransmitted:
                    self._rtt_seq = self.iss + 1
                    self._rtt_time = now
            elif self._ack_now:
                if st is SYN_RECEIVED:  # an unacceptable segment: <SEQ=SND.NXT><ACK=RCV.NXT>
                    out.append(self._make(self.snd_nxt, _F_ACK, b"", now))
                self._ack_now = False
            return
        if st is TIME_WAIT:
            if self._ack_now:
                out.append(self._make(self.snd_nxt, _F_ACK, b"", now))
            return
        if st in _SENDING:
            self._send_data(now, out)
        if st is FIN_WAIT_2 and self._orphan and self._close_at is None:
            self._close_at = now + self.config.fin_wait2_timeout
        if self._ack_now:
            out.append(self._make(self.snd_nxt, _F_ACK, b"", now))

    def _send_data(self, now: float, out: list[Segment]) -> None:
        mss = self.snd_mss
        cc = self.cc
        while True:
            if self._lost.total > self._retrans.total and self._retransmit_one(now, out, mss):
                continue
            if not self._send_new(now, out, mss, cc):
                break
        # Persist timer: data waits, nothing is in flight to bring an ACK.
        if (
            self._persist_at is None
            and self._rto_at is None
            and self.snd_nxt == self.snd_una
            and (self._snd_base + len(self._sndbuf) > self.snd_nxt)
        ):
            self._persist_at = now + min(self.rtt.rto * (1 << self._persist_backoff), self.config.max_rto)

    def _retransmit_one(self, now: float, out: list[Segment], mss: int) -> bool:
        rng = None
        for s, e in self._lost:
            rng = self._retrans.first_gap(s, e, mss)
            if rng is not None:
                break
        if rng is None:
            return False
        s, e = rng
        if not self._force_rtx and self._pipe() + (e - s) > self.cc.cwnd:
            return False
        self._force_rtx = False
        self._retrans.add(s, e)
        if self.sack_ok:
            self._rtx_hi[s] = (e, self.snd_nxt)
        if self._recovery is not None and self._undo_cc is not None:
            self._undo_retrans += 1
            if self._undo_retrans == 1 and self.ts_ok:
                self._undo_tsval = self._ts_clock(now)
        flags = _F_ACK
        data_end = e
        if self._fin_queued and e > self._fin_seq:
            flags |= FIN
            data_end = self._fin_seq
        base = self._snd_base
        payload = bytes(self._sndbuf[s - base : data_end - base]) if data_end > s else b""
        if payload and data_end == base + len(self._sndbuf):
            flags |= PSH
        seg = self._make(s, flags, payload, now)
        self._mark_urgent(seg[0], s)
        out.append(seg)
        self.stats["retransmits"] += 1
        self._rtt_seq = None  # Karn: nothing retransmitted is timed
        if self._rto_at is None:
            self._rto_at = now + self.rtt.rto
        return True

    def _send_new(self, now: float, out: list[Segment], mss: int, cc) -> bool:
        """Send one segment of new data (or the FIN); False when nothing may go."""
        nxt = self.snd_nxt
        base = self._snd_base
        data_end = base + len(self._sndbuf)
        left = data_end - nxt
        if left <= 0:
            if self._fin_queued and nxt == self._fin_seq:
                # A bare FIN (it needs no window; MUST-61 PSH rule is moot).
                out.append(self._make(nxt, _F_ACK | FIN, b"", now))
                self.snd_nxt = nxt + 1
                if self._rto_at is None:
                    self._rto_at = now + self.rtt.rto
                return False
            return False
        n = left if left < mss else mss
        usable = self.snd_una + self.snd_wnd - nxt
        force = self._force_send or self._tlp_force
        if usable < n:
            if usable <= 0:
                if force and nxt == self.snd_una:
                    # Zero-window probe: one new octet, not counted as sent
                    # until the peer acknowledges it (MUST-36).
                    self._force_send = False
                    payload = bytes(self._sndbuf[nxt - base : nxt - base + 1])
                    out.append(self._make(nxt, _F_ACK, payload, now))
                    self._probe_end = nxt + 1
                    self.stats["window_probes"] += 1
                return False
            if not force and usable < self.max_snd_wnd // 2:
                return False  # sender SWS avoidance (RFC 9293 3.8.6.2.1)
            n = usable
        elif n < mss and not force and not self.config.nodelay and not self._fin_queued:
            # Nagle with Minshall's refinement (as Linux): hold a partial segment
            # while an earlier partial one is unacknowledged.
            if self._snd_sml > self.snd_una:
                return False
        flight = self._pipe()
        if flight + n > cc.cwnd and flight > 0 and not self._tlp_force:
            return False
        self._force_send = False
        end = nxt + n
        flags = 0x18 if end == data_end else 0x10  # ACK, and PSH on the last of the queue
        if self._fin_queued and end == self._fin_seq:
            flags |= 0x01
        off = nxt - base
        payload = bytes(self._sndbuf[off : off + n])
        seg = self._make(nxt, _FLAG[flags], payload, now)
        if self._snd_up is not None:
            self._mark_urgent(seg[0], nxt)
        out.append(seg)
        self.snd_nxt = end + 1 if flags & 0x01 else end
        self.bytes_sent += n
        if n < mss:
            self._snd_sml = end
        self._probe_end = None
        if self._rtt_seq is None and not self.ts_ok:
            self._rtt_seq = end
            self._rtt_time = now
        if self._rto_at is None:
            self._rto_at = now + self.rtt.rto
        self._persist_at = None
        if self._tlp_force:
            self._tlp_force = False
            self._tlp_high = self.snd_nxt
            return False  # the probe is one segment
        self._arm_tlp(now)
        return not flags & 0x01

    def _mark_urgent(self, r: TcpRepr, seq: int) -> None:
        # MUST-62: the pointer is the offset of the first non-urgent octet.
        up = self._snd_up
        if up is not None and up > seq:
            r.flags |= URG
            r.urgent = min(up - seq, 0xFFFF)

    def _send_dupack(self, now: float, pure: bool) -> None:
        """An ACK for an unacceptable segment; pure ACKs are rate-limited (as Linux)."""
        if pure:
            if now - self._oow_time < self.config.oow_ack_interval:
                self.stats["oow_ack_suppressed"] += 1
                return
            self._oow_time = now
        self._ack_now = True
        self._want_output = True

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 challenge ACK, token-bucket limited per connection (section 7)."""
        cfg = self.config
        tokens = self._chack_tokens + (now - self._chack_time) * cfg.challenge_ack_rate
        if tokens > cfg.challenge_ack_burst:
            tokens = float(cfg.challenge_ack_burst)
        self._chack_time = now
        if tokens < 1.0:
            self._chack_tokens = tokens
            self.stats["challenge_ack_suppressed"] += 1
            return
        self._chack_tokens = tokens - 1.0
        self.stats["challenge_acks"] += 1
        self._ack_now = True
        self._want_output = True

    def _queue_rst(self, wire_seq: int) -> None:
        self._ctl_out.append((TcpRepr(self._lport, self._rport, wire_seq & MASK, 0, RST, 0), b""))
        self.stats["rst_out"] += 1

    # -- timers -------------------------------------------------------------------------
    def _on_rto(self, now: float) -> None:
        self._rto_at = None
        self._tlp_at = None
        self._tlp_high = None
        self._tlp_force = False
        st = self.state
        cfg = self.config
        self.stats["timeouts"] += 1
        if st is SYN_SENT or st is SYN_RECEIVED:
            limit = cfg.syn_retries if st is SYN_SENT else cfg.synack_retries
            if self._retries >= limit:
                if self._passive:
                    self.stats["synack_timeout"] += 1
                    self._to_closed()
                else:
                    self._fail(self._soft_error or errno.ETIMEDOUT)
                return
            self._retries += 1
            self.rtt.on_timeout()
            self._syn_retransmitted = True
            self._rtt_seq = None
            self._syn_pending = True
            self.stats["retransmits"] += 1
            self._want_output = True
            return
        if self.snd_nxt <= self.snd_una:
            return
        self.rtt.on_timeout()
        self._rtt_seq = None
        if self.snd_wnd == 0:
            # The peer shrank its window to zero with data out: our retransmissions
            # are window probes and do not end the connection while it answers
            # (MUST-37); without any ACK for max_rto it does end (as Linux).
            if now - self._last_ack_rx > cfg.max_rto:
                self._fail(self._soft_error or errno.ETIMEDOUT)
                return
        else:
            self._retries += 1
            if self._retries > cfg.max_retries:
                self._fail(self._soft_error or errno.ETIMEDOUT)
                return
            # RFC 5681 3.1 / 6298 5.5: cwnd to one segment, everything out is lost.
            if self._recovery is None:
                self._start_undo_episode()
            else:
                self._undo_tsval = None  # the episode goes on; its first retransmission stays
            self.cc.on_rto(now, self._pipe())
            self._recovery = "loss"
            self._recover = self.snd_nxt
            self._dupacks = 0
            self._dup_bytes = 0
            self._retrans.clear()
            self._rtx_hi.clear()
            pos = self.snd_una
            for s, e in self._sacked:
                if pos < s:
                    self._lost.add(pos, s)
                pos = max(pos, e)
            if pos < self.snd_nxt:
                self._lost.add(pos, self.snd_nxt)
        if self.snd_wnd == 0:
            head = min(self.snd_una + self.snd_mss, self.snd_nxt)
            self._lost.add(self.snd_una, head)
            self._retrans.remove(self.snd_una, head)
        self._force_rtx = True
        self._rto_at = now + self.rtt.rto
        self._want_output = True

    def _on_persist(self, now: float) -> None:
        self._persist_at = None
        if self.snd_nxt != self.snd_una or self._snd_base + len(self._sndbuf) <= self.snd_nxt:
            self._persist_backoff = 0
            return
        self._probes_out += 1
        if self._probes_out > self.config.max_retries:
            self._fail(self._soft_error or errno.ETIMEDOUT)
            return
        if self.rtt.rto * (1 << self._persist_backoff) < self.config.max_rto:
            self._persist_backoff += 1
        self._force_send = True
        self._want_output = True

    def _on_keepalive(self, now: float, out: list[Segment]) -> None:
        cfg = self.config
        if self._ka_probes == 0 and now < self._last_rx + cfg.keepalive_idle:
            self._ka_at = self._last_rx + cfg.keepalive_idle
            return
        if self.snd_nxt != self.snd_una or self._snd_base + len(self._sndbuf) > self.snd_nxt:
            # Data is moving (or stuck): the retransmission timer watches it.
            self._ka_at = now + cfg.keepalive_idle
            return
        if self._ka_probes >= cfg.keepalive_count:
            self.stats["keepalive_timeout"] += 1
            self._fail(self._soft_error or errno.ETIMEDOUT)
            return
        self._ka_probes += 1
        self.stats["keepalives"] += 1
        # SEG.SEQ = SND.NXT - 1, no data: the peer must answer with an ACK (SHLD-12).
        out.append(self._make(self.snd_nxt - 1, _F_ACK, b"", now))
        self._ka_at = now + cfg.keepalive_interval

    # -- state changes ----------------------------------------------------------------
    def _set_state(self, st: TcpState) -> None:
        self.state = st

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(TIME_WAIT)
        self._rto_at = self._persist_at = self._delack_at = self._ka_at = self._tlp_at = None
        self._close_at = now + self.config.time_wait
        self._sndbuf.clear()
        self._lost.clear()
        self._retrans.clear()
        self._rtx_hi.clear()
        self._sacked.clear()

    def _fail(self, err: int) -> None:
        """The connection ended with an error for the application."""
        self.error = err
        self.stats["failed"] += 1
        self._to_closed()

    def _to_closed(self) -> None:
        was = self.state
        self._set_state(CLOSED)
        self._rto_at = self._persist_at = self._delack_at = self._ka_at = self._close_at = self._tlp_at = None
        self._ack_now = False
        self._syn_pending = False
        self._sndbuf.clear()
        self._ooo.clear()
        self._lost.clear()
        self._retrans.clear()
        self._rtx_hi.clear()
        self._sacked.clear()
        if self.listener is not None and was is SYN_RECEIVED:
            self.listener._forget(self)
        self._notify()

    def _notify(self) -> None:
        cb = self.on_change
        if cb is not None:
            cb()

    def may_reopen(self, seg: TcpRepr) -> bool:
        """TIME-WAIT: may this SYN start a new incarnation (MAY-2, RFC 6191)?"""
        if self.state is not TIME_WAIT or not seg.flags & SYN or seg.flags & (ACK | RST):
            return False
        if self.ts_ok and seg.timestamps is not None:
            return (seg.timestamps[0] - self.ts_recent) & MASK < _HALF and seg.timestamps[0] != self.ts_recent
        return unwrap(seg.seq, self.rcv_nxt) > self.rcv_nxt

    def __repr__(self) -> str:
        return f"<TcpConnection {self.local[0]}:{self.local[1]} -> {self.remote[0]}:{self.remote[1]} {self.state}>"
