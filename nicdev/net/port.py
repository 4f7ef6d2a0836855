"""What the switch sees of a port.

A port is anything that can carry bare Ethernet frames: a virtio-net device
behind a vhost-user socket, a TAP device, a QEMU socket netdev. The switch
calls `transmit(frame)` to hand a frame *out of* the port; the port calls
`self.deliver(frame)` for every frame it received, which the switch hooks.
Ports register their own file descriptors with the event loop in `start()`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Port", "PortCounters"]


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

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = PortCounters()
        self.link_up = True
        # Set by the switch when the port is added; frames from the peer go here.
        self._sink: Callable[["Port", bytes], None] | None = None

    def attach(self, sink: Callable[["Port", bytes], None]) -> None:
        self._sink = sink

    def deliver(self, frame: bytes) -> None:
        """Called by the port implementation for each frame from its peer."""
        self.counters.rx_frames += 1
        self.counters.rx_bytes += len(frame)
        if self._sink is not None:
            self._sink(self, frame)

    @abc.abstractmethod
    def start(self, loop) -> None:
        """Register the port's file descriptors with the event loop."""

    @abc.abstractmethod
    def transmit(self, frame: bytes) -> bool:
        """Send one frame to the peer. Return False (and count) if it was dropped."""

    def close(self) -> None:
        pass

    @property
    def status(self) -> str:
        """One human-readable line: connected / waiting / link state."""
        return "up" if self.link_up else "down"
