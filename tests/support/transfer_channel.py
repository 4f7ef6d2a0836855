"""The file transfer's two protocol machines joined by a simulated datagram
channel on virtual time: seeded loss, duplication and reordering (extra
delay) in each direction, and an optional filter that drops chosen datagrams.

``run_transfer`` runs one Sender against a ReceiverHub until both are done
(or a step bound, which fails loudly) and returns what each end saw.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Callable

from mnet.apps.filetransfer.config import TransferConfig
from mnet.apps.filetransfer.receiver import Chunk, Closed, Completed, Failed, ReceiverHub, Started
from mnet.apps.filetransfer.sender import Sender

SENDER_PEER = ("10.0.0.1", 40000)
ONE_WAY = 0.005      # seconds
MAX_STEPS = 200_000


@dataclass
class Direction:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0      # chance of an extra delay of up to 4 one-way times
    drop: Callable[[bytes], bool] | None = None


@dataclass
class Outcome:
    sender: Sender
    hub: ReceiverHub
    received: bytes
    events: list = field(default_factory=list)  # receiver event class names, in order
    completed: Completed | None = None
    failure: str | None = None                  # the receiver's Failed reason
    seconds: float = 0.0


class Channel:
    def __init__(self, seed: int, forward: Direction, backward: Direction) -> None:
        self.rnd = random.Random(seed)
        self.directions = {"forward": forward, "backward": backward}
        self.queue: list = []
        self.count = 0
        self.delivered = {"forward": 0, "backward": 0}

    def send(self, datagram: bytes, way: str, now: float) -> None:
        d = self.directions[way]
        if (d.drop is not None and d.drop(datagram)) or self.rnd.random() < d.loss:
            return
        for _ in range(2 if self.rnd.random() < d.duplicate else 1):
            delay = ONE_WAY * (1 + (4 * self.rnd.random() if self.rnd.random() < d.reorder else 0))
            self.count += 1
            heapq.heappush(self.queue, (now + delay, self.count, way, datagram))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float):
        while self.queue and self.queue[0][0] <= now:
            _, _, way, datagram = heapq.heappop(self.queue)
            self.delivered[way] += 1
            yield way, datagram


def run_transfer(data: bytes, config: TransferConfig = TransferConfig(), *, seed: int = 0,
                 forward: Direction = Direction(), backward: Direction = Direction(),
                 sha256: bytes | None = None, name: str = "file.bin", hub: ReceiverHub | None = None,
                 session: int = 0x1234) -> Outcome:
    now = 0.0
    sender = Sender(name, len(data), sha256 or hashlib.sha256(data).digest(), session, now, config)
    hub = hub or ReceiverHub(config)
    channel = Channel(seed, forward, backward)
    out = Outcome(sender, hub, b"")
    received = bytearray()
    fed = 0
    for _ in range(MAX_STEPS):
        while n := sender.room():
            sender.feed(data[fed:fed + n])
            fed += n
        for datagram in sender.poll(now):
            channel.send(datagram, "forward", now)
        _take_events(hub, out, received)
        for datagram, _peer in hub.poll(now):
            channel.send(datagram, "backward", now)
        times = [t for t in (sender.deadline(), hub.deadline(), channel.next_time()) if t is not None]
        if sender.finished and not hub.sessions:
            break
        if not times:
            break
        now = max(now, min(times))
        for way, datagram in channel.due(now):
            if way == "forward":
                hub.receive(datagram, SENDER_PEER, now)
            else:
                sender.receive(datagram, now)
    else:
        raise AssertionError(f"the transfer did not end within {MAX_STEPS} steps: {sender.state}, {hub.sessions}")
    _take_events(hub, out, received)
    out.received = bytes(received)
    out.seconds = now
    return out


def _take_events(hub: ReceiverHub, out: Outcome, received: bytearray) -> None:
    for _key, event in hub.take_events():
        out.events.append(type(event).__name__)
        if isinstance(event, Chunk):
            received += event.data
        elif isinstance(event, Completed):
            out.completed = event
        elif isinstance(event, Failed):
            out.failure = event.reason
        elif not isinstance(event, (Started, Closed)):
            raise AssertionError(f"unknown event {event!r}")
