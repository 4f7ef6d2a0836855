"""Test doubles: two TCP endpoints on a simulated link with a virtual clock.

Like h11's ``ConnectionPair`` and aioquic's ``client_and_server()``: nothing
runs by itself. :class:`LinkPair` moves segments between a client
:class:`TcpConnection` and a server behind a :class:`TcpListener`, through
real wire bytes (``TcpRepr.emit`` then ``TcpRepr.parse`` with checksums),
over a link with a one-way delay, an optional rate and queue limit, and
seeded loss, reordering, duplication and corruption. Time only moves in
:meth:`LinkPair.run`, from event to event, so a test of minutes of TCP time
takes milliseconds and always gives the same result for the same seed.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Callable

from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.listener import TcpListener
from stack.tcp.seq import IsnGenerator
from stack.wire import MalformedPacket
from stack.wire.tcp import TcpFlags, TcpRepr

__all__ = ["LayerPair", "LinkConfig", "LinkPair", "SegmentDriver", "flag_string", "CLIENT", "SERVER"]

CLIENT = (IPv4Address("10.0.0.1"), 40000)
SERVER = (IPv4Address("10.0.0.2"), 80)


@dataclass
class LinkConfig:
    """One direction of the simulated link."""

    delay: float = 0.005  # one-way propagation, seconds
    rate: float | None = None  # bytes per second; None: infinitely fast
    queue_bytes: int = 1 << 20  # drop-tail queue in front of a rate-limited link
    loss: float = 0.0  # probability a segment vanishes
    reorder: float = 0.0  # probability a segment is held back
    reorder_delay: float = 0.004  # how long a held-back segment waits extra
    duplicate: float = 0.0  # probability a segment arrives twice
    corrupt: float = 0.0  # probability one byte is flipped (the checksum catches it)
    drop_filter: Callable[[TcpRepr, bytes], bool] | None = None  # True: drop this one


@dataclass
class _Direction:
    cfg: LinkConfig
    free_at: float = 0.0
    queued: list = field(default_factory=list)  # (departure time, size) still in the queue
    sent: int = 0
    dropped: int = 0
    corrupted: int = 0


class LinkPair:
    """A client connection and a listening server joined by a fake link."""

    def __init__(
        self,
        client_config: TcpConfig | None = None,
        server_config: TcpConfig | None = None,
        *,
        up: LinkConfig | None = None,
        down: LinkConfig | None = None,
        seed: int = 0,
        backlog: int = 8,
        start: float = 0.0,
    ) -> None:
        self.now = start
        self.rng = random.Random(seed)
        key = bytes(range(32)) if seed == 0 else random.Random(seed).randbytes(32)
        self.isn = IsnGenerator(key)
        self.listener = TcpListener(SERVER, backlog, server_config or TcpConfig(), self.isn)
        iss = self.isn.isn(CLIENT[0], CLIENT[1], SERVER[0], SERVER[1], start)
        self.client = TcpConnection.connect(
            CLIENT, SERVER, iss, start, client_config or TcpConfig(),
            ts_offset=self.isn.ts_offset(CLIENT[0], CLIENT[1], SERVER[0], SERVER[1]),
        )
        self.server: TcpConnection | None = None  # once the SYN arrived
        self.accepted: TcpConnection | None = None  # once accept() returned it
        self.up = _Direction(up or LinkConfig())  # client -> server
        self.down = _Direction(down or LinkConfig())  # server -> client
        self._events: list = []  # (time, order, to_server, wire bytes)
        self._order = 0
        self.trace: list[tuple[float, str, TcpRepr, int]] = []  # (time, "c>s"/"s>c", header, payload length)
        self.keep_trace = False

    # -- the link ----------------------------------------------------------------------
    def _transmit(self, to_server: bool, seg: TcpRepr, payload: bytes) -> None:
        d = self.up if to_server else self.down
        cfg = d.cfg
        src, dst = (CLIENT[0], SERVER[0]) if to_server else (SERVER[0], CLIENT[0])
        if self.keep_trace:
            self.trace.append((self.now, "c>s" if to_server else "s>c", seg, len(payload)))
        wire = seg.emit(payload, src, dst)
        d.sent += 1
        rng = self.rng
        if cfg.drop_filter is not None and cfg.drop_filter(seg, payload):
            d.dropped += 1
            return
        if cfg.loss and rng.random() < cfg.loss:
            d.dropped += 1
            return
        depart = self.now
        if cfg.rate:
            # Drop-tail queue in front of a link of limited rate.
            d.queued = [(t, n) for t, n in d.queued if t > self.now]
            backlog = sum(n for _, n in d.queued)
            if backlog + len(wire) > cfg.queue_bytes:
                d.dropped += 1
                return
            depart = max(self.now, d.free_at) + len(wire) / cfg.rate
            d.free_at = depart
            d.queued.append((depart, len(wire)))
        arrive = depart + cfg.delay
        if cfg.reorder and rng.random() < cfg.reorder:
            arrive += cfg.reorder_delay
        if cfg.corrupt and rng.random() < cfg.corrupt:
            b = bytearray(wire)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            wire = bytes(b)
            d.corrupted += 1
        copies = 2 if cfg.duplicate and rng.random() < cfg.duplicate else 1
        for _ in range(copies):
            self._order += 1
            heapq.heappush(self._events, (arrive, self._order, to_server, wire))

    def _deliver(self, to_server: bool, wire: bytes) -> None:
        src, dst = (CLIENT, SERVER) if to_server else (SERVER, CLIENT)
        try:
            seg, payload = TcpRepr.parse(wire, src[0], dst[0])
        except MalformedPacket:
            return  # a corrupted segment: the receiver's checksum drops it
        if not to_server:
            self.client.receive_segment(seg, payload, self.now)
            return
        if self.server is not None and self.server.state.name != "CLOSED":
            self.server.receive_segment(seg, payload, self.now)
            return
        flags = int(seg.flags)
        if flags & 0x02 and not flags & 0x14:  # SYN without ACK/RST
            conn = self.listener.on_syn(SERVER[0], CLIENT, seg, self.now)
            if conn is not None:
                self.server = conn

    # -- driving -----------------------------------------------------------------------
    def _poll_all(self) -> None:
        for seg, payload in self.client.poll(self.now):
            self._transmit(True, seg, payload)
        if self.server is not None:
            for seg, payload in self.server.poll(self.now):
                self._transmit(False, seg, payload)
        if self.accepted is None:
            self.accepted = self.listener.accept()

    def _next_time(self) -> float | None:
        times = [t for t in (self.client.poll_at(), self.server.poll_at() if self.server else None) if t is not None]
        if self._events:
            times.append(self._events[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        """Poll both ends, then move the clock to the next event; False if idle."""
        self._poll_all()
        t = self._next_time()
        if t is None:
            return False
        if t > self.now:
            self.now = t
        while self._events and self._events[0][0] <= self.now:
            _, _, to_server, wire = heapq.heappop(self._events)
            self._deliver(to_server, wire)
        return True

    def run(self, until: Callable[[], bool] | None = None, max_time: float = 600.0, max_steps: int = 10_000_000) -> None:
        """Step until ``until()`` holds (or all is quiet when None); fail past ``max_time``."""
        deadline = self.now + max_time
        for _ in range(max_steps):
            if until is not None and until():
                return
            if not self.step():
                if until is None or until():
                    return
                raise AssertionError(f"link went idle at t={self.now:.3f} before the condition held")
            if self.now > deadline:
                raise AssertionError(f"condition not reached within {max_time} s of virtual time")
        raise AssertionError("too many steps")

    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds of virtual time pass (timers fire, segments move)."""
        end = self.now + dt
        while True:
            self._poll_all()
            t = self._next_time()
            if t is None or t > end:
                self.now = end
                self._poll_all()
                return
            self.now = max(self.now, t)
            while self._events and self._events[0][0] <= self.now:
                _, _, to_server, wire = heapq.heappop(self._events)
                self._deliver(to_server, wire)

    def establish(self) -> TcpConnection:
        """Run the handshake and accept; return the server's connection."""
        self.run(lambda: self.accepted is not None and self.client.connected, max_time=60)
        return self.accepted


# -- driving one connection by hand ------------------------------------------------------

_FLAG_LETTERS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), (".", 0x10), ("U", 0x20))


class LayerPair:
    """Two :class:`~stack.tcp.glue.TcpLayer` joined directly on a virtual clock
    (the IP layer reduced to a call), for tests of the layer as a whole:
    listeners, demultiplexing, RST replies, TSO segments.

    Subclasses override :meth:`transmit` to log, cut or lose what crosses.
    """

    def __init__(self, a, b) -> None:
        self.now = 0.0
        self.a, self.b = a, b

    def transmit(self, name: str, o, dst) -> None:
        """One OutSegment from side ``name`` to the layer ``dst`` (default: as is)."""
        dst.receive(o.src, o.dst, o.encode(), self.now)

    def exchange(self, rounds: int = 200) -> None:
        """Move segments both ways until neither side has anything to send."""
        for _ in range(rounds):
            moved = False
            for src, dst, name in ((self.a, self.b, "a"), (self.b, self.a, "b")):
                for o in src.poll(self.now):
                    moved = True
                    self.transmit(name, o, dst)
            if not moved:
                return
        raise AssertionError(f"the layers never went quiet in {rounds} rounds")

    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds of virtual time pass (timers fire, segments move)."""
        end = self.now + dt
        while True:
            self.exchange()
            times = [t for t in (self.a.poll_at(), self.b.poll_at()) if t is not None]
            if not times or min(times) > end:
                self.now = end
                self.exchange()
                return
            self.now = max(self.now, min(times))


def flag_string(flags: int) -> str:
    """tcpdump's letters: ``S.`` is SYN+ACK, ``P.`` PSH+ACK, ``F.`` FIN+ACK, ``.`` a bare ACK."""
    return "".join(letter for letter, bit in _FLAG_LETTERS if int(flags) & bit)


def _parse_flags(text: str) -> int:
    bits = dict(_FLAG_LETTERS)
    value = 0
    for ch in text:
        value |= bits[ch]
    return value


class SegmentDriver:
    """Feed hand-made segments from the peer into one connection; read what comes out.

    Sequence numbers in and out are *relative*: ours to ``conn.iss``, the
    peer's to ``peer_iss`` (like tcpdump's relative numbers). :meth:`out`
    gives each emitted segment as a short string, e.g.
    ``"[P.] seq=1 ack=1 win=65535 len=100"``, with options appended, so a
    test can assert the exact segments that came out.
    """

    def __init__(self, conn: TcpConnection, peer_iss: int = 5000, now: float = 0.0) -> None:
        self.conn = conn
        self.peer_iss = peer_iss
        self.now = now
        self.peer_ts = 1000  # the peer's TSval clock, advanced by tests as they like

    # -- building peer segments -------------------------------------------------------
    def segment(
        self,
        flags: str,
        seq: int = 1,
        ack: int | None = None,
        window: int = 65535,
        **options,
    ) -> TcpRepr:
        """A segment from the peer: ``seq`` relative to the peer's ISN, ``ack`` to ours."""
        conn = self.conn
        wire_ack = 0 if ack is None else (conn.iss + ack) & 0xFFFFFFFF
        r = TcpRepr(
            conn.remote[1], conn.local[1], (self.peer_iss + seq) & 0xFFFFFFFF, wire_ack, TcpFlags(_parse_flags(flags)), window
        )
        ts = options.pop("ts", "auto")
        if ts == "auto":
            r.timestamps = (self.peer_ts, conn._ts_clock(self.now)) if conn.ts_ok else None
        else:
            r.timestamps = ts
        sack = options.pop("sack", ())
        r.sack_blocks = tuple(((conn.iss + a) & 0xFFFFFFFF, (conn.iss + b) & 0xFFFFFFFF) for a, b in sack)
        for name, value in options.items():
            setattr(r, name, value)
        return r

    def feed(self, flags: str, seq: int = 1, ack: int | None = None, data: bytes = b"", window: int = 65535, **options) -> None:
        """Deliver one peer segment now."""
        self.conn.receive_segment(self.segment(flags, seq, ack, window, **options), data, self.now)

    # -- reading our segments ---------------------------------------------------------
    def brief(self, seg: TcpRepr, payload: bytes) -> str:
        conn = self.conn
        parts = [f"[{flag_string(seg.flags)}]", f"seq={(seg.seq - conn.iss) & 0xFFFFFFFF}"]
        if seg.flags & 0x10:
            parts.append(f"ack={(seg.ack - self.peer_iss) & 0xFFFFFFFF}")
        elif seg.ack:
            parts.append(f"rawack={seg.ack}")
        parts.append(f"win={seg.window}")
        parts.append(f"len={len(payload)}")
        if seg.urgent or seg.flags & 0x20:
            parts.append(f"urg={seg.urgent}")
        if seg.mss is not None:
            parts.append(f"mss={seg.mss}")
        if seg.window_scale is not None:
            parts.append(f"ws={seg.window_scale}")
        if seg.sack_permitted:
            parts.append("sackok")
        if seg.timestamps is not None:
            parts.append(f"ts={seg.timestamps[0]},{seg.timestamps[1]}")
        if seg.sack_blocks:
            blocks = ",".join(
                f"{(a - self.peer_iss) & 0xFFFFFFFF}-{(b - self.peer_iss) & 0xFFFFFFFF}" for a, b in seg.sack_blocks
            )
            parts.append(f"sack={blocks}")
        return " ".join(parts)

    def poll(self) -> list[tuple[TcpRepr, bytes]]:
        """Run the connection's poll now and return its raw segments."""
        return self.conn.poll(self.now)

    def out(self) -> list[str]:
        """Poll now; every segment that came out, as :meth:`brief` strings."""
        return [self.brief(s, p) for s, p in self.conn.poll(self.now)]

    def advance(self, dt: float) -> list[tuple[float, str]]:
        """Move the clock by ``dt``, polling at every timer; ``[(time, brief)]`` emitted."""
        end = self.now + dt
        got: list[tuple[float, str]] = []
        for _ in range(100000):
            at = self.conn.poll_at()
            if at is None or at > end:
                break
            self.now = max(self.now, at)
            got += [(round(self.now, 9), self.brief(s, p)) for s, p in self.conn.poll(self.now)]
        else:
            raise AssertionError("the connection keeps asking to be polled")
        self.now = end
        return got


ISS = 1000  # our ISN in hand-driven tests
PEER_ISS = 5000


def plain_config(**changes) -> TcpConfig:
    """No options beyond MSS and small buffers: segments short enough to read in a test."""
    base = dict(timestamps=False, sack=False, window_scaling=False, rcvbuf=65535, sndbuf=65535)
    base.update(changes)
    return TcpConfig(**base)


def active_driver(config: TcpConfig | None = None, iss: int = ISS, peer_iss: int = PEER_ISS) -> SegmentDriver:
    """A connection in SYN-SENT (its SYN not yet polled out)."""
    conn = TcpConnection.connect(CLIENT, SERVER, iss, 0.0, config or plain_config())
    return SegmentDriver(conn, peer_iss)


def established_driver(
    config: TcpConfig | None = None, peer_window: int = 65535, peer_mss: int = 1460, rtt: float = 0.01, **peer_options
) -> SegmentDriver:
    """A connection that completed an active open; the peer offered what ``config`` asks for.

    ``peer_options`` override the SYN-ACK's options (``window_scale``,
    ``sack_permitted``, ``ts``). The handshake's own segments are consumed.
    """
    d = active_driver(config)
    cfg = d.conn.config
    d.out()
    d.now = rtt
    opts = dict(
        mss=peer_mss,
        window_scale=7 if cfg.window_scaling else None,
        sack_permitted=cfg.sack,
        ts=(d.peer_ts, d.conn._ts_clock(0.0)) if cfg.timestamps else None,
    )
    opts.update(peer_options)
    d.feed("S.", seq=0, ack=1, window=peer_window, **opts)
    d.out()
    return d
