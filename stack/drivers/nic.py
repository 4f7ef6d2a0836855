"""The network card as the stack sees it: the interface every driver implements.

The interface core never looks behind :class:`Nic`: the virtio-net driver
(`stack.drivers.virtio_driver`), the in-process loopback pair
(`stack.drivers.loopback`) used by tests, anything else all look the same.
Frames move in bursts (``transmit(list)``, ``receive(max)``) because per-call
overhead dominates in Python and the virtio driver works in bursts anyway.
Both directions carry ``(frame, meta)`` pairs, the device side's contract:
on transmit ``meta`` is ``None`` for a finished frame (nothing for the NIC
to do, and the cheapest test on the hot path) or a ``FrameMeta`` request.
``transmit_frames(frames, metas)`` takes the same burst without a pair per
frame: the frames (a list, or a ``TxFrames`` joined once into the one buffer
the ring kernels read) and one list of metas, or None when all are finished.

Offloads are described by ``nicdev.virtio.offload.FrameMeta``, the project's
one offload-metadata type (virtio-net's header fields); this module passes
it, and the constants the stack needs, on to the stack, which imports
nothing of nicdev itself:

* ``NicOffloads.TX_CSUM`` (``VIRTIO_NET_HDR_F_NEEDS_CSUM``): the stack may hand
  over a frame whose L4 checksum field holds only the pseudo-header sum, with
  ``FrameMeta(needs_csum=True, csum_start=..., csum_offset=...)``; the NIC
  finishes the checksum.
* ``NicOffloads.TSO`` (GSO): a TCP frame larger than the MTU, with the checksum
  request above and ``gso_type=GSO_TCPV4``, ``gso_size=MSS``; the NIC cuts it.
* ``NicOffloads.RX_CSUM_TRUSTED`` (``VIRTIO_NET_HDR_F_DATA_VALID``): the NIC may
  mark a received frame ``DATA_VALID`` (``data_valid=True``); the stack then
  skips the L4 checksum check.
* ``NicOffloads.RX_GSO`` (GUEST_TSO4): the NIC may hand over coalesced TCP
  frames of up to 64 KiB (``gso_type=GSO_TCPV4``); a receive window of a few
  of them is then only a few frames in flight, so the stack offers a larger
  one.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Iterable, Optional

from nicdev.virtio.driver_burst import TxFrames
from nicdev.virtio.offload import DATA_VALID, GSO_TCPV4, FrameMeta
from stack.wire import MacAddress

__all__ = [
    "Nic",
    "NicOffloads",
    "FrameMeta",
    "DATA_VALID",
    "GSO_TCPV4",
    "NO_RX_META",
    "TxItem",
    "TxFrames",
    "not_a_tx_pair",
]

class NicOffloads(enum.Flag):
    """What the NIC does for the stack (negotiated features, for virtio)."""

    NONE = 0
    RX_CSUM_TRUSTED = enum.auto()  # receive: data_valid may be set (DATA_VALID)
    TX_CSUM = enum.auto()  # transmit: the NIC completes L4 checksums (NEEDS_CSUM)
    TSO = enum.auto()  # transmit: the NIC segments large TCP frames (GSO)
    RX_GSO = enum.auto()  # receive: coalesced TCP frames of up to 64 KiB may arrive


#: A received frame the NIC says nothing about (checksum not checked).
NO_RX_META = FrameMeta()

#: What `Nic.transmit` takes and `Interface.poll` returns: a frame and its
#: offload request (NEEDS_CSUM, GSO), or None for a finished frame.
TxItem = tuple[bytes, Optional[FrameMeta]]


def not_a_tx_pair(item: object) -> TypeError:
    """The error a NIC raises for a transmit item that is not a pair.

    A bare frame is a caller's bug, not a lossy wire: it is raised, not
    counted, so it cannot go unnoticed."""
    return TypeError(
        f"Nic.transmit takes (frame, FrameMeta | None) pairs, got {type(item).__name__}"
        + (" (a bare frame: pass (frame, None))" if isinstance(item, (bytes, bytearray, memoryview)) else "")
    )


class Nic(ABC):
    """A network card: frames in, frames out, a file descriptor to wait on."""

    mac: MacAddress
    mtu: int = 1500
    offloads: NicOffloads = NicOffloads.NONE

    @abstractmethod
    def transmit(self, frames: Iterable[TxItem]) -> int:
        """Send a burst of ``(frame, meta)`` pairs; return how many the NIC took.

        ``meta`` is None for a finished frame, or the offload the NIC is to
        do (see the module doc). An item that is not a pair raises
        ``TypeError`` (``not_a_tx_pair``). Frames it cannot take (queue full, too long, link down) are dropped
        and counted by the NIC, not raised: the stack treats the wire as lossy.
        """

    def transmit_frames(self, frames, metas: Optional[list] = None) -> int:
        """``transmit`` for a burst given as frames (a list or a ``TxFrames``)
        and one list of metas, one per frame (None: all finished).

        This default builds the pairs; a driver whose rings take bursts
        overrides it so that no pair is made per frame."""
        if metas is None:
            return self.transmit([(frame, None) for frame in frames])
        if len(metas) != len(frames):
            raise ValueError(f"{len(frames)} frames and {len(metas)} metas: one meta (or None) per frame")
        return self.transmit(list(zip(frames, metas)))

    @abstractmethod
    def receive(self, max: int = 64) -> list[tuple[bytes, FrameMeta]]:
        """Return up to ``max`` received frames (possibly none), never blocking."""

    def fileno(self) -> int | None:
        """A descriptor that is readable when frames may be waiting.

        ``None`` means the NIC has nothing to wait on; the stack then polls it.
        """
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the NIC's resources; later calls raise ``OSError(EBADF)``."""

    def snapshot(self) -> dict:
        """The card as plain data, for a monitor (read only): ``driver``,
        ``link`` (up or not), ``mac``, ``mtu``, ``offloads`` (names), its
        ``counters`` and its ``rings`` (one dict per queue; none here: a
        driver with rings lists them, see ``stack.drivers.ring_state``)."""
        counters = getattr(self, "counters", None)
        return {
            "driver": type(self).__name__,
            "link": True,
            "mac": str(self.mac),
            "mtu": self.mtu,
            "offloads": [flag.name for flag in NicOffloads if flag in self.offloads and flag.name],
            "counters": dict(counters) if counters is not None else {},
            "rings": [],
        }


