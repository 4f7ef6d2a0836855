"""The run loops: a protocol machine driven over an endpoint (``endpoints``) and a file.

:func:`send_file` sends one file and returns a :class:`SendResult` or raises
:class:`TransferError`; :func:`receive_files` receives into a directory until
told to stop (or after one transfer) and returns a :class:`ReceiveResult` per
file. Both wait on the endpoint until the machine's next deadline, handle
every datagram already queued (up to ``BATCH``) before asking the machine for
what to send, so one ACK answers a whole burst.
"""
from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import TransferConfig
from .endpoints import Peer
from .files import IncomingFile, sha256_of
from .receiver import Chunk, Closed, Completed, Failed, ReceiverHub, Started
from .sender import Sender

BATCH = 64           # datagrams handled before the machine answers
TICK = 0.25          # the longest wait, so progress lines and stop requests are seen


class TransferError(Exception):
    """A transfer that did not end with a verified file; says why in one line."""


@dataclass
class SendResult:
    name: str
    size: int
    seconds: float
    sha256: bytes
    matched: bool
    counters: Counter = field(default_factory=Counter)


@dataclass
class ReceiveResult:
    name: str
    peer: Peer
    size: int
    seconds: float
    sha256: bytes | None = None
    path: Path | None = None           # the verified file (None: failed)
    error: str | None = None
    counters: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.error is None


def send_file(endpoint, path: str | os.PathLike, peer: Peer, config: TransferConfig = TransferConfig(), *,
              name: str | None = None, clock: Callable[[], float] = time.monotonic,
              progress: Callable[[Sender, float], None] | None = None) -> SendResult:
    """Send the file at ``path`` to the receiver at ``peer``."""
    size, digest = sha256_of(path)
    started = clock()
    sender = Sender(name or Path(path).name, size, digest, secrets.randbits(32), started, config)
    endpoint.connect(peer)
    try:
        with open(path, "rb") as source:
            _run_sender(sender, endpoint, source, peer, clock, progress)
    except BaseException as exc:
        if not sender.finished:  # interrupted, or the file went away: tell the receiver
            for datagram in sender.abort(f"the sender stopped: {type(exc).__name__}"):
                endpoint.send(datagram, peer)
        raise
    if sender.error is not None:
        raise TransferError(sender.error)
    sender.counters["send_errors"] = endpoint.send_errors
    return SendResult(sender.name, size, clock() - started, digest, sender.receiver_sha256 == digest, sender.counters)


def _run_sender(sender: Sender, endpoint, source, peer: Peer, clock, progress) -> None:
    while True:
        while n := sender.room():
            data = source.read(n)
            if not data:
                raise TransferError(f"the file ended after {sender.size - n} bytes, it had {sender.size}")
            sender.feed(data)
        now = clock()
        for datagram in sender.poll(now):
            endpoint.send(datagram, peer)
        if sender.finished:
            return
        if progress is not None:
            progress(sender, now)
        got = endpoint.receive(min(max(sender.deadline() - now, 0.0), TICK))
        handled = 0
        while got is not None:
            data, source_peer = got
            if source_peer == peer:
                sender.receive(data, clock())
            else:
                sender.counters["foreign"] += 1
            handled += 1
            got = endpoint.receive(0) if handled < BATCH else None


class Incoming:
    """The receiver's files, one per session, driven by the hub's events."""

    def __init__(self, directory: Path, hub: ReceiverHub) -> None:
        self.directory, self.hub = directory, hub
        self.files: dict = {}
        self.settled: set = set()   # sessions whose result was given

    def handle(self, key, event, now: float) -> ReceiveResult | None:
        """Apply one event; the result once the session's file is settled (verified or failed)."""
        session = self.hub.sessions[key]
        try:
            if isinstance(event, Started):
                self.files[key] = IncomingFile(self.directory, event.name, key[1])
            elif isinstance(event, Chunk):
                self.files[key].write(event.data)
            elif isinstance(event, Completed):
                return self._completed(key, session, event, now)
            elif isinstance(event, Failed):
                return self._failed(key, session, event.reason, now)
            elif isinstance(event, Closed):
                self.settled.discard(key)
        except OSError as exc:
            reason = f"cannot write {session.name} into {self.directory}: {exc.strerror or exc}"
            self.hub.abort(key, reason)
        return None

    def _completed(self, key, session, event: Completed, now: float) -> ReceiveResult | None:
        incoming = self.files.pop(key)
        self.settled.add(key)
        result = self._result(key, session, now)
        result.sha256 = event.sha256
        if event.matched:
            result.path = incoming.commit()
        else:
            incoming.discard()
            result.error = (f"SHA-256 mismatch: received {event.sha256.hex()}, the sender announced "
                            f"{session.sha256.hex()}; the partial file was removed")
        return result

    def _failed(self, key, session, reason: str, now: float) -> ReceiveResult | None:
        if key in self.settled:
            return None  # a failure after the file was settled changes nothing
        self.settled.add(key)
        incoming = self.files.pop(key, None)
        if incoming is not None:
            incoming.discard()
        result = self._result(key, session, now)
        result.error = reason
        return result

    def _result(self, key, session, now: float) -> ReceiveResult:
        return ReceiveResult(session.name, key[0], session.size, now - session.started_at,
                             counters=session.counters)


def receive_files(endpoint, directory: str | os.PathLike, config: TransferConfig = TransferConfig(), *,
                  once: bool = False, max_sessions: int | None = None, stop: Callable[[], bool] = lambda: False,
                  clock: Callable[[], float] = time.monotonic,
                  report: Callable[[ReceiveResult], None] | None = None,
                  progress: Callable[[ReceiverHub, float], None] | None = None) -> list[ReceiveResult]:
    """Receive files into ``directory`` until ``stop()`` (or, with ``once``, until the first transfer ended)."""
    hub = ReceiverHub(config, max_sessions=1 if once else max_sessions)
    incoming = Incoming(Path(directory), hub)
    results: list[ReceiveResult] = []
    try:
        while not stop():
            _receive_batch(endpoint, hub, clock)
            now = clock()
            for key, event in hub.take_events():
                result = incoming.handle(key, event, now)
                if result is not None:
                    results.append(result)
                    if report is not None:
                        report(result)
            for datagram, peer in hub.poll(now):
                endpoint.send(datagram, peer)
            if progress is not None:
                progress(hub, now)
            if once and results and not hub.sessions:
                break
    finally:
        _abandon(endpoint, hub, incoming, clock)
    return results


def _receive_batch(endpoint, hub: ReceiverHub, clock) -> None:
    """Wait for datagrams until the hub's next deadline (at most TICK), then take what is queued."""
    now = clock()
    deadline = hub.deadline()
    got = endpoint.receive(TICK if deadline is None else min(max(deadline - now, 0.0), TICK))
    handled = 0
    while got is not None:
        hub.receive(got[0], got[1], clock())
        handled += 1
        got = endpoint.receive(0) if handled < BATCH else None


def _abandon(endpoint, hub: ReceiverHub, incoming: Incoming, clock) -> None:
    """Stopping: tell the senders of unfinished files, and remove their partial files."""
    for key in list(hub.sessions):
        hub.abort(key, "the receiver stopped")
    try:
        for datagram, peer in hub.poll(clock()):
            endpoint.send(datagram, peer)
    except OSError:
        pass  # the network went first (the stack stopped); the senders give up on their own
    for file in incoming.files.values():
        file.discard()
    incoming.files.clear()
