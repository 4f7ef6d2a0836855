"""Impaired links: loss, duplication, reordering, corruption and delay on any port.

`ImpairedPort(inner, out=Impairment(...), in_=Impairment(...))` wraps another
port. Frames the switch sends to the peer (`transmit`) go through the `out`
impairment before the inner port sends them; frames from the peer go
through `in_` before they reach the switch. Everything else (name, kind,
start, close, status, link state, counters, offload abilities) is the inner
port's, so the switch cannot tell the difference. This is what `tc netem`
does on a Linux interface, for kernels without sch_netem and for ports that
are not Linux interfaces at all (a guest's vhost-user NIC, a socket netdev).

Each frame meets the impairments in a fixed order, each decided by the
lane's own seeded `random.Random` (so a seed gives the same pattern every
run):

1. **loss**: dropped (`impaired_dropped`).
2. **duplicate**: sent twice (`duplicated`); each copy goes on through 3-5.
3. **corrupt**: one random bit flipped after the 14-byte Ethernet header, so
   the frame still reaches its port and the receiver's checksums see it
   (`corrupted`).
4. **reorder**: held back and sent right after the next frame (`reordered`);
   a held frame that no other frame follows goes out after `REORDER_HOLD`
   seconds.
5. **delay**: queued for `delay` seconds, +- uniform `jitter` (`delayed`).
   The queue keeps the order frames entered it (jitter never reorders; that
   is what `reorder` is for) and holds at most `limit` frames: more are
   dropped (`delay_overflow`), as netem's `limit` does.

Delays and held frames use the event loop's `call_later`, so the port must
be started (the switch does that). Extra arguments of `transmit` and
`deliver` (offload metadata) travel with their frame untouched.

Impairments act on wire frames, as on a real link: an impaired direction
takes no GSO frames, so a 64 KiB TSO burst is cut into MTU-sized frames
before each frame meets its fate: by the switch on the way out, and on the
way in here, before the impairments (an impaired link is an egress that
cannot take metadata: `nicdev.net.egress`). A direction that corrupts
frames also takes no partial-checksum frames, so the flipped bit lands on
bytes a checksum covers. Frames coming in through an impaired direction
are therefore all finished frames, without metadata.
"""
from __future__ import annotations

import collections
import random
from dataclasses import dataclass, fields
from typing import Callable

from .egress import EgressFrame
from .port import Port

__all__ = ["Impairment", "ImpairCounters", "ImpairedPort", "REORDER_HOLD", "DEFAULT_LIMIT"]

# How long a frame held back for reordering waits for a next frame at most.
REORDER_HOLD = 0.01
# Frames waiting in one direction's delay queue at most (netem's default limit).
DEFAULT_LIMIT = 1000
_ETH_HEADER = 14
# Due times are computed as now + delay and compared with the clock again
# when the timer fires; allow for float rounding between the two.
_EPSILON = 1e-9


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction from 0 to 1, not {value!r}")
    return float(value)


def _seconds(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 3600.0:
        raise ValueError(f"{name} must be a number of seconds from 0 to 3600, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Impairment:
    """What to do to the frames of one direction. Probabilities are fractions
    (0.05 = 5 %), times are seconds. `seed` fixes the random pattern."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    seed: int | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            object.__setattr__(self, name, _fraction(name, getattr(self, name)))
        for name in ("delay", "jitter"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, not {self.seed!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {self.limit!r}")

    @property
    def delays(self) -> bool:
        return self.delay > 0 or self.jitter > 0

    def __str__(self) -> str:
        parts = [f"{name} {getattr(self, name) * 100:g}%" for name in ("loss", "duplicate", "reorder", "corrupt")
                 if getattr(self, name)]
        if self.delays:
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
    delayed: int = 0            # frames that went through the delay queue
    delay_overflow: int = 0     # dropped because the delay queue was full

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Lane:
    """One direction: the impairment stages in front of `emit(frame, args, kwargs)`."""

    def __init__(self, impairment: Impairment, salt: str, emit: Callable) -> None:
        self.counters = ImpairCounters()
        self._emit = emit
        self.loop = None
        self._queue: collections.deque = collections.deque()   # (due, frame, args, kwargs)
        self._last_due = 0.0
        self._timer = None
        self._held = None                                       # (frame, args, kwargs)
        self._held_timer = None
        self._salt = salt
        self.configure(impairment)

    def configure(self, impairment: Impairment) -> None:
        self.imp = impairment
        # A string seed is hashed deterministically; the salt keeps the two
        # directions of one port from making identical decisions.
        seed = None if impairment.seed is None else f"{impairment.seed}:{self._salt}"
        self.rng = random.Random(seed)

    # -- the stages --------------------------------------------------------------------
    def push(self, frame, args: tuple, kwargs: dict) -> bool:
        """Take one frame; returns what an immediate emit returned (True if held)."""
        imp, rng, c = self.imp, self.rng, self.counters
        if imp.loss and rng.random() < imp.loss:
            c.impaired_dropped += 1
            return True
        copies = 1
        if imp.duplicate and rng.random() < imp.duplicate:
            c.duplicated += 1
            copies = 2
        result = True
        for _ in range(copies):
            f = frame
            if imp.corrupt and rng.random() < imp.corrupt:
                f = self._flip_a_bit(f)
                c.corrupted += 1
            result = self._reorder(f, args, kwargs) and result
        return result

    def _flip_a_bit(self, frame) -> bytes:
        data = bytearray(frame)
        start = _ETH_HEADER if len(data) > _ETH_HEADER else 0
        if len(data) > start:
            i = self.rng.randrange(start, len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def _reorder(self, frame, args, kwargs) -> bool:
        held = self._held
        if held is not None:
            self._held = None
            self._cancel_held_timer()
            result = self._delay(frame, args, kwargs)
            self._delay(*held)
            return result
        if self.imp.reorder and self.rng.random() < self.imp.reorder:
            self._held = (frame, args, kwargs)
            self.counters.reordered += 1
            if self.loop is not None:
                self._held_timer = self.loop.call_later(REORDER_HOLD, self._release_held)
            return True
        return self._delay(frame, args, kwargs)

    def _release_held(self) -> None:
        self._held_timer = None
        held, self._held = self._held, None
        if held is not None:
            self._delay(*held)

    def _cancel_held_timer(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def _delay(self, frame, args, kwargs) -> bool:
        imp = self.imp
        # With no delay the frame goes at once, unless frames still wait from
        # a delay switched off since: it queues behind them, keeping the order.
        # A port not started has no loop and cannot delay.
        if self.loop is None or (not imp.delays and not self._queue):
            return self._emit(frame, args, kwargs)
        if len(self._queue) >= imp.limit:
            self.counters.delay_overflow += 1
            return True
        now = self.loop.now()
        wait = imp.delay + (self.rng.uniform(-imp.jitter, imp.jitter) if imp.jitter else 0.0)
        due = max(now + max(0.0, wait), self._last_due)
        self._last_due = due
        self._queue.append((due, frame, args, kwargs))
        self.counters.delayed += 1
        if self._timer is None and self.loop is not None:
            self._timer = self.loop.call_later(self._queue[0][0] - now, self._release_due)
        return True

    def _release_due(self) -> None:
        self._timer = None
        now = self.loop.now()
        queue = self._queue
        while queue and queue[0][0] <= now + _EPSILON:
            _, frame, args, kwargs = queue.popleft()
            self._emit(frame, args, kwargs)
            if self.loop is None:       # closed by whoever handled the frame
                return
        if queue:
            self._timer = self.loop.call_later(queue[0][0] - now, self._release_due)

    # -- life cycle ----------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Frames held back or queued, not yet emitted."""
        return len(self._queue) + (self._held is not None)

    def close(self) -> None:
        """Forget what waits (the link is gone) and stop the timers."""
        self._cancel_held_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = None
        self._queue.clear()
        self.loop = None


class ImpairedPort(Port):
    """`ImpairedPort(inner, out=None, in_=None)`: `inner` with impairments on
    frames to its peer (`out`) and from it (`in_`); None leaves that direction
    alone. See the module docstring for what each impairment does."""

    def __init__(self, inner: Port, out: Impairment | None = None, in_: Impairment | None = None) -> None:
        # Port.__init__ is not called: name, counters and link state are the inner port's.
        self.inner = inner
        self._sink: Callable | None = None
        self._out = _Lane(out or Impairment(), "out", self._emit_out)
        self._in = _Lane(in_ or Impairment(), "in", self._emit_in)
        self._out_on = out is not None
        self._in_on = in_ is not None

    # -- what is the inner port's ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def counters(self):
        return self.inner.counters

    @property
    def link_up(self) -> bool:
        return self.inner.link_up

    @link_up.setter
    def link_up(self, value: bool) -> None:
        self.inner.link_up = value

    @property
    def accepts_csum_partial(self) -> bool:
        # A corrupted partial-checksum frame would get a valid checksum from
        # whoever finishes it: have the switch finish it before we flip a bit.
        if self._out_on and self._out.imp.corrupt:
            return False
        return getattr(self.inner, "accepts_csum_partial", False)

    @property
    def accepts_gso(self) -> frozenset:
        if self._out_on:
            return frozenset()      # loss and the rest apply to wire frames: segment first
        return getattr(self.inner, "accepts_gso", frozenset())

    def __getattr__(self, name: str):
        # Anything else a caller may look up on a port (ifname, socket_path,
        # captures_all, device...) comes from the inner port.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- impairments ---------------------------------------------------------------------------
    @property
    def out_impairment(self) -> Impairment | None:
        return self._out.imp if self._out_on else None

    @property
    def in_impairment(self) -> Impairment | None:
        return self._in.imp if self._in_on else None

    def set_impairments(self, out: Impairment | None = None, in_: Impairment | None = None) -> None:
        """Change both directions (None: that direction unimpaired). Frames
        already waiting still leave at their time. Call on the loop's thread."""
        self._out.configure(out or Impairment())
        self._in.configure(in_ or Impairment())
        self._out_on, self._in_on = out is not None, in_ is not None

    @property
    def impair_counters(self) -> dict[str, ImpairCounters]:
        """{"out": ImpairCounters, "in": ImpairCounters}."""
        return {"out": self._out.counters, "in": self._in.counters}

    def impairment_stats(self) -> dict:
        """The impairments and their counters as plain data."""
        return {
            "out": {"impairment": str(self.out_impairment) if self._out_on else None, **self._out.counters.as_dict()},
            "in": {"impairment": str(self.in_impairment) if self._in_on else None, **self._in.counters.as_dict()},
        }

    # -- the Port interface ------------------------------------------------------------------
    def attach(self, sink: Callable | None) -> None:
        """Frames from the inner port come to us first, then to `sink(port, frame, meta)`."""
        self._sink = sink
        self.inner.attach(None if sink is None else self._from_peer)

    def start(self, loop) -> None:
        self._out.loop = loop
        self._in.loop = loop
        self.inner.start(loop)

    def close(self) -> None:
        self._out.close()
        self._in.close()
        self.inner.close()

    def transmit(self, frame, *args, **kwargs) -> bool:
        """Impair, then hand to the inner port (now or later); extra arguments pass through."""
        if not self._out_on:
            return self.inner.transmit(frame, *args, **kwargs)
        return self._out.push(frame, args, kwargs)

    def deliver(self, frame, *args, **kwargs) -> None:
        """A frame from the peer: counted by the inner port, then impaired on the way in."""
        self.inner.deliver(frame, *args, **kwargs)

    def _from_peer(self, port, frame, meta) -> None:
        if not self._in_on:
            self._emit_in(frame, (meta,), {})
            return
        if meta is None:
            self._in.push(frame, (None,), {})
            return
        # Finished (segmented, checksummed) frames only: impairments act on
        # wire frames, and a flipped bit must land under a checksum.
        egress = EgressFrame(frame, meta)
        frames = egress.for_egress(False, frozenset())
        if egress.error is not None:
            self.inner.counters.rx_dropped += 1
            self.inner.counters.count_error(egress.error.reason)
            return
        for f, _ in frames:
            self._in.push(f, (None,), {})

    def _emit_out(self, frame, args: tuple, kwargs: dict) -> bool:
        if not self.inner.link_up:
            self.inner.counters.tx_dropped += 1
            return False
        return self.inner.transmit(frame, *args, **kwargs)

    def _emit_in(self, frame, args: tuple, kwargs: dict) -> bool:
        sink = self._sink
        if sink is not None:
            sink(self, frame, *args, **kwargs)
        return True

    @property
    def status(self) -> str:
        """The inner port's status, then per impaired direction what is applied
        and what it did (only the counters of the impairments in use)."""
        lanes = []
        for label, on, lane in (("out", self._out_on, self._out), ("in", self._in_on, self._in)):
            if on:
                lanes.append((label, lane.imp, _summary(lane.imp, lane.counters)))
        if not lanes:
            return self.inner.status
        if len(lanes) == 2 and _same_but_seed(lanes[0][1], lanes[1][1]):
            text = f"impaired both ways [{lanes[0][1]}]: out {lanes[0][2]}; in {lanes[1][2]}"
        else:
            text = "impaired " + "; ".join(f"{label} [{imp}]: {summary}" for label, imp, summary in lanes)
        return f"{self.inner.status}; {text}"


def _same_but_seed(a: Impairment, b: Impairment) -> bool:
    return [getattr(a, f.name) for f in fields(a) if f.name != "seed"] == \
        [getattr(b, f.name) for f in fields(b) if f.name != "seed"]


def _summary(imp: Impairment, c: ImpairCounters) -> str:
    parts = []
    if imp.loss or c.impaired_dropped or c.delay_overflow:
        parts.append(f"lost {c.impaired_dropped + c.delay_overflow}")
    if imp.duplicate or c.duplicated:
        parts.append(f"dup {c.duplicated}")
    if imp.reorder or c.reordered:
        parts.append(f"reord {c.reordered}")
    if imp.corrupt or c.corrupted:
        parts.append(f"corrupt {c.corrupted}")
    if imp.delays or c.delayed:
        parts.append(f"delayed {c.delayed}")
    return ", ".join(parts) or "nothing yet"
