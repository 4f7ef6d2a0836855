"""Impaired links: loss, duplication, reordering, corruption and delay on any port.

`ImpairedPort(inner, out=Impairment(...), in_=Impairment(...))` wraps another
port. Frames the switch sends to the peer (`transmit`) go through the `out`
impairment before the inner port sends them; frames from the peer go
through `in_` before they reach the switch. Everything else (name, kind,
start, close, status, link state, counters, offload abilities) is the inner
port's, so the switch cannot tell the difference. This is what `tc netem`
does on a Linux interface, for kernels without sch_netem and for ports that
are not Linux interfaces at all (a guest's vhost-user NIC, a socket netdev).

What happens to each frame (loss, duplicate, corrupt after the 14-byte
Ethernet header, reorder, delay +- jitter with a bounded queue) is decided
by `nicdev.virtio.impairment`, the project's one impairment model, with
each direction's own seeded `random.Random` (so a seed gives the same
pattern every run). This port only schedules what the model says: frames
due later and held frames waiting for a successor use the event loop's
`call_later`, so the port must be started (the switch does that). Extra
arguments of `transmit` and `deliver` (offload metadata) travel with their
frame untouched.

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
from dataclasses import fields
from typing import Callable

from nicdev.virtio.impairment import ImpairCounters, Impairment, LinkImpairer

from .egress import EgressFrame
from .port import Port

__all__ = ["ImpairedPort"]

_ETH_HEADER = 14
# Due times are computed as now + delay and compared with the clock again
# when the timer fires; allow for float rounding between the two.
_EPSILON = 1e-9


def _lane_rng(impairment: Impairment, salt: str) -> random.Random:
    # A string seed is hashed deterministically; the salt keeps the two
    # directions of one port from making identical decisions.
    return random.Random(None if impairment.seed is None else f"{impairment.seed}:{salt}")


class _Lane:
    """One direction: the impairment model, and the timers that release what it says, to `emit(frame, args, kwargs)`."""

    def __init__(self, impairment: Impairment, salt: str, emit: Callable) -> None:
        self._salt = salt
        self.model = LinkImpairer(impairment, _lane_rng(impairment, salt), corrupt_from=_ETH_HEADER)
        self._emit = emit
        self.loop = None
        self._queue: collections.deque = collections.deque()   # (due, frame, (args, kwargs)), due in order
        self._timer = None
        self._hold_timer = None

    @property
    def imp(self) -> Impairment:
        return self.model.impairment

    @property
    def counters(self) -> ImpairCounters:
        return self.model.counters

    def configure(self, impairment: Impairment) -> None:
        self.model.configure(impairment, _lane_rng(impairment, self._salt))

    def push(self, frame, args: tuple, kwargs: dict) -> bool:
        """Take one frame; returns what an immediate emit returned (True if held or delayed)."""
        now = self.loop.now() if self.loop is not None else 0.0
        result = self._send(self.model.push(frame, now, (args, kwargs)), now)
        self._watch_the_held_frame(now)
        return result

    def _send(self, leaving: list, now: float) -> bool:
        result = True
        for due, frame, (args, kwargs) in leaving:
            # A port not started has no loop and cannot delay.
            if self.loop is None or (due <= now + _EPSILON and not self._queue):
                result = self._emit(frame, args, kwargs) and result
                continue
            self._queue.append((due, frame, (args, kwargs)))
            if self._timer is None:
                self._timer = self.loop.call_later(due - now, self._release_due)
        return result

    def _release_due(self) -> None:
        self._timer = None
        now = self.loop.now()
        queue = self._queue
        while queue and queue[0][0] <= now + _EPSILON:
            _, frame, (args, kwargs) = queue.popleft()
            self._emit(frame, args, kwargs)
            if self.loop is None:       # closed by whoever handled the frame
                return
        if queue:
            self._timer = self.loop.call_later(queue[0][0] - now, self._release_due)

    def _watch_the_held_frame(self, now: float) -> None:
        expires = self.model.hold_expires
        if expires is None:
            self._cancel_hold_timer()
        elif self._hold_timer is None and self.loop is not None:
            self._hold_timer = self.loop.call_later(expires - now, self._release_held)

    def _release_held(self) -> None:
        self._hold_timer = None
        now = self.loop.now()
        self._send(self.model.expire(now), now)
        self._watch_the_held_frame(now)

    def _cancel_hold_timer(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    # -- life cycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Forget what waits (the link is gone) and stop the timers."""
        self._cancel_hold_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.model.clear()
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

    def set_link(self, up: bool) -> None:
        self.inner.set_link(up)

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
    def attach(self, sink: Callable | None, burst_sink: Callable | None = None) -> None:
        """Frames from the inner port come to us first, then to `sink(port, frame, meta)`.
        `burst_sink` is not used: impairments decide frame by frame."""
        self._sink = sink
        self.inner.attach(None if sink is None else self._from_peer)

    def start(self, loop) -> None:
        self._out.loop = loop
        self._in.loop = loop
        self.inner.start(loop)

    def adopt(self, loop) -> None:
        """Wrap an inner port that is already started (impairments set on a
        running switch): only the lanes need the loop."""
        self._out.loop = loop
        self._in.loop = loop

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

    def deliver_burst(self, items) -> None:
        """Frames from the peer at once: counted by the inner port, then impaired one by one."""
        self.inner.deliver_burst(items)

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
            self.inner.count_link_down(1, rx=False)
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
    if imp.loss or c.impaired_dropped or c.delay_overflow or c.queue_overflow:
        parts.append(f"lost {c.impaired_dropped + c.delay_overflow + c.queue_overflow}")
    if imp.duplicate or c.duplicated:
        parts.append(f"dup {c.duplicated}")
    if imp.reorder or c.reordered:
        parts.append(f"reord {c.reordered}")
    if imp.corrupt or c.corrupted:
        parts.append(f"corrupt {c.corrupted}")
    if imp.delays or c.delayed:
        parts.append(f"delayed {c.delayed}")
    return ", ".join(parts) or "nothing yet"
