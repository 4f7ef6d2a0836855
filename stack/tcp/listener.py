"""A listening socket: the SYN queue and the accept queue (sans-IO).

A SYN that reaches a listener makes a :class:`TcpConnection` in
SYN-RECEIVED, kept in the *SYN queue* until the handshake's last ACK
arrives; it then moves to the *accept queue*, where :meth:`accept` finds it.

What ``backlog`` means (as in Linux since 2.2): it bounds the accept queue
only, the connections that completed the handshake and wait for accept().
Like Linux the queue counts as full when it holds *more than* ``backlog``
connections, so ``listen(0)`` still lets one connection wait. While it is
full, new SYNs are dropped (the client retries its SYN later) and a
handshake's final ACK is dropped too (the connection stays in SYN-RECEIVED
and retransmits its SYN-ACK). The SYN queue holds at most as many
connections as the accept queue (and at least 8, the floor Linux's SYN queue
had before 4.4), so it grows with the backlog as in Linux
(``inet_csk_reqsk_queue_is_full``), and never more than ``max_syn_backlog`` (Linux's ``tcp_max_syn_backlog``, here
a bound on the memory half-open connections may take); a SYN flood beyond it
is dropped (or answered with a cookie) and counted, and connections already
queued are unaffected. So a server that expects many clients at once asks
for a large backlog (``listen(SOMAXCONN)``), and both queues grow with it.
Values above ``somaxconn`` (4096) or below zero are clamped to it, as in Linux.

SYN cookies (RFC 4987, on by default like Linux's ``tcp_syncookies=1``): while
the SYN queue is full, a SYN is answered with a SYN-ACK whose ISN is a keyed
MAC of the 4-tuple, a 64-second time slot and the MSS, and nothing is kept.
An ACK that returns a valid cookie (at most two slots old) becomes an
ESTABLISHED connection straight away, so a SYN flood cannot lock legitimate
clients out. Such a connection has no window scaling, SACK or timestamps,
because the cookie cannot carry them.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Callable

from stack.tcp.config import TcpConfig
from stack.tcp.connection import Endpoint, TcpConnection
from stack.tcp.seq import MASK, IsnGenerator, seq_lt
from stack.tcp.state import TcpState
from stack.wire.tcp import TcpFlags, TcpRepr

__all__ = ["TcpListener", "ListenerInfo", "SOMAXCONN", "COOKIE_MSS", "COOKIE_QUEUE_FULL"]

SOMAXCONN = 4096
MIN_SYN_QUEUE = 8  # a small backlog still lets a few handshakes overlap
COOKIE_MSS = (536, 1220, 1440, 1460)  # what a cookie can say about the peer's MSS (2 bits)
_COOKIE_SLOT = 64.0  # seconds per time slot; a cookie is good for this slot and the last
_COOKIE_MAC_BITS = 25


class _QueueFull:
    """The type of :data:`COOKIE_QUEUE_FULL`."""

    def __repr__(self) -> str:
        return "COOKIE_QUEUE_FULL"


COOKIE_QUEUE_FULL = _QueueFull()  # on_cookie_ack: a good cookie, but no room to accept it


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """A snapshot of one listener, the LISTEN line of ``ss -tl`` plus its counters."""

    local: Endpoint
    backlog: int
    pending: int  # waiting for accept() (the accept queue)
    embryonic: int  # in the SYN queue
    max_syn_backlog: int = 0  # the SYN queue's bound (the backlog, capped by the stack's max_syn_backlog)
    state: TcpState = TcpState.LISTEN  # CLOSED once the listener was shut down
    # The listener's own counters (a copy of ``TcpListener.stats``): "syn_received",
    # "established", "accepted", "syn_cookies_sent", "cookie_established",
    # "cookie_invalid", "cookie_expired", "syn_drop_syn_queue_full",
    # "syn_drop_accept_queue_full", "ack_drop_accept_queue_full", "embryonic_dropped"...
    # (a name appears with its first count). Left out of the hash: a dict has none.
    counters: dict[str, int] = field(default_factory=dict, hash=False)


class TcpListener:
    """LISTEN on ``local`` (the address may be 0.0.0.0)."""

    state = TcpState.LISTEN

    def __init__(
        self,
        local: Endpoint,
        backlog: int,
        config: TcpConfig | None = None,
        isn: IsnGenerator | None = None,
        *,
        max_syn_backlog: int = SOMAXCONN,
        syncookies: bool = True,
        cookie_key: bytes | None = None,
    ) -> None:
        self.local = local
        self.backlog = SOMAXCONN if backlog < 0 or backlog > SOMAXCONN else backlog
        self.config = config or TcpConfig()
        self.isn = isn or IsnGenerator()
        self.max_syn_backlog = max(1, max_syn_backlog)
        self._syn_queue: dict[tuple[Endpoint, Endpoint], TcpConnection] = {}
        self._accept_queue: deque[TcpConnection] = deque()
        self.closed = False
        self.syncookies = syncookies
        self._cookie_key = cookie_key if cookie_key is not None else os.urandom(32)
        self._cookies_sent_at: float | None = None
        self.on_change: Callable[[], None] | None = None
        self.stats: Counter[str] = Counter()

    def listen(self, backlog: int) -> None:
        """Change the backlog (a second listen() call)."""
        self.backlog = SOMAXCONN if backlog < 0 or backlog > SOMAXCONN else backlog

    @property
    def accept_queue_full(self) -> bool:
        return len(self._accept_queue) > self.backlog

    @property
    def syn_queue_bound(self) -> int:
        """How many half-open connections the SYN queue holds: as many as the accept queue takes
        (``backlog`` + 1, see :attr:`accept_queue_full`) but at least ``MIN_SYN_QUEUE``, capped by
        ``max_syn_backlog``."""
        return min(max(self.backlog + 1, MIN_SYN_QUEUE), self.max_syn_backlog)

    @property
    def syn_queue_full(self) -> bool:
        return len(self._syn_queue) >= self.syn_queue_bound

    @property
    def pending(self) -> int:
        """Connections waiting for accept()."""
        return len(self._accept_queue)

    @property
    def embryonic(self) -> int:
        """Connections in the SYN queue."""
        return len(self._syn_queue)

    @property
    def readable(self) -> bool:
        return bool(self._accept_queue) or self.closed

    def info(self) -> ListenerInfo:
        """A snapshot: queues, bounds and counters."""
        return ListenerInfo(
            self.local,
            self.backlog,
            len(self._accept_queue),
            len(self._syn_queue),
            self.syn_queue_bound,
            TcpState.CLOSED if self.closed else TcpState.LISTEN,
            dict(self.stats),
        )

    def on_syn(
        self, local_ip: IPv4Address, remote: Endpoint, syn: TcpRepr, now: float, *, iss_floor: int | None = None
    ) -> TcpConnection | None:
        """A SYN for us (no ACK, no RST): a new SYN-RECEIVED connection, or None if dropped.

        ``iss_floor`` (a wire sequence number) is set when the SYN ends a
        TIME-WAIT: the new ISN must lie beyond the old connection's SND.NXT
        (RFC 1122 4.2.2.13), so old duplicates cannot fall into the new one.
        """
        if self.closed:
            return None
        if self.accept_queue_full:
            self.stats["syn_drop_accept_queue_full"] += 1
            return None
        if self.syn_queue_full:
            self.stats["syn_drop_syn_queue_full"] += 1
            return None
        local = (local_ip, self.local[1])
        key = (local, remote)
        if key in self._syn_queue:
            return None  # the glue delivers to that connection; never two
        iss = self.isn.isn(local_ip, local[1], remote[0], remote[1], now)
        if iss_floor is not None and seq_lt(iss, iss_floor):
            iss = iss_floor
        tso = self.isn.ts_offset(local_ip, local[1], remote[0], remote[1])
        conn = TcpConnection.from_syn(local, remote, syn, iss, now, self.config, ts_offset=tso, listener=self)
        self._syn_queue[key] = conn
        self.stats["syn_received"] += 1
        return conn

    # -- SYN cookies ---------------------------------------------------------------------
    def _cookie_mac(self, local_ip, lport: int, remote: Endpoint, irs: int, slot: int, mss_index: int) -> int:
        data = b"".join(
            (
                int(local_ip).to_bytes(4, "big"),
                lport.to_bytes(2, "big"),
                int(remote[0]).to_bytes(4, "big"),
                remote[1].to_bytes(2, "big"),
                irs.to_bytes(4, "big"),
                bytes((slot, mss_index)),
            )
        )
        h = hashlib.blake2s(data, key=self._cookie_key, digest_size=4).digest()
        return int.from_bytes(h, "big") & ((1 << _COOKIE_MAC_BITS) - 1)

    def cookie_synack(self, local_ip: IPv4Address, remote: Endpoint, syn: TcpRepr, now: float) -> TcpRepr | None:
        """The stateless SYN-ACK for ``syn`` while the SYN queue is full (None: cookies off)."""
        if not self.syncookies or self.closed or self.accept_queue_full:
            return None
        peer_mss = syn.mss if syn.mss is not None else 536
        mss_index = max(i for i, m in enumerate(COOKIE_MSS) if m <= max(peer_mss, 536))
        slot = int(now // _COOKIE_SLOT) & 0x1F
        # ISN: 5 bits of time slot, 2 bits of MSS, 25 bits of MAC.
        cookie = (slot << 27) | (mss_index << 25) | self._cookie_mac(local_ip, self.local[1], remote, syn.seq, slot, mss_index)
        self._cookies_sent_at = now
        self.stats["syn_cookies_sent"] += 1
        window = min(self.config.rcvbuf, 0xFFFF)
        return TcpRepr(
            self.local[1], remote[1], cookie, (syn.seq + 1) & MASK, TcpFlags.SYN | TcpFlags.ACK, window,
            mss=min(self.config.mss, 0xFFFF),
        )

    def on_cookie_ack(
        self, local_ip: IPv4Address, remote: Endpoint, ack: TcpRepr, now: float
    ) -> TcpConnection | None | _QueueFull:
        """An ACK with no connection: a connection if it returns a valid cookie, else None (the
        owner answers with a RST). :data:`COOKIE_QUEUE_FULL` when the cookie is good but the accept
        queue is full: the owner drops the ACK silently (as Linux), and the peer's next segment
        (data, or a retransmission) tries again."""
        if self._cookies_sent_at is None or now - self._cookies_sent_at > 2 * _COOKIE_SLOT or self.closed:
            return None
        cookie = (ack.ack - 1) & MASK
        irs = (ack.seq - 1) & MASK
        slot, mss_index, mac = cookie >> 27, (cookie >> 25) & 3, cookie & ((1 << _COOKIE_MAC_BITS) - 1)
        now_slot = int(now // _COOKIE_SLOT) & 0x1F
        if slot not in (now_slot, (now_slot - 1) & 0x1F):
            self.stats["cookie_expired"] += 1
            return None
        if mac != self._cookie_mac(local_ip, self.local[1], remote, irs, slot, mss_index):
            self.stats["cookie_invalid"] += 1
            return None
        if self.accept_queue_full:
            self.stats["cookie_drop_accept_queue_full"] += 1
            return COOKIE_QUEUE_FULL
        local = (local_ip, self.local[1])
        conn = TcpConnection.from_cookie(local, remote, cookie, irs, COOKIE_MSS[mss_index], ack, now, self.config)
        self._accept_queue.append(conn)
        self.stats["cookie_established"] += 1
        self._notify()
        return conn

    def accept(self) -> TcpConnection | None:
        """The oldest connection that completed its handshake, or None."""
        if not self._accept_queue:
            return None
        conn = self._accept_queue.popleft()
        conn.listener = None
        self.stats["accepted"] += 1
        return conn

    def close(self) -> list[TcpConnection]:
        """Stop listening: every queued connection is aborted (RST), as Linux does.

        Returns them so the owner keeps polling until their RSTs are out.
        """
        self.closed = True
        victims = list(self._syn_queue.values()) + list(self._accept_queue)
        self._syn_queue.clear()
        self._accept_queue.clear()
        for conn in victims:
            conn.listener = None
            conn.abort()
        self._notify()
        return victims

    # -- called by the child connections -------------------------------------------
    def _admit(self, conn: TcpConnection) -> bool:
        """The handshake of ``conn`` completes: move it to the accept queue if there is room."""
        if self.accept_queue_full:
            self.stats["ack_drop_accept_queue_full"] += 1
            return False
        self._syn_queue.pop((conn.local, conn.remote), None)
        self._accept_queue.append(conn)
        self.stats["established"] += 1
        self._notify()
        return True

    def _forget(self, conn: TcpConnection) -> None:
        """``conn`` died in SYN-RECEIVED (RST, timeout, new SYN)."""
        if self._syn_queue.pop((conn.local, conn.remote), None) is not None:
            self.stats["embryonic_dropped"] += 1

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()
