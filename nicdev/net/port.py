"""What the switch sees of a port.

A port is anything that can carry bare Ethernet frames: a virtio-net device
behind a vhost-user socket, a TAP device, a QEMU socket netdev. Ports
register their own file descriptors with the event loop in `start()`.

One contract both ways, `(frame, meta)`: `meta` is a
`nicdev.virtio.offload.FrameMeta` (partial checksum, GSO, DATA_VALID) or
None for a finished frame. The port calls `self.deliver(frame, meta)` for
every frame it received, which hands it to the one sink the switch attached,
`sink(port, frame, meta)`, as it came: nothing is finished on the way in.
The switch calls `transmit(frame, meta)` to hand a frame *out of* the port.
A port that can pass metadata on says so with `accepts_csum_partial` and
`accepts_gso` (the GSO kinds, `offload.GSO_*`) and gets such frames as they
are; every other port gets only finished frames, meta None: the frame is
finished at that egress, once (`nicdev.net.egress`).

Bursts: a port that receives several frames at once (a TAP read loop, a
ring drained in one go) hands them over together, `deliver_burst(items)`,
`items` a list of `(frame, meta)`; the switch then learns and looks up once
per burst per address where it can. A sink attached without a burst sink
gets the burst's frames one by one. The other way, a port that sets
`takes_bursts = True` gets `transmit_burst(items)` from the switch, one
call per burst per port, with the frames in the order they came; every
other port gets `transmit(frame, meta)` per frame, as before
(`transmit_burst`'s default loops over it, for direct callers).

Tracing: every port has `tracer` (a `nicdev.virtio.trace.Tracer`, side
"device", named after the port), off until a sink is added. A vhost-user
port's device writes its ring records there; the switch writes the drops it
makes for any port (docs/tracing.md).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Sequence

from nicdev.virtio.offload import FrameMeta
from nicdev.virtio.trace import DEVICE, Tracer

__all__ = ["Port", "PortCounters", "Burst"]

# One burst: frames with their metadata, in the order they came.
Burst = Sequence[tuple[bytes, "FrameMeta | None"]]


@dataclass
class PortCounters:
    rx_frames: int = 0      # frames received from the port's peer (into the switch)
    rx_bytes: int = 0
    tx_frames: int = 0      # frames sent out to the port's peer
    tx_bytes: int = 0
    tx_dropped: int = 0     # frames for the peer we could not deliver (no buffers, link down...)
    rx_dropped: int = 0     # malformed or refused frames from the peer
    errors: dict = field(default_factory=dict)   # reason -> count

    def count_error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "errors"}
        d["errors"] = dict(self.errors)
        return d


class Port(abc.ABC):
    """Base class: subclasses implement start/transmit/close and `status`."""

    kind = "port"
    # What transmit() may be given besides finished frames (see the module doc).
    accepts_csum_partial: bool = False
    accepts_gso: frozenset = frozenset()
    # True: the switch hands this port whole bursts (`transmit_burst`).
    takes_bursts: bool = False
    # True: a vhost-user port whose frames can go from one guest's ring to
    # another's still in C (`VhostUserPort.attach_pooled`, `transmit_pooled`).
    takes_pooled_bursts: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = PortCounters()
        self.tracer = Tracer(name, DEVICE)
        self.link_up = True
        # Set by the switch when the port is added; frames from the peer go here.
        self._sink: Callable[["Port", bytes, FrameMeta | None], None] | None = None
        self._burst_sink: Callable[["Port", Burst], None] | None = None

    def attach(self, sink: Callable[["Port", bytes, FrameMeta | None], None] | None,
               burst_sink: Callable[["Port", Burst], None] | None = None) -> None:
        """Send the peer's frames to `sink(port, frame, meta)` (None: nowhere),
        and whole bursts to `burst_sink(port, items)` if given."""
        self._sink = sink
        self._burst_sink = burst_sink if sink is not None else None

    def deliver(self, frame: bytes, meta: FrameMeta | None = None) -> None:
        """Called by the port implementation for each frame from its peer,
        with its metadata if it is not finished (see the module doc)."""
        self.counters.rx_frames += 1
        self.counters.rx_bytes += len(frame)
        sink = self._sink
        if sink is not None:
            sink(self, frame, meta)

    def deliver_burst(self, items: Burst) -> None:
        """Called by the port implementation with several frames from its peer
        at once: `items` is a list of `(frame, meta)` (see the module doc)."""
        counters = self.counters
        counters.rx_frames += len(items)
        counters.rx_bytes += sum(len(frame) for frame, _ in items)
        burst_sink = self._burst_sink
        if burst_sink is not None:
            burst_sink(self, items)
            return
        sink = self._sink
        if sink is not None:
            for frame, meta in items:
                sink(self, frame, meta)

    @property
    def wants_bursts(self) -> bool:
        """True when a burst sink is attached (a port may then read ahead)."""
        return self._burst_sink is not None

    @abc.abstractmethod
    def start(self, loop) -> None:
        """Register the port's file descriptors with the event loop."""

    @abc.abstractmethod
    def transmit(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        """Send one frame to the peer. Return False (and count) if it was dropped.

        `meta` other than None comes only to a port that declared it can take it."""

    def transmit_burst(self, items: Burst) -> int:
        """Send `(frame, meta)` pairs to the peer in order; returns how many were
        sent. This default loops over `transmit`; a port that does better sets
        `takes_bursts` and overrides it (the switch then calls it with every
        burst, and counts a burst whose transmit_burst raises as dropped)."""
        transmit = self.transmit
        return sum(1 for frame, meta in items if transmit(frame, meta))

    def close(self) -> None:
        pass

    @property
    def status(self) -> str:
        """One human-readable line: connected / waiting / link state."""
        return "up" if self.link_up else "down"
