"""An in-process loopback pair of NICs, for tests and demos.

What one :class:`LoopbackNic` transmits, its peer receives, through a bounded
queue with an eventfd. With ``NicOffloads.TX_CSUM`` and ``TSO`` it finishes
checksums and cuts TSO frames the way hardware would (with the one
completion and segmentation in ``nicdev.virtio.offload``).

``nic.impairment = Impairment(...)`` (``nicdev.virtio.impairment``, the
project's one impairment model) loses, duplicates, corrupts or reorders the
frames that end transmits; each of those is a fraction drawn from the
impairment's seeded generator or a rule ``frame -> bool``. The NIC has no
timer, so an impairment that delays (delay, jitter, rate) is refused, and a
frame held back for reordering waits for the next frame however long that
takes.
"""
from __future__ import annotations

import errno
import os
import threading
from collections import Counter, deque
from typing import Iterable

from nicdev.virtio.impairment import Impairment, LinkImpairer
from nicdev.virtio.offload import OffloadError, complete_checksum, segment
from stack.drivers.nic import DATA_VALID, NO_RX_META, FrameMeta, Nic, NicOffloads, TxItem, not_a_tx_pair
from stack.wire import MacAddress

__all__ = ["LoopbackNic", "LoopbackNicPair"]

ETH_HEADER_LEN = 14


class LoopbackNic(Nic):
    """One end of a :class:`LoopbackNicPair`; thread-safe.

    Received frames wait in a bounded queue; an eventfd is readable while
    the queue is not empty.
    """

    def __init__(
        self,
        mac: MacAddress,
        mtu: int = 1500,
        offloads: NicOffloads = NicOffloads.NONE,
        rx_queue_len: int = 1024,
    ) -> None:
        self.mac = mac
        self.mtu = mtu
        self.offloads = offloads
        self._impairment: Impairment | None = None
        # One model for the NIC's life, so its counters go on across changes;
        # the Ethernet header is left alone: a corrupted frame still arrives.
        self._impairer = LinkImpairer(Impairment(), corrupt_from=ETH_HEADER_LEN)
        self.counters: Counter[str] = Counter()
        self.peer: LoopbackNic | None = None
        self._rx: deque[tuple[bytes, FrameMeta]] = deque()
        self._rx_queue_len = rx_queue_len
        self._lock = threading.Lock()  # guards the receive queue
        self._tx_lock = threading.Lock()  # one transmitting thread at a time
        self._efd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False

    # -- Nic API ------------------------------------------------------------
    def transmit(self, frames: Iterable[TxItem]) -> int:
        self._check_open()
        with self._tx_lock:
            return self._transmit_locked(frames)

    def _transmit_locked(self, frames: Iterable[TxItem]) -> int:
        taken = 0
        for item in frames:
            try:
                frame, meta = item
            except (TypeError, ValueError):
                raise not_a_tx_pair(item) from None
            if meta is not None and meta.gso_type:
                taken += self._transmit_gso(frame, meta)
                continue
            if len(frame) > self.mtu + ETH_HEADER_LEN:
                self.counters["tx_drop_oversize"] += 1
                continue
            valid = False
            if meta is not None and meta.needs_csum:
                if NicOffloads.TX_CSUM not in self.offloads:
                    self.counters["tx_drop_csum_not_offered"] += 1
                    continue
                try:
                    frame = complete_checksum(frame, meta)
                except ValueError:
                    self.counters["tx_drop_bad_csum_offsets"] += 1
                    continue
                valid = True  # computed by "hardware": the peer may trust it
            self.counters["tx_frames"] += 1
            taken += 1
            self._send_to_peer(frame, valid)
        return taken

    def _transmit_gso(self, frame: bytes, meta: FrameMeta) -> int:
        """A TSO frame: cut into MTU-sized segments in "hardware" (1 = taken).

        Only with NicOffloads.TSO and TX_CSUM; the peer gets finished frames
        whose checksums it may trust (as from a real NIC's segmentation).
        """
        if NicOffloads.TSO not in self.offloads or NicOffloads.TX_CSUM not in self.offloads:
            self.counters["tx_drop_tso_not_offered"] += 1
            return 0
        if not meta.needs_csum or len(frame) > ETH_HEADER_LEN + 65535:
            self.counters["tx_drop_bad_gso"] += 1
            return 0
        try:
            pieces = segment(frame, meta)
        except (OffloadError, ValueError):
            self.counters["tx_drop_bad_gso"] += 1
            return 0
        if any(len(p) > self.mtu + ETH_HEADER_LEN for p in pieces):
            self.counters["tx_drop_oversize"] += 1
            return 0
        self.counters["tx_gso"] += 1
        self.counters["tx_frames"] += len(pieces)
        for p in pieces:
            self._send_to_peer(p, True)
        return 1

    def receive(self, max: int = 64) -> list[tuple[bytes, FrameMeta]]:
        self._check_open()
        out: list[tuple[bytes, FrameMeta]] = []
        with self._lock:
            while self._rx and len(out) < max:
                out.append(self._rx.popleft())
            if not self._rx and self._signalled:
                try:
                    os.eventfd_read(self._efd)
                except BlockingIOError:
                    pass
                self._signalled = False
            self.counters["rx_frames"] += len(out)
        return out

    def fileno(self) -> int | None:
        return self._efd

    def close(self) -> None:
        with self._lock:
            if self._efd is not None:
                os.close(self._efd)
                self._efd = None
            self._rx.clear()

    @property
    def closed(self) -> bool:
        return self._efd is None

    # -- impairments --------------------------------------------------------------
    @property
    def impairment(self) -> Impairment | None:
        """What happens to the frames this end transmits (None: nothing)."""
        return self._impairment

    @impairment.setter
    def impairment(self, impairment: Impairment | None) -> None:
        if impairment is not None and impairment.delays:
            raise ValueError(f"a loopback NIC has no timer and cannot delay frames: {impairment}")
        if impairment is not None:
            self._impairer.configure(impairment)
        self._impairment = impairment

    # -- wiring ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._efd is None:
            raise OSError(errno.EBADF, "loopback NIC is closed")

    def _send_to_peer(self, frame: bytes, valid: bool) -> None:
        peer = self.peer
        if peer is None or peer.closed:
            self.counters["tx_drop_link_down"] += 1
            return
        meta = DATA_VALID if valid and NicOffloads.RX_CSUM_TRUSTED in peer.offloads else NO_RX_META
        if self._impairment is None:
            peer._enqueue(frame, meta)
            return
        # No clock: nothing is delayed, so every frame that leaves is due now.
        for _, out, out_meta in self._impairer.push(frame, 0.0, meta):
            peer._enqueue(out, out_meta)
        c = self._impairer.counters
        for key, value in (("tx_impaired_drop", c.impaired_dropped), ("tx_impaired_duplicate", c.duplicated),
                           ("tx_impaired_corrupt", c.corrupted), ("tx_impaired_reorder", c.reordered)):
            if value:
                self.counters[key] = value

    def _enqueue(self, frame: bytes, meta: FrameMeta) -> None:
        with self._lock:
            if self._efd is None:
                return
            if len(self._rx) >= self._rx_queue_len:
                self.counters["rx_drop_queue_full"] += 1
                return
            self._rx.append((frame, meta))
            if not self._signalled:
                os.eventfd_write(self._efd, 1)
                self._signalled = True


class LoopbackNicPair:
    """Two :class:`LoopbackNic` wired back to back: ``a, b = LoopbackNicPair()``.

    What ``a`` transmits, ``b`` receives and the other way round. Set
    ``pair.a.impairment`` (or ``b``) to an ``Impairment`` to lose,
    duplicate, corrupt or reorder frames in that direction.
    """

    def __init__(
        self,
        mtu: int = 1500,
        offloads: NicOffloads = NicOffloads.NONE,
        macs: tuple[MacAddress, MacAddress] | None = None,
        rx_queue_len: int = 1024,
    ) -> None:
        mac_a, mac_b = macs if macs is not None else (MacAddress.random_local(), MacAddress.random_local())
        self.a = LoopbackNic(mac_a, mtu, offloads, rx_queue_len)
        self.b = LoopbackNic(mac_b, mtu, offloads, rx_queue_len)
        self.a.peer, self.b.peer = self.b, self.a

    def __iter__(self):
        return iter((self.a, self.b))

    def close(self) -> None:
        self.a.close()
        self.b.close()
