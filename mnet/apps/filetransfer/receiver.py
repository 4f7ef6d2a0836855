"""The receiving end, sans-IO: one :class:`ReceiveSession` per transfer, and the
:class:`ReceiverHub` that gives each datagram to its session.

A session's states::

    RECEIVING --last chunk, SHA-256 checked--> COMPLETE --FIN / DONE--> CLOSING --BYE or linger--> CLOSED
        \\                                         \\ (no FIN for give_up: CLOSED)
         +-- sender's ERROR, no data for give_up, abort() --> FAILED

Chunks are delivered to the edge in order (:class:`Chunk` events) while
out-of-order ones wait in a buffer of ``window`` chunks; the SHA-256 is
computed over what was delivered, so the edge only appends bytes to a
file. The session acknowledges what arrived since the last :meth:`poll`
with one ACK (cumulative ``next`` and a bitmap of the chunks held above
it), echoing the newest DATA's timestamp.
"""
from __future__ import annotations

import enum
import hashlib
from collections import Counter
from dataclasses import dataclass

from . import wire
from .config import TransferConfig

Peer = tuple[str, int]
MAX_CHUNKS = 1 << 32


class SessionState(enum.Enum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True)
class Started:
    name: str
    size: int
    sha256: bytes


@dataclass(frozen=True)
class Chunk:
    data: bytes  # the next bytes of the file, in order


@dataclass(frozen=True)
class Completed:
    sha256: bytes   # computed over every byte received
    matched: bool   # ... and equal to the one START announced


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Closed:
    pass


Event = Started | Chunk | Completed | Failed | Closed


def unsafe_name(name: str) -> str | None:
    """Why ``name`` cannot be a file name in the receiver's directory (None: it can)."""
    if name in ("", ".", "..") or name.startswith("."):
        return f"file name {name!r} is empty or starts with a dot"
    if "/" in name or "\\" in name:
        return f"file name {name!r} has a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"file name {name!r} has a control character"
    return None


class ReceiveSession:
    """One transfer, from its START on."""

    def __init__(self, start: wire.Start, now: float, config: TransferConfig) -> None:
        self.session, self.name, self.size, self.sha256 = start.session, start.name, start.size, start.sha256
        self.chunk_size = start.chunk_size
        self.total = -(-start.size // start.chunk_size)
        self.config = config
        self.state = SessionState.RECEIVING
        self.counters: Counter[str] = Counter()
        self.started_at = now
        self.completed_at: float | None = None
        self.digest: bytes | None = None
        self.next = 0                              # every chunk below was delivered
        self.delivered = 0                         # bytes
        self._held: dict[int, bytes] = {}          # out of order, waiting for the gap
        self._hash = hashlib.sha256()
        self._echo = start.ts
        self._ack_due = False
        self._last_progress = now
        self._linger_until = 0.0
        self._out: list[bytes] = []
        self._events: list[Event] = [Started(self.name, self.size, self.sha256)]
        self._accept(start.ts)
        if self.total == 0:
            self._complete(now)

    # -- datagrams in ------------------------------------------------------------------
    def receive(self, msg: wire.Message, now: float) -> None:
        self.counters["datagrams_received"] += 1
        if isinstance(msg, wire.Data):
            self._on_data(msg, now)
        elif isinstance(msg, wire.Start):
            self._accept(msg.ts)  # our ACCEPT was lost
        elif isinstance(msg, wire.Fin):
            self._on_fin(msg, now)
        elif isinstance(msg, wire.Bye):
            if self.state is SessionState.CLOSING:
                self._close()
        elif isinstance(msg, wire.Error):
            if self.state is SessionState.RECEIVING:
                self._fail(f"the sender aborted: {msg.reason}" if msg.reason else "the sender aborted")
        else:
            self.counters["unexpected"] += 1

    def _on_data(self, msg: wire.Data, now: float) -> None:
        if msg.seq >= self.total or len(msg.payload) != self._length(msg.seq):
            self.counters["malformed"] += 1  # a chunk that cannot be part of this file
            return
        if self.state is SessionState.FAILED:
            return
        self._echo = msg.ts
        self._ack_due = True
        if msg.seq < self.next or msg.seq in self._held:
            self.counters["duplicates"] += 1
            return
        if msg.seq >= self.next + self.config.window:
            self.counters["out_of_window"] += 1
            return
        self._last_progress = now
        self._held[msg.seq] = msg.payload
        while self.next in self._held:
            data = self._held.pop(self.next)
            self._hash.update(data)
            self._events.append(Chunk(data))
            self.delivered += len(data)
            self.next += 1
        if self.next == self.total:
            self._complete(now)

    def _length(self, seq: int) -> int:
        return min(self.chunk_size, self.size - seq * self.chunk_size)

    def _on_fin(self, msg: wire.Fin, now: float) -> None:
        if self.state in (SessionState.COMPLETE, SessionState.CLOSING):
            self._out.append(wire.encode(wire.Done(self.session, msg.ts, self.digest == self.sha256, self.digest)))
            self.state = SessionState.CLOSING
            self._linger_until = now + self.config.linger
        elif self.state is SessionState.RECEIVING:
            self._ack_due = True  # a FIN before the last chunk: say what is missing

    # -- the edge's side -------------------------------------------------------------------
    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def abort(self, reason: str) -> None:
        """A local failure (the file cannot be written): tell the sender, end the session."""
        if self.state in (SessionState.RECEIVING, SessionState.COMPLETE):
            self._out.append(wire.encode(wire.Error(self.session, wire.ErrorCode.ABORTED, reason)))
            self._fail(reason)

    def deadline(self) -> float | None:
        if self._ack_due:
            return 0.0
        if self.state in (SessionState.RECEIVING, SessionState.COMPLETE):
            return self._last_progress + self.config.give_up
        if self.state is SessionState.CLOSING:
            return self._linger_until
        return None

    def poll(self, now: float) -> list[bytes]:
        """Run the timers; the datagrams to send (an ACK for what arrived since the last poll)."""
        if self.state is SessionState.RECEIVING and now >= self._last_progress + self.config.give_up:
            self._fail(f"no data from the sender for {self.config.give_up:g} s: gave up with "
                       f"{self.delivered} of {self.size} bytes")
        elif self.state is SessionState.COMPLETE and now >= self._last_progress + self.config.give_up:
            self._close()  # the file is whole; the sender's FIN never came
        elif self.state is SessionState.CLOSING and now >= self._linger_until:
            self._close()
        if self._ack_due:
            self._ack_due = False
            if self.state in (SessionState.RECEIVING, SessionState.COMPLETE, SessionState.CLOSING):
                bitmap = wire.bitmap_of(self.next, sorted(self._held))
                self._out.append(wire.encode(wire.Ack(self.session, self._echo, self.next, bitmap)))
        out, self._out = self._out, []
        self.counters["datagrams_sent"] += len(out)
        return out

    @property
    def finished(self) -> bool:
        return self.state in (SessionState.CLOSED, SessionState.FAILED)

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    # -- state changes ------------------------------------------------------------------------
    def _accept(self, ts: int) -> None:
        self._out.append(wire.encode(wire.Accept(self.session, ts, self.config.window)))

    def _complete(self, now: float) -> None:
        self.digest = self._hash.digest()
        self.completed_at = now
        self._last_progress = now
        self.state = SessionState.COMPLETE
        self._ack_due = True
        self._events.append(Completed(self.digest, self.digest == self.sha256))

    def _close(self) -> None:
        self.state = SessionState.CLOSED
        self._events.append(Closed())

    def _fail(self, reason: str) -> None:
        self.state = SessionState.FAILED
        self._held.clear()
        self._events.append(Failed(reason))


class ReceiverHub:
    """Every transfer to one port: sessions by (peer, session id), plus the
    datagrams no session takes (malformed, or of no session: counted, dropped)."""

    def __init__(self, config: TransferConfig = TransferConfig(), max_sessions: int | None = None,
                 max_size: int | None = None) -> None:
        self.config = config
        self.max_sessions = max_sessions
        self.max_size = max_size
        self.sessions: dict[tuple[Peer, int], ReceiveSession] = {}
        self.counters: Counter[str] = Counter()
        # Sessions that ended, until give_up after: a late copy of their START is not a new transfer.
        self._ended: dict[tuple[Peer, int], float] = {}
        self._out: list[tuple[bytes, Peer]] = []

    def receive(self, datagram: bytes, peer: Peer, now: float) -> None:
        try:
            msg = wire.parse(datagram)
        except wire.MalformedDatagram:
            self.counters["malformed"] += 1
            return
        key = (peer, msg.session)
        session = self.sessions.get(key)
        if session is not None:
            session.receive(msg, now)
        elif isinstance(msg, wire.Start) and key not in self._ended:
            self._open(msg, peer, now)
        else:
            self.counters["foreign"] += 1  # of no transfer this end knows (an ended one, or not for us)

    def _open(self, start: wire.Start, peer: Peer, now: float) -> None:
        why = self._refusal(start)
        if why is not None:
            code, reason = why
            self.counters["refused"] += 1
            self._out.append((wire.encode(wire.Error(start.session, code, reason)), peer))
            return
        self.sessions[(peer, start.session)] = ReceiveSession(start, now, self.config)
        self.counters["sessions"] += 1

    def _refusal(self, start: wire.Start) -> tuple[int, str] | None:
        if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
            return wire.ErrorCode.BUSY, f"already receiving {len(self.sessions)} file(s)"
        reason = unsafe_name(start.name)
        if reason is None and -(-start.size // start.chunk_size) >= MAX_CHUNKS:
            reason = f"{start.size} bytes need more than 2**32 chunks of {start.chunk_size}"
        if reason is None and self.max_size is not None and start.size > self.max_size:
            reason = f"{start.size} bytes is more than this receiver takes ({self.max_size})"
        return None if reason is None else (wire.ErrorCode.REFUSED, reason)

    def take_events(self) -> list[tuple[tuple[Peer, int], Event]]:
        """What happened in every session since the last call, in order, with the session's key."""
        return [(key, event) for key, s in self.sessions.items() for event in s.take_events()]

    def abort(self, key: tuple[Peer, int], reason: str) -> None:
        session = self.sessions.get(key)
        if session is not None:
            session.abort(reason)

    def deadline(self) -> float | None:
        times = [t for s in self.sessions.values() if (t := s.deadline()) is not None]
        return min(times) if times else None

    def poll(self, now: float) -> list[tuple[bytes, Peer]]:
        """Run every session's timers; the datagrams to send, each with its peer.
        Sessions that ended are forgotten here (take their events first)."""
        out, self._out = self._out, []
        for key, session in list(self.sessions.items()):
            out.extend((d, key[0]) for d in session.poll(now))
            if session.finished and not session.has_events:
                del self.sessions[key]
                self._ended[key] = now + self.config.give_up
        for key in [k for k, until in self._ended.items() if until <= now]:
            del self._ended[key]
        return out
