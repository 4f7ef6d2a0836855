"""The sending end of one transfer, sans-IO: datagrams and ``now`` in, datagrams out.

States::

    STARTING --ACCEPT--> SENDING --all chunks acknowledged--> FINISHING --DONE(match)--> DONE
        \\                  |                                     |
         +------------------+---- ERROR, DONE(mismatch), no progress for give_up ---> FAILED

The edge feeds the file's bytes in order as :meth:`room` asks, calls
:meth:`receive` for each datagram from the receiver and :meth:`poll` at
:meth:`deadline` (and after receiving); :meth:`poll` returns the datagrams
to send.

Selective repeat: a window of chunks past the first unacknowledged one may
be in flight. ACKs carry a cumulative ``next`` and a bitmap of chunks above
it. A chunk is declared lost once ``reorder_threshold`` transmissions sent
after it were acknowledged (RACK-style, by transmission order), or when the
retransmission timer (RFC 6298, from round trips measured with echoed
timestamps, doubled on each expiry) runs out: then the oldest transmission
still unacknowledged is resent.
"""
from __future__ import annotations

import enum
from collections import Counter, OrderedDict, deque

from stack.tcp.rtt import RttEstimator

from . import wire
from .config import TransferConfig

MAX_CHUNKS = 1 << 32  # sequence numbers are 32 bits


class SenderState(enum.Enum):
    STARTING = "starting"
    SENDING = "sending"
    FINISHING = "finishing"
    DONE = "done"
    FAILED = "failed"


def timestamp(now: float, epoch: float) -> int:
    """``now`` as the 32-bit microsecond clock of the wire."""
    return int((now - epoch) * 1e6) & 0xFFFFFFFF


class Sender:
    """One file (its name, size and SHA-256) sent under one session id."""

    def __init__(self, name: str, size: int, sha256: bytes, session: int, now: float,
                 config: TransferConfig = TransferConfig()) -> None:
        if not name or len(name.encode()) > wire.MAX_NAME:
            raise ValueError(f"the file name must be 1..{wire.MAX_NAME} bytes of UTF-8")
        if size < 0 or len(sha256) != 32 or not 0 <= session < 1 << 32:
            raise ValueError("need a size >= 0, a 32-byte SHA-256 and a 32-bit session id")
        self.name, self.size, self.sha256, self.session, self.config = name, size, sha256, session, config
        self.total = -(-size // config.chunk_size)
        if self.total >= MAX_CHUNKS:
            raise ValueError(f"{size} bytes need more than 2**32 chunks of {config.chunk_size}")
        self.state = SenderState.STARTING
        self.error: str | None = None
        self.receiver_sha256: bytes | None = None
        self.window = config.window
        self.counters: Counter[str] = Counter()
        self._epoch = now
        self._rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self._timer: float | None = now  # START goes out on the first poll
        self._control_sends = 0          # START or FIN sends in the current state
        self._last_progress = now
        self.base = 0                    # every chunk below is acknowledged
        self._next_new = 0               # the first chunk never sent
        self._chunks: dict[int, bytes] = {}   # fed and not yet acknowledged
        self._cut = 0                    # chunks cut from the fed bytes
        self._fed = 0
        self._pending = bytearray()      # fed bytes short of a whole chunk
        # seq -> (transmission serial, when), oldest transmission first
        self._inflight: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._serial = 0
        self._highest_acked_serial = 0
        self._lost: deque[int] = deque()
        self._sacked: set[int] = set()
        self._out: list[bytes] = []

    # -- the file's bytes ---------------------------------------------------------
    def room(self) -> int:
        """How many more bytes of the file the sender wants now (0: wait)."""
        if self.state in (SenderState.DONE, SenderState.FAILED):
            return 0
        end = min(self.size, min(self.total, self.base + self.window) * self.config.chunk_size)
        return max(0, end - self._fed)

    def feed(self, data: bytes) -> None:
        """The next bytes of the file, in order."""
        if self._fed + len(data) > self.size:
            raise ValueError(f"fed {self._fed + len(data)} bytes of a {self.size}-byte file")
        self._fed += len(data)
        self._pending += data
        chunk = self.config.chunk_size
        while len(self._pending) >= chunk or (self._pending and self._fed == self.size):
            self._chunks[self._cut] = bytes(self._pending[:chunk])
            del self._pending[:chunk]
            self._cut += 1

    # -- progress, for the edge -------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.state in (SenderState.DONE, SenderState.FAILED)

    @property
    def acked_bytes(self) -> int:
        return min(self.size, self.base * self.config.chunk_size)

    @property
    def rto(self) -> float:
        return self._rtt.rto

    def deadline(self) -> float | None:
        """When :meth:`poll` must run next at the latest (None: finished)."""
        if self.finished:
            return None
        give_up = self._last_progress + self.config.give_up
        return give_up if self._timer is None else min(self._timer, give_up)

    # -- datagrams in ---------------------------------------------------------------------
    def receive(self, datagram: bytes, now: float) -> None:
        """One datagram from the receiver's address."""
        try:
            msg = wire.parse(datagram)
        except wire.MalformedDatagram:
            self.counters["malformed"] += 1
            return
        if msg.session != self.session:
            self.counters["foreign"] += 1
            return
        self.counters["datagrams_received"] += 1
        if isinstance(msg, wire.Ack):
            self._on_ack(msg, now)
        elif isinstance(msg, wire.Accept):
            self._on_accept(msg, now)
        elif isinstance(msg, wire.Done):
            self._on_done(msg, now)
        elif isinstance(msg, wire.Error):
            self._on_error(msg)
        else:
            self.counters["unexpected"] += 1

    def _on_accept(self, msg: wire.Accept, now: float) -> None:
        if self.state is not SenderState.STARTING:
            return  # a repeated ACCEPT
        self._rtt.sample(self._since(msg.echo, now))
        self.window = min(self.config.window, msg.window)
        self._progress(now)
        self.state = SenderState.SENDING
        self._timer = None
        if self.total == 0:
            self._finish(now)

    def _on_ack(self, msg: wire.Ack, now: float) -> None:
        if self.state is not SenderState.SENDING:
            return  # late ACKs after the last chunk was acknowledged
        if msg.next > self._next_new:
            self.counters["malformed"] += 1  # acknowledges chunks never sent
            return
        acked = self._take_cumulative(msg.next) | self._take_selected(msg.selected())
        if not acked:
            return
        self._rtt.sample(self._since(msg.echo, now))
        self._progress(now)
        self._mark_lost()
        self._timer = now + self._rtt.rto if self._inflight else None
        if self.base == self.total:
            self._finish(now)

    def _take_cumulative(self, next_seq: int) -> bool:
        if next_seq <= self.base:
            return False
        for seq in range(self.base, next_seq):
            self._acknowledge(seq)
            self._sacked.discard(seq)
        self.base = next_seq
        return True

    def _take_selected(self, selected: list[int]) -> bool:
        acked = False
        for seq in selected:
            if seq >= self._next_new:
                break
            if seq > self.base and seq not in self._sacked:
                self._sacked.add(seq)
                self._acknowledge(seq)
                acked = True
        return acked

    def _acknowledge(self, seq: int) -> None:
        serial, _ = self._inflight.pop(seq, (0, 0.0))
        self._highest_acked_serial = max(self._highest_acked_serial, serial)
        self._chunks.pop(seq, None)

    def _mark_lost(self) -> None:
        """RACK-style: chunks sent ``reorder_threshold`` transmissions before one that arrived are lost."""
        limit = self._highest_acked_serial - self.config.reorder_threshold
        while self._inflight:
            seq, (serial, _) = next(iter(self._inflight.items()))
            if serial > limit:
                break
            del self._inflight[seq]
            self._lost.append(seq)

    def _on_done(self, msg: wire.Done, now: float) -> None:
        if self.state is not SenderState.FINISHING:
            return
        self.receiver_sha256 = msg.sha256
        self._out.append(wire.encode(wire.Bye(self.session)))
        if msg.matched:
            self.state = SenderState.DONE
            self._timer = None
        else:
            self._fail(f"the receiver's SHA-256 of the file is {msg.sha256.hex()}, ours is {self.sha256.hex()}"
                       " (did the file change while it was sent?)")

    def _on_error(self, msg: wire.Error) -> None:
        if self.finished:
            return
        what = {wire.ErrorCode.REFUSED: "the receiver refused the file",
                wire.ErrorCode.BUSY: "the receiver is busy",
                wire.ErrorCode.ABORTED: "the receiver aborted"}.get(msg.code, f"the receiver's error {msg.code}")
        self._fail(f"{what}: {msg.reason}" if msg.reason else what)

    # -- time and datagrams out -------------------------------------------------------------
    def poll(self, now: float) -> list[bytes]:
        """Run the timers and return the datagrams to send now."""
        if not self.finished:
            if now >= self._last_progress + self.config.give_up:
                self._give_up()
            elif self._timer is not None and now >= self._timer:
                self._on_timer(now)
            if self.state is SenderState.SENDING:
                self._send_chunks(now)
        out, self._out = self._out, []
        self.counters["datagrams_sent"] += len(out)
        return out

    def abort(self, reason: str) -> list[bytes]:
        """Give up from this end (interrupted, the file unreadable): the ERROR to send the receiver."""
        self._fail(reason)
        return [wire.encode(wire.Error(self.session, wire.ErrorCode.ABORTED, reason))]

    def _on_timer(self, now: float) -> None:
        if self.state is SenderState.SENDING:
            self._expire(now)
            return
        if self._control_sends:
            self._rtt.on_timeout()
            self.counters["timeouts"] += 1
            self.counters["retransmitted"] += 1
        self._control_sends += 1
        ts = timestamp(now, self._epoch)
        if self.state is SenderState.STARTING:
            msg = wire.Start(self.session, ts, self.size, self.config.chunk_size, self.sha256, self.name)
        else:
            msg = wire.Fin(self.session, ts)
        self._out.append(wire.encode(msg))
        self._timer = now + self._rtt.rto

    def _expire(self, now: float) -> None:
        """The retransmission timer ran out: the oldest transmission is lost, and with it
        every other one unanswered for a whole RTO; then back off (RFC 6298 5.4-5.6)."""
        expired = now - self._rtt.rto
        lost = []
        for seq, (_, sent_at) in self._inflight.items():
            if lost and sent_at > expired:
                break
            lost.append(seq)
        for seq in lost:
            del self._inflight[seq]
        self._lost.extendleft(reversed(lost))
        self._rtt.on_timeout()
        self.counters["timeouts"] += 1
        self._timer = None  # re-armed by the retransmission

    def _send_chunks(self, now: float) -> None:
        ts = timestamp(now, self._epoch)
        while self._lost:
            seq = self._lost.popleft()
            if seq >= self.base and seq not in self._sacked:
                self.counters["retransmitted"] += 1
                self._transmit(seq, ts, now)
        limit = min(self.total, self.base + self.window)
        while self._next_new < limit and self._next_new < self._cut:
            self._transmit(self._next_new, ts, now)
            self._next_new += 1
        if self._inflight and self._timer is None:
            self._timer = now + self._rtt.rto

    def _transmit(self, seq: int, ts: int, now: float) -> None:
        self._serial += 1
        self._inflight[seq] = (self._serial, now)  # (never in flight already: lost or new)
        self._out.append(wire.encode_data(self.session, seq, ts, self._chunks[seq]))
        self.counters["data_sent"] += 1

    # -- state changes ------------------------------------------------------------------------------
    def _progress(self, now: float) -> None:
        self._last_progress = now

    def _since(self, echo: int, now: float) -> float:
        return ((timestamp(now, self._epoch) - echo) & 0xFFFFFFFF) / 1e6

    def _finish(self, now: float) -> None:
        self.state = SenderState.FINISHING
        self._control_sends = 0
        self._timer = now

    def _give_up(self) -> None:
        waiting = {SenderState.STARTING: "an answer to START (is a receiver listening there?)",
                   SenderState.SENDING: "acknowledgements",
                   SenderState.FINISHING: "the receiver's verdict (DONE)"}[self.state]
        self._fail(f"no progress for {self.config.give_up:g} s waiting for {waiting}: gave up after "
                   f"{self.counters['datagrams_sent']} datagrams, {self.counters['retransmitted']} retransmitted")

    def _fail(self, reason: str) -> None:
        self.state = SenderState.FAILED
        self.error = reason
        self._timer = None
