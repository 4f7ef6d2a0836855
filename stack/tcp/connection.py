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

The connection's state lives in owner objects, each with a narrow
interface: :class:`~stack.tcp.send_space.SendSpace` (``snd``: SND.UNA,
SND.NXT, SND.WND and the unacknowledged bytes),
:class:`~stack.tcp.receive_window.ReceiveWindow` (``rcv``: RCV.NXT and the
window we advertise), :class:`~stack.tcp.receive_queue.ReceiveQueue` (``rx``:
what was received and not read), :class:`~stack.tcp.scoreboard.Scoreboard`,
:class:`~stack.tcp.recovery.LossRecovery`,
:class:`~stack.tcp.timers.ConnectionTimers`, ``cc`` and ``rtt``. The states
and the closing transitions are data in :mod:`stack.tcp.state`.

This module composes them: constructors, the application calls and state
changes. The protocol machinery is split by concern into base classes
holding methods only (they own no state):
:mod:`~stack.tcp.conn_receive` (segment arrival, RFC 5961 checks, text, FIN),
:mod:`~stack.tcp.conn_handshake` (SYN processing, options, SYN/SYN-ACK),
:mod:`~stack.tcp.conn_ack` (ACK processing, SACK blocks, dupACKs),
:mod:`~stack.tcp.conn_recovery` (fast recovery, undo, tail loss probes),
:mod:`~stack.tcp.conn_send` (building and sending segments) and
:mod:`~stack.tcp.conn_timers` (``poll``/``poll_at`` and the timers).
Shared names are in :mod:`~stack.tcp.conn_defs`.
"""
from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

from stack.tcp.ack_limits import AckLimits
from stack.tcp.config import DEFAULT_SEND_MSS, TcpConfig
from stack.tcp.congestion import make_congestion_control
from stack.tcp.conn_ack import AckMixin
from stack.tcp.conn_defs import (
    _HALF,
    _MIN_SND_MSS,
    _TS_OPTION_LEN,
    ACK,
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_2,
    RST,
    SYN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    Endpoint,
    Segment,
)
from stack.tcp.conn_handshake import HandshakeMixin
from stack.tcp.conn_receive import ReceiveMixin
from stack.tcp.conn_recovery import RecoveryMixin
from stack.tcp.conn_send import SendMixin
from stack.tcp.conn_timers import TimerMixin
from stack.tcp.cwnd_use import CwndUse
from stack.tcp.receive_queue import ReceiveQueue
from stack.tcp.receive_window import ReceiveWindow
from stack.tcp.recovery import LossRecovery
from stack.tcp.rtt import RttEstimator, TimedSegment
from stack.tcp.scoreboard import Scoreboard
from stack.tcp.send_space import SendSpace
from stack.tcp.seq import MASK, unwrap
from stack.tcp.state import AFTER_CLOSE, RECEIVING, RST_ON_ABORT, SENDING, TcpState
from stack.tcp.timers import ConnectionTimers
from stack.wire.tcp import TcpRepr

__all__ = ["TcpConnection", "TcpInfo", "Endpoint", "Segment"]


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
    options: tuple[str, ...]  # "ts", "sack", "wscale:S,R", and "nodelay" when TCP_NODELAY is set
    error: int | None
    # The engine's own per-connection counters (a copy of ``TcpConnection.stats``:
    # "retransmits", "dupacks_in", "drop_out_of_window", "rst_challenged"...; a
    # name appears with its first count). Left out of the hash: a dict has none.
    counters: dict[str, int] = field(default_factory=dict, hash=False)


class TcpConnection(ReceiveMixin, HandshakeMixin, AckMixin, RecoveryMixin, SendMixin, TimerMixin):
    """A TCP connection between ``local`` and ``remote`` (sans-IO).

    Make one with :meth:`connect` (active open, SYN-SENT) or
    :meth:`from_syn` (passive open from a listener, SYN-RECEIVED).
    The ``conn_*`` base classes hold methods only: a method found through
    them costs the same attribute lookup as one defined here (the hot path
    stays flat).
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
        # Send sequence space (unwrapped) and the bytes not yet acknowledged.
        self.snd = SendSpace(self.iss)
        # Receive sequence space.
        self.irs: int | None = None
        self.rcv = ReceiveWindow(cfg.rcvbuf, cfg.mss, min(DEFAULT_SEND_MSS, cfg.mss))
        # Options.
        self.ts_ok = False
        self.sack_ok = False
        self.ws_ok = False
        self.ts_recent = 0
        self._ts_offset = ts_offset & MASK
        self.snd_mss = min(DEFAULT_SEND_MSS, cfg.mss)
        # Received and not yet read (in order and out of order, FIN, urgent mark, D-SACK).
        self.rx = ReceiveQueue(cfg.ooo_bytes, cfg.max_ooo_blocks)
        self._orphan = False  # the application closed it: nobody will read
        # Loss recovery: the scoreboard (RFC 6675), the episode (with its undo record and tail probe).
        self.scoreboard = Scoreboard()
        self.recovery = LossRecovery()
        self._force_rtx = False  # retransmit the next lost range whatever cwnd says
        self.cwnd_use = CwndUse()  # was cwnd the limit on sending (cwnd grows only then)
        self.cc = make_congestion_control(cfg.congestion, self.snd_mss, cfg.initial_window)
        self.rtt = RttEstimator(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
        self.timed = TimedSegment()  # RTT samples without timestamps
        # Timers (absolute times or None).
        self.timers = ConnectionTimers()
        self._last_rx = 0.0
        self._last_ack_rx = 0.0
        self._force_send = False
        # Output.
        self._syn_pending = False
        self._ack_now = False
        self._want_output = False
        self._ctl_out: list[Segment] = []
        self.ack_limits = AckLimits(cfg.challenge_ack_burst)
        # The socket layer's view.
        self.error: int | None = None  # pending asynchronous error (errno)
        self._soft_error: int | None = None  # ICMP errors kept for a timeout (RFC 1122 4.2.3.9)
        self._connected = False
        self._passive = False
        self.listener = listener
        self.on_change: Callable[[], None] | None = None
        # The owner's schedule (stack.tcp.poll_schedule): told after every application
        # call, since any of them may move poll_at() earlier.
        self.on_touch: Callable[[TcpConnection], None] | None = None
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
        conn.snd.nxt = conn.iss  # the SYN is "sent" when poll emits it
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
        conn.rcv.open(irs + 1, min(conn.config.rcvbuf, 0xFFFF))
        conn.snd.una = conn.snd.nxt = conn.iss + 1
        conn.snd_mss = max(min(mss, conn.config.mss), _MIN_SND_MSS)
        conn.rcv.mss = min(conn.config.mss, DEFAULT_SEND_MSS)
        conn.cc.set_mss(conn.snd_mss)
        conn.snd.set_window(ack.window, conn.rcv.nxt, conn.snd.una)
        conn._last_rx = now
        conn._established(now)
        conn.stats["from_syn_cookie"] += 1
        return conn

    def configure(self, **changes) -> None:
        """Change settings (``nodelay``, ``rcvbuf``, ``sndbuf``, ``keepalive*``...) now."""
        cfg = replace(self.config, **changes)
        self.config = cfg
        self.rcv.configure(cfg.rcvbuf, cfg.mss)
        self.rx.ooo.max_bytes = cfg.ooo_bytes
        if "keepalive" in changes or "keepalive_idle" in changes:
            self.timers.keepalive.reset()
        if "congestion" in changes and changes["congestion"].lower() != self.cc.name:
            # TCP_CONGESTION on a live connection: the new algorithm starts from today's window.
            old = self.cc
            self.cc = make_congestion_control(cfg.congestion, self.snd_mss, cfg.initial_window)
            self.cc.ssthresh = old.ssthresh
            self.cc.set_cwnd(old.cwnd)
            self.recovery.undo.forget()
        self._want_output = True
        self._touch()
        self._notify()

    # -- application calls ------------------------------------------------------------
    def send(self, data, urgent: bool = False) -> int:
        """Queue ``data``; return how many bytes fit the send buffer (maybe 0).

        Raises ``OSError(EPIPE)`` once the sending side is shut down or the
        connection is gone (the pending error, if any, is raised instead).
        With ``urgent`` the urgent pointer marks the end of this data (MUST-30).
        """
        if self.state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT) or self.snd.fin_queued:
            if self.error is not None:
                err, self.error = self.error, None
                raise OSError(err, errno.errorcode.get(err, str(err)))
            raise OSError(errno.EPIPE, "the connection cannot send any more")
        room = self.config.sndbuf - len(self.snd.buf)
        n = len(data)
        if n > room:
            n = room if room > 0 else 0
        if n:
            self.snd.buf += data[:n] if n < len(data) else data
            if urgent:
                self.snd.up = self.snd.data_end
            self._want_output = True
            self._touch()
        return n

    def recv(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` received bytes; ``b""`` if none are waiting.

        Whether ``b""`` means end of stream is :attr:`eof`; an error is in
        :attr:`error`.
        """
        data = self.rx.read(max_bytes)
        if not data:
            return b""
        free = self.config.rcvbuf - len(self.rx.data)
        if self.state in RECEIVING and self.rcv.update_due(free) and not self.rcv.update_due(free - len(data)):
            # This read opened the window enough to tell the peer now (never delay this).
            # (A window that could grow before the read, as just after the handshake,
            # whose SYN cannot carry a scaled window, travels on our next segment:
            # a request read and answered at once costs one segment, not two.)
            self._ack_now = True
            self._want_output = True
            self._touch()
        return data

    def shutdown_write(self) -> None:
        """Half-close: a FIN follows the queued data (CLOSE of RFC 9293 3.10.4)."""
        st = self.state
        self._touch()
        if st is SYN_SENT:
            self._to_closed()
            return
        if self.snd.fin_queued or st not in (SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return
        self.snd.queue_fin()
        self._follow(AFTER_CLOSE, 0.0)  # (SYN-RECEIVED: the FIN waits for ESTABLISHED)
        self._want_output = True

    def shutdown_read(self) -> None:
        """No more reading: queued data is dropped, later data is acked and dropped."""
        self.rx.shutdown()
        self._touch()
        self._notify()

    def close(self) -> None:
        """The application is done. Unread data makes it an abort with RST (as Linux)."""
        st = self.state
        if st is CLOSED:
            return
        self._touch()
        if st is SYN_SENT:
            self._to_closed()
            return
        if self.rx.data and st in RST_ON_ABORT:
            self.stats["rst_unread_data"] += 1
            self.abort()
            return
        self._orphan = True
        self.rx.read_shutdown = True
        self.shutdown_write()
        if self.state is FIN_WAIT_2:
            self._want_output = True  # poll arms the FIN-WAIT-2 timeout

    def abort(self) -> None:
        """ABORT: send RST where RFC 9293 3.10.5 says so, then CLOSED."""
        if self.state in RST_ON_ABORT:
            self._ctl_out.append((TcpRepr(self._lport, self._rport, self.snd.nxt & MASK, 0, RST, 0), b""))
            self.stats["rst_out"] += 1
        self._touch()
        self._to_closed()

    def icmp_error(self, err: int, hard: bool = False) -> None:
        """An ICMP error about this connection (RFC 9293 3.9.1, MUST-56).

        Soft errors (unreachable net/host, time exceeded) never abort: they
        are kept and reported if the connection later times out. A hard
        error (``hard=True``, e.g. port or protocol unreachable) aborts a
        connection that is still opening, like Linux.
        """
        self._touch()
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
        self._touch()
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
        if mss >= self.snd_mss or self.state not in SENDING:
            return
        self._touch()
        self.snd_mss = mss
        self.cc.mss = mss
        self.stats["pmtu_reductions"] += 1
        self.scoreboard.forget_retransmissions()
        self.scoreboard.mark_unsacked_lost(self.snd.una, self.snd.nxt)  # resent at the new, smaller size
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
        if self.rx.data:
            return False
        return self.rx.fin_received or self.rx.read_shutdown or self.state is CLOSED

    @property
    def readable(self) -> bool:
        return bool(self.rx.data) or self.eof or self.error is not None

    @property
    def writable(self) -> bool:
        """A send would accept data now, or the connection failed (poll wakes up)."""
        if self.error is not None:
            return True
        if self.state is CLOSED:
            return True  # failed or closed: a send fails at once instead of blocking
        if self.state not in (ESTABLISHED, CLOSE_WAIT) or self.snd.fin_queued:
            return False
        queued = len(self.snd.buf)
        free = self.config.sndbuf - queued
        return free > 0 and free >= queued // 2

    @property
    def finished(self) -> bool:
        """CLOSED with nothing left to send: the owner may forget this connection."""
        return self.state is CLOSED and not self._ctl_out

    @property
    def send_queue(self) -> int:
        return len(self.snd.buf)

    @property
    def recv_queue(self) -> int:
        return len(self.rx.data)

    @property
    def all_acked(self) -> bool:
        """Everything sent and queued (FIN included) was acknowledged (for SO_LINGER)."""
        return not self.snd.buf and (not self.snd.fin_queued or self.snd.fin_acked)

    @property
    def urgent_pending(self) -> int:
        """Urgent bytes received and not yet read (MUST-33); data stays in line."""
        return self.rx.urgent_pending(self.rcv.nxt)

    def info(self) -> TcpInfo:
        """A snapshot for ``ss -ti``-style listings."""
        cc = self.cc
        options = []
        if self.ts_ok:
            options.append("ts")
        if self.sack_ok:
            options.append("sack")
        if self.snd.wscale or self.rcv.wscale:
            options.append(f"wscale:{self.snd.wscale},{self.rcv.wscale}")
        if self.config.nodelay:
            options.append("nodelay")
        return TcpInfo(
            state=self.state,
            local=self.local,
            remote=self.remote,
            send_queue=len(self.snd.buf),
            recv_queue=len(self.rx.data),
            snd_mss=self.snd_mss,
            rcv_mss=self.rcv.mss,
            cwnd=cc.cwnd,
            ssthresh=None if cc.ssthresh >= 1 << 62 else cc.ssthresh,
            srtt=self.rtt.srtt,
            rttvar=self.rtt.rttvar,
            rto=self.rtt.rto,
            snd_wnd=self.snd.wnd,
            rcv_wnd=self.rcv.available,
            in_flight=self._pipe(),
            retransmits=self.stats["retransmits"],
            timeouts=self.stats["timeouts"],
            fast_retransmits=self.stats["fast_retransmits"],
            bytes_acked=self.bytes_acked,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            segs_in=self.segs_in,
            segs_out=self.segs_out,
            sacked=self.scoreboard.sacked.total,
            lost=self.scoreboard.lost.total,
            congestion=cc.name,
            options=tuple(options),
            error=self.error,
            counters=dict(self.stats),
        )

    # -- state changes ----------------------------------------------------------------
    def _set_state(self, st: TcpState) -> None:
        self.state = st

    def _follow(self, table: dict[TcpState, TcpState], now: float) -> None:
        """Move as ``table`` (one of :mod:`stack.tcp.state`'s) says for this state, if at all."""
        target = table.get(self.state)
        if target is TIME_WAIT:
            self._enter_time_wait(now)
        elif target is CLOSED:
            self._to_closed()
        elif target is not None:
            self._set_state(target)

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(TIME_WAIT)
        self.timers.stop_all()
        self.timers.close.start(now + self.config.time_wait)
        self.snd.buf.clear()
        self.scoreboard.clear()

    def _fail(self, err: int) -> None:
        """The connection ended with an error for the application."""
        self.error = err
        self.stats["failed"] += 1
        self._to_closed()

    def _to_closed(self) -> None:
        was = self.state
        self._set_state(CLOSED)
        self.timers.stop_all()
        self._ack_now = False
        self._syn_pending = False
        self.snd.buf.clear()
        self.rx.ooo.clear()
        self.scoreboard.clear()
        if self.listener is not None and was is SYN_RECEIVED:
            self.listener._forget(self)
        self._notify()

    def _touch(self) -> None:
        cb = self.on_touch
        if cb is not None:
            cb(self)

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
        return unwrap(seg.seq, self.rcv.nxt) > self.rcv.nxt

    def __repr__(self) -> str:
        return f"<TcpConnection {self.local[0]}:{self.local[1]} -> {self.remote[0]}:{self.remote[1]} {self.state}>"
