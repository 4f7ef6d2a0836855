"""Test doubles: TCP endpoints on a simulated, impaired link with a virtual clock.

Like h11's ``ConnectionPair`` and aioquic's ``client_and_server()``: nothing
runs by itself. :class:`LinkPair` moves segments between a client
:class:`TcpConnection` and a server behind a :class:`TcpListener`, through
real wire bytes (``TcpRepr.emit`` then ``TcpRepr.parse`` with checksums),
over a link with a one-way delay, an optional rate and queue limit, and
seeded loss, reordering, duplication and corruption: the project's one
impairment model (``nicdev.virtio.impairment``, reached through
``stack.drivers``) decides, this link only keeps the clock. Time only moves
in :meth:`LinkPair.run`, from event to event, so a test of minutes of TCP
time takes milliseconds and always gives the same result for the same seed.

:class:`LayerPair` joins two whole TCP layers without a link.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Callable

from stack.drivers import Impairment, LinkImpairer
from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.listener import TcpListener
from stack.tcp.seq import IsnGenerator
from stack.tcp.testing import CLIENT, SERVER
from stack.wire import MalformedPacket
from stack.wire.tcp import TcpRepr

__all__ = ["LayerPair", "LinkConfig", "LinkPair"]

# Far more segments than any window: the link's queue is bounded in bytes.
_NO_FRAME_LIMIT = 1 << 40


@dataclass
class LinkConfig:
    """One direction of the simulated link: what it does to segments, in the
    terms of the project's one impairment model (`Impairment`), with a TCP
    link's defaults (5 ms one way, no frame limit) and a test's hook."""

    delay: float = 0.005  # one-way propagation, seconds
    rate: float | None = None  # bytes per second; None: infinitely fast
    queue_bytes: int = 1 << 20  # drop-tail queue in front of a rate-limited link
    loss: float = 0.0  # probability a segment vanishes
    reorder: float = 0.0  # probability a segment is held back until the next one
    reorder_hold: float = 0.004  # how long a held-back segment waits for a next one at most
    duplicate: float = 0.0  # probability a segment arrives twice
    corrupt: float = 0.0  # probability one bit is flipped (the checksum catches it)
    drop_filter: Callable[[TcpRepr, bytes], bool] | None = None  # True: drop this one

    def impairment(self) -> Impairment:
        # The link bounds its queue in bytes (queue_bytes), not in frames.
        return Impairment(loss=self.loss, duplicate=self.duplicate, reorder=self.reorder, corrupt=self.corrupt,
                          delay=self.delay, reorder_hold=self.reorder_hold, rate=self.rate,
                          queue_bytes=self.queue_bytes, limit=_NO_FRAME_LIMIT)


class _Direction:
    """One direction: the drop filter, then the impairment model."""

    def __init__(self, cfg: LinkConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.impairer = LinkImpairer(cfg.impairment(), rng)
        self.sent = 0
        self.filtered = 0  # dropped by drop_filter

    @property
    def dropped(self) -> int:
        c = self.impairer.counters
        return self.filtered + c.impaired_dropped + c.queue_overflow + c.delay_overflow

    @property
    def corrupted(self) -> int:
        return self.impairer.counters.corrupted


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
        # One generator for both directions, drawn from in the order segments cross.
        self.up = _Direction(up or LinkConfig(), self.rng)  # client -> server
        self.down = _Direction(down or LinkConfig(), self.rng)  # server -> client
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
        if cfg.drop_filter is not None and cfg.drop_filter(seg, payload):
            d.filtered += 1
            return
        self._schedule(d.impairer.push(wire, self.now, to_server))

    def _schedule(self, arriving) -> None:
        for arrive, wire, to_server in arriving:
            self._order += 1
            heapq.heappush(self._events, (arrive, self._order, to_server, wire))

    def _release_held(self) -> None:
        """Segments held back for reordering whose wait for a next one is over."""
        for d in (self.up, self.down):
            self._schedule(d.impairer.expire(self.now))

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
        times += [d.impairer.hold_expires for d in (self.up, self.down) if d.impairer.hold_expires is not None]
        return min(times) if times else None

    def step(self) -> bool:
        """Poll both ends, then move the clock to the next event; False if idle."""
        self._poll_all()
        t = self._next_time()
        if t is None:
            return False
        if t > self.now:
            self.now = t
        self._release_held()
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
            self._release_held()
            while self._events and self._events[0][0] <= self.now:
                _, _, to_server, wire = heapq.heappop(self._events)
                self._deliver(to_server, wire)

    def establish(self) -> TcpConnection:
        """Run the handshake and accept; return the server's connection."""
        self.run(lambda: self.accepted is not None and self.client.connected, max_time=60)
        return self.accepted



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
