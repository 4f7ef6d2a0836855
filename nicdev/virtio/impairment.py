"""Impaired links as a sans-IO model: frames and `now` in, frames with their due time out.

One model serves every impaired link in the project: a switch port
(`nicdev.net.impair.ImpairedPort`), the stack's loopback NIC
(`stack.drivers.loopback`) and the TCP test link (`stack.testing.tcp_link`).
It lives on the ground floor because it is the one floor all three may
import. It reads no clock and starts no timer: each user schedules the due
frames its own way (event-loop timers, a receive queue, a virtual clock).

`LinkImpairer(Impairment(...))` is one direction of a link. `push(frame,
now, tag)` takes a frame and returns the frames that leave because of it,
as `(due, frame, tag)`: when the frame reaches the other end (never before
`now`), the frame (maybe with a bit flipped) and the caller's `tag`
(offload metadata, a direction: whatever must travel with the frame).
Frames come out in the order they are to arrive. A frame held back for
reordering leaves with the next frame pushed, or, once `hold_expires` has
passed, from `expire(now)`.

Each frame meets the impairments in a fixed order, and every random
decision is drawn from the model's `random.Random` in that order, only for
the impairments in use (so a seed gives the same pattern every run):

1. **loss**: dropped (`impaired_dropped`).
2. **duplicate**: pushed on twice (`duplicated`); each copy goes on through 3-5.
3. **corrupt**: one bit flipped at or after byte `corrupt_from` (two draws:
   the byte, the bit), so the frame still arrives and the receiver's
   checksums see it (`corrupted`).
4. **reorder**: held back and sent right after the next frame (`reordered`);
   a held frame that no other frame follows leaves after `reorder_hold`
   seconds.
5. **delay**: over a link of limited `rate` (bytes per second), if set, a
   frame departs when the frames before it have; more than `queue_bytes`
   waiting to depart are dropped (`queue_overflow`), a drop-tail queue. Then
   it travels `delay` seconds, +- uniform `jitter` (one draw) (`delayed`).
   Frames arrive in the order they entered (jitter never reorders; that is
   what `reorder` is for), and at most `limit` frames are on their way:
   more are dropped (`delay_overflow`), as netem's `limit` does.

loss, duplicate, reorder and corrupt are each a fraction (0.05 = 5 %,
decided by the random generator) or a rule: a callable `frame -> bool` that
decides for each frame (a test's "lose the second fragment"; no draw).
"""
from __future__ import annotations

import collections
import random
from dataclasses import dataclass, fields
from typing import Callable, Union

__all__ = [
    "Impairment", "ImpairCounters", "LinkImpairer", "Decision", "REORDER_HOLD", "DEFAULT_LIMIT",
    "DEFAULT_QUEUE_BYTES",
]

# How long a frame held back for reordering waits for a next frame at most.
REORDER_HOLD = 0.01
# Frames on their way at most (netem's default limit).
DEFAULT_LIMIT = 1000
# The drop-tail queue in front of a rate-limited link.
DEFAULT_QUEUE_BYTES = 1 << 20
# Due times are computed as now + delay and compared with a clock again
# later; allow for float rounding between the two.
_EPSILON = 1e-9

#: A fraction, or a rule that decides for each frame.
Decision = Union[float, Callable[[bytes], bool]]

_DECISIONS = ("loss", "duplicate", "reorder", "corrupt")


def _fraction(name: str, value) -> float | Callable:
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction from 0 to 1 or a callable frame -> bool, not {value!r}")
    return float(value)


def _seconds(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 3600.0:
        raise ValueError(f"{name} must be a number of seconds from 0 to 3600, not {value!r}")
    return float(value)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    return value


@dataclass(frozen=True)
class Impairment:
    """What to do to the frames of one direction. Probabilities are fractions
    (or rules, see the module doc), times are seconds, `rate` is bytes per
    second (None: no rate limit). `seed` fixes the random pattern."""

    loss: Decision = 0.0
    duplicate: Decision = 0.0
    reorder: Decision = 0.0
    corrupt: Decision = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    seed: int | None = None
    limit: int = DEFAULT_LIMIT
    reorder_hold: float = REORDER_HOLD
    rate: float | None = None
    queue_bytes: int = DEFAULT_QUEUE_BYTES

    def __post_init__(self) -> None:
        for name in _DECISIONS:
            object.__setattr__(self, name, _fraction(name, getattr(self, name)))
        for name in ("delay", "jitter", "reorder_hold"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, not {self.seed!r}")
        _positive_int("limit", self.limit)
        _positive_int("queue_bytes", self.queue_bytes)
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                                      or not self.rate > 0):
            raise ValueError(f"rate must be a number of bytes per second > 0 or None, not {self.rate!r}")

    @property
    def delays(self) -> bool:
        """Does this impairment hold frames back in time (delay, jitter, rate)?"""
        return self.delay > 0 or self.jitter > 0 or self.rate is not None

    def __str__(self) -> str:
        parts = []
        for name in _DECISIONS:
            value = getattr(self, name)
            if callable(value):
                parts.append(f"{name} by rule")
            elif value:
                parts.append(f"{name} {value * 100:g}%")
        if self.reorder and self.reorder_hold != REORDER_HOLD:
            parts.append(f"hold {self.reorder_hold * 1000:g}ms")
        if self.rate is not None:
            parts.append(f"rate {self.rate:g}B/s")
        if self.delay or self.jitter:
            parts.append(f"delay {self.delay * 1000:g}ms" + (f"+-{self.jitter * 1000:g}ms" if self.jitter else ""))
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts) or "nothing"


@dataclass
class ImpairCounters:
    """What one direction's impairment did."""

    impaired_dropped: int = 0   # lost on purpose
    duplicated: int = 0         # frames sent twice
    reordered: int = 0          # frames held back and sent after the next one
    corrupted: int = 0          # frames (copies) with a bit flipped
    delayed: int = 0            # frames that went through the delay stage
    delay_overflow: int = 0     # dropped because `limit` frames were on their way
    queue_overflow: int = 0     # dropped by the drop-tail queue of a rate-limited link

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LinkImpairer:
    """One direction of an impaired link (see the module doc).

    `rng` is the random generator to draw from (default: one seeded with
    the impairment's seed); two directions that must not make the same
    decisions need generators seeded apart. `corrupt_from` keeps a flipped
    bit off the first bytes (an Ethernet header, so the frame still finds
    its way)."""

    def __init__(self, impairment: Impairment, rng: random.Random | None = None, *, corrupt_from: int = 0) -> None:
        self.counters = ImpairCounters()
        self.corrupt_from = corrupt_from
        self.hold_expires: float | None = None      # when a held frame leaves without a successor
        self._held: tuple | None = None              # (frame, tag)
        self._on_the_way: collections.deque = collections.deque()    # due times, in order
        self._last_due = 0.0
        self._departing: collections.deque = collections.deque()     # (departure, size) on a rated link
        self._departing_bytes = 0
        self._free_at = 0.0
        self.configure(impairment, rng)

    def configure(self, impairment: Impairment, rng: random.Random | None = None) -> None:
        """Apply a new impairment; frames already on their way keep their times."""
        self.impairment = impairment
        self.rng = rng if rng is not None else random.Random(impairment.seed)

    # -- frames in, frames out ---------------------------------------------------------------
    def push(self, frame, now: float, tag=None) -> list[tuple[float, bytes, object]]:
        """Take one frame at `now`; the frames that leave because of it, as (due, frame, tag)."""
        imp, c = self.impairment, self.counters
        if self._decide(imp.loss, frame):
            c.impaired_dropped += 1
            return []
        copies = 1
        if self._decide(imp.duplicate, frame):
            c.duplicated += 1
            copies = 2
        out: list = []
        for _ in range(copies):
            f = frame
            if self._decide(imp.corrupt, f):
                f = self._flip_a_bit(f)
                c.corrupted += 1
            self._reorder(f, tag, now, out)
        return out

    def expire(self, now: float) -> list[tuple[float, bytes, object]]:
        """The held frame, if its hold is over at `now` (else nothing)."""
        if self._held is None or self.hold_expires is None or now + _EPSILON < self.hold_expires:
            return []
        (frame, tag), self._held, self.hold_expires = self._held, None, None
        out: list = []
        self._delay(frame, tag, now, out)
        return out

    @property
    def waiting(self) -> int:
        """Frames held back, or on their way as of the last push."""
        return len(self._on_the_way) + (self._held is not None)

    def clear(self) -> None:
        """Forget the held frame and what is on its way (the link is gone)."""
        self._held = None
        self.hold_expires = None
        self._on_the_way.clear()
        self._departing.clear()
        self._departing_bytes = 0
        self._last_due = self._free_at = 0.0

    # -- the stages ---------------------------------------------------------------------------
    def _decide(self, decision, frame) -> bool:
        if callable(decision):
            return bool(decision(frame))
        return bool(decision) and self.rng.random() < decision

    def _flip_a_bit(self, frame) -> bytes:
        data = bytearray(frame)
        start = self.corrupt_from if len(data) > self.corrupt_from else 0
        if len(data) > start:
            i = self.rng.randrange(start, len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def _reorder(self, frame, tag, now: float, out: list) -> None:
        held = self._held
        if held is not None:
            self._held = self.hold_expires = None
            self._delay(frame, tag, now, out)
            self._delay(*held, now, out)
            return
        if self._decide(self.impairment.reorder, frame):
            self._held = (frame, tag)
            self.hold_expires = now + self.impairment.reorder_hold
            self.counters.reordered += 1
            return
        self._delay(frame, tag, now, out)

    def _delay(self, frame, tag, now: float, out: list) -> None:
        imp, c = self.impairment, self.counters
        on_the_way = self._on_the_way
        while on_the_way and on_the_way[0] <= now + _EPSILON:
            on_the_way.popleft()
        # With no delay the frame goes at once, unless frames are still on
        # their way from a delay switched off since: it follows them.
        if not imp.delays and not on_the_way:
            out.append((now, frame, tag))
            return
        if len(on_the_way) >= imp.limit:
            c.delay_overflow += 1
            return
        depart = now
        if imp.rate is not None:
            departing = self._departing
            while departing and departing[0][0] <= now:
                self._departing_bytes -= departing.popleft()[1]
            size = len(frame)
            if self._departing_bytes + size > imp.queue_bytes:
                c.queue_overflow += 1
                return
            depart = max(now, self._free_at) + size / imp.rate
            self._free_at = depart
            departing.append((depart, size))
            self._departing_bytes += size
        wait = imp.delay + (self.rng.uniform(-imp.jitter, imp.jitter) if imp.jitter else 0.0)
        due = max(depart + max(0.0, wait), self._last_due)
        self._last_due = due
        on_the_way.append(due)
        c.delayed += 1
        out.append((due, frame, tag))
