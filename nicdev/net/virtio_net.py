"""The virtio-net device: queue pair 0 of a vhost-user back-end, as a NIC.

Ring 0 is the guest's receive queue (we fill its buffers with frames for the
guest), ring 1 its transmit queue (we take the frames the guest sends). The
control queue (ring 2, CTRL_VQ) is not offered: QEMU and DPDK's virtio-user
keep it to themselves anyway.

Directions are named from the guest's side, as virtio does: *RX* = towards
the guest (`receive(frame)`), *TX* = from the guest (`on_frame(frame)`).

Every frame we cannot carry is a counted drop with a reason
(`counters.drops`), never an exception. A ring the guest breaks (a loop in a
chain, an address outside its memory...) is marked broken with the reason:
the device stops using that ring and counts what it drops, the rest of the
process carries on, and the front-end's next set-up of the ring (or a
reconnect) clears it.

Offloads (`offloads=True`, the default): the device offers CSUM, HOST_TSO4/6
and HOST_ECN (the guest may send partial checksums and GSO frames: they
reach `on_offload_frame(frame, meta)` with a `nicdev.net.offload.FrameMeta`,
after `offload.check`), and GUEST_CSUM, GUEST_TSO4/6 and GUEST_ECN
(`receive(frame, meta)` hands such frames to a guest that negotiated them,
with NEEDS_CSUM, GSO or DATA_VALID in the header; metadata the guest did not
negotiate is done here in software first). Hostile headers are counted
drops (`tx_bad_csum_offsets`, `tx_gso_size_zero`, `tx_gso_headers`...).
"""
from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from nicdev.vhost_user.backend import BackendDevice, RequestFailed, VhostUserBackend, Vring
from nicdev.vhost_user.protocol import ProtocolFeature
from nicdev.virtio.device_queue import DescriptorChain
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, describe, has, mask,
)
from nicdev.virtio.memory import GuestMemory
from nicdev.virtio.net_hdr import NetHdr, header_size
from nicdev.virtio.ring import QueueBroken

from nicdev.virtio import offload
from .ethernet import BROADCAST, HEADER_LEN, MAX_FRAME_LEN
from nicdev.virtio.offload import DATA_VALID, GSO_ECN, GSO_TCPV4, GSO_TCPV6, FrameMeta, OffloadError

__all__ = ["VirtioNetDevice", "DeviceCounters", "DEVICE_FEATURES", "BASE_FEATURES", "OFFLOAD_FEATURES",
           "PROTOCOL_FEATURES", "RX_RING", "TX_RING", "make_rarp"]

log = logging.getLogger(__name__)

RX_RING = 0
TX_RING = 1

# What we offer without offloads: every frame whole and finished.
BASE_FEATURES = mask(
    VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU,
)
# Checksum and TCP segmentation offloads, both ways. Whatever a receiver did
# not negotiate is done in software (nicdev.net.offload), so offering them
# is always safe.
OFFLOAD_FEATURES = mask(
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_ECN,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN,
)
DEVICE_FEATURES = BASE_FEATURES | OFFLOAD_FEATURES
PROTOCOL_FEATURES = mask(
    ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.RARP, ProtocolFeature.NET_MTU,
    ProtocolFeature.STATUS,
)

_VLAN_TAG = 4
_MIN_MTU = 68
_MAX_MTU = 65535
_POLL_INTERVAL = 0.001   # ring polling when the front-end gave no kick fd
# A GSO frame may be as long as a 64 KiB IP packet, whatever the MTU.
_MAX_GSO_FRAME = MAX_FRAME_LEN + _VLAN_TAG
_NO_GSO: frozenset = frozenset()
_NEEDS_CSUM = 1
# Frames that found no receive buffer wait here (in order) until the guest
# posts more and kicks the RX ring, as a real NIC's FIFO would; beyond this
# they are dropped. TCP bursts from a fast peer otherwise lose segments
# every time the guest's driver is a little late refilling its ring.
RX_BACKLOG_FRAMES = 256


@dataclass
class DeviceCounters:
    """Device-level counters; `drops` maps a reason to a count."""

    rx_frames: int = 0      # frames written into the guest's receive ring
    rx_bytes: int = 0
    tx_frames: int = 0      # frames taken from the guest's transmit ring
    tx_bytes: int = 0
    tx_kicks: int = 0
    rx_kicks: int = 0
    calls: int = 0          # used-buffer notifications sent
    rx_backlogged: int = 0  # frames that had to wait for receive buffers
    tx_csum_partial: int = 0  # guest frames with NEEDS_CSUM (GSO ones included)
    tx_gso: int = 0         # guest frames with GSO (TSO)
    rx_csum_partial: int = 0  # frames given to the guest with NEEDS_CSUM
    rx_gso: int = 0         # frames given to the guest as GSO
    rx_data_valid: int = 0  # frames given to the guest with DATA_VALID
    rx_finished: int = 0    # frames whose metadata the guest could not take: done in software here
    drops: dict = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["drops"] = dict(self.drops)
        return d


def make_rarp(mac: bytes) -> bytes:
    """A broadcast RARP "request reverse" announcing `mac` (what QEMU sends
    after a migration so switches learn where the guest is now)."""
    arp = (b"\x00\x01" b"\x08\x00" b"\x06\x04" b"\x00\x03"  # Ethernet/IPv4, op 3
           + mac + bytes(4) + mac + bytes(4))
    frame = BROADCAST + mac + b"\x80\x35" + arp
    return frame + bytes(max(0, 60 - len(frame)))


class VirtioNetDevice(BackendDevice):
    """A virtio-net device behind a `VhostUserBackend`.

    `on_frame(frame)` gets each finished frame the guest transmits;
    `on_offload_frame(frame, meta)` (optional) gets those with a partial
    checksum or GSO (without it they are finished here and go to
    `on_frame`). `on_drop(direction, reason)` (optional) hears about each
    drop, direction "rx" (towards the guest) or "tx" (from the guest).
    `offloads=False` offers no checksum or GSO features. Call
    `attach_loop(loop)` before the rings start so kick fds can be watched;
    without a loop (unit tests) call `process_tx()` yourself.
    """

    def __init__(
        self,
        on_frame: Callable[[bytes], None],
        *,
        name: str = "virtio-net",
        on_drop: Callable[[str, str], None] | None = None,
        on_offload_frame: Callable[[bytes, FrameMeta], None] | None = None,
        offloads: bool = True,
        tx_burst: int = 64,
        tx_budget: int = 1024,
    ) -> None:
        self.name = name
        self.on_frame = on_frame
        self.on_offload_frame = on_offload_frame
        self.offered_features = DEVICE_FEATURES if offloads else BASE_FEATURES
        self.on_drop = on_drop
        self.tx_burst = tx_burst
        self.tx_budget = tx_budget      # chains per turn of the loop, so one guest cannot starve the rest
        self.loop = None
        self.counters = DeviceCounters()
        self._reset_state()

    def _reset_state(self) -> None:
        self.features = 0
        self.hdr_len = 12
        self.mrg_rxbuf = False
        self.mtu: int | None = None
        self._set_offloads(0)
        self.status = 0
        self.mem: GuestMemory | None = None
        self.rx: Vring | None = None
        self.tx: Vring | None = None
        self._rx_held: collections.deque[DescriptorChain] = collections.deque()
        self._rx_backlog: collections.deque[tuple[bytes, FrameMeta | None]] = collections.deque()
        self._rx_notify_pending = False
        self._timers: dict[int, object] = {}
        self._watched: dict[int, int] = {}   # ring index -> kick fd registered with the loop

    def attach_loop(self, loop) -> None:
        self.loop = loop

    def make_backend(self, name: str | None = None) -> VhostUserBackend:
        """A back-end offering this device's features, with this device attached."""
        return VhostUserBackend(self.offered_features, PROTOCOL_FEATURES, 2, device=self, queue_num=1,
                                name=name or self.name)

    def _set_offloads(self, features: int) -> None:
        """What each direction may carry, from the negotiated features."""
        # TX (from the guest): what the guest may ask of us.
        self.tx_csum = has(features, VIRTIO_NET_F_CSUM)
        kinds = set()
        if self.tx_csum:
            if has(features, VIRTIO_NET_F_HOST_TSO4):
                kinds.add(GSO_TCPV4)
            if has(features, VIRTIO_NET_F_HOST_TSO6):
                kinds.add(GSO_TCPV6)
            if kinds and has(features, VIRTIO_NET_F_HOST_ECN):
                kinds.add(GSO_ECN)
        self.tx_gso = frozenset(kinds)
        # RX (to the guest): what it takes. GUEST_TSO needs GUEST_CSUM (spec).
        self.guest_csum = has(features, VIRTIO_NET_F_GUEST_CSUM)
        kinds = set()
        if self.guest_csum:
            if has(features, VIRTIO_NET_F_GUEST_TSO4):
                kinds.add(GSO_TCPV4)
            if has(features, VIRTIO_NET_F_GUEST_TSO6):
                kinds.add(GSO_TCPV6)
            if kinds and has(features, VIRTIO_NET_F_GUEST_ECN):
                kinds.add(GSO_ECN)
        self.rx_gso = frozenset(kinds) if kinds else _NO_GSO

    # -- state ---------------------------------------------------------------
    @property
    def max_frame(self) -> int:
        """The longest frame either way: MTU + header + one VLAN tag, or 64 KiB."""
        if self.mtu is not None:
            return self.mtu + HEADER_LEN + _VLAN_TAG
        return MAX_FRAME_LEN

    @property
    def broken(self) -> str | None:
        """Why a ring is broken (the first one found), or None."""
        for ring in (self.rx, self.tx):
            if ring is not None and ring.broken:
                return f"{'rx' if ring.index == RX_RING else 'tx'} ring: {ring.broken}"
        return None

    def describe(self) -> str:
        def ring_state(ring: Vring | None) -> str:
            if ring is None or not ring.started:
                return "stopped"
            if ring.broken:
                return "broken"
            return "running" if ring.enabled else "disabled"
        feats = "+".join(n for n in describe(self.features) if n != "VHOST_USER_PROTOCOL_FEATURES") or "none"
        return f"features {feats}, rx ring {ring_state(self.rx)}, tx ring {ring_state(self.tx)}"

    def _drop(self, direction: str, reason: str) -> bool:
        self.counters.drop(reason)
        if self.on_drop is not None:
            self.on_drop(direction, reason)
        return False

    # -- BackendDevice callbacks ---------------------------------------------
    def features_set(self, features: int) -> None:
        self.features = features
        self.hdr_len = header_size(features)
        self.mrg_rxbuf = has(features, VIRTIO_NET_F_MRG_RXBUF)
        self._set_offloads(features)
        if not has(features, VIRTIO_NET_F_MTU):
            self.mtu = None
        log.info("%s: features %s (header %d bytes)", self.name, "+".join(describe(features)), self.hdr_len)

    def mem_table_changed(self, mem: GuestMemory | None) -> None:
        self.mem = mem

    def ring_started(self, ring: Vring) -> None:
        if ring.index == RX_RING:
            self.rx = ring
            self._rx_held.clear()
            # The guest need not kick us for receive buffers until a frame
            # waits for one (then _backlog_rx turns notifications on).
            self._guarded(ring, lambda q: q.disable_notifications(self.mem))
            self._watch(ring, self._on_rx_kick)
        elif ring.index == TX_RING:
            self.tx = ring
            self._watch(ring, self._on_tx_kick)
            # Buffers may be waiting from before the (re)start.
            self._soon(TX_RING, self.process_tx)

    def ring_stopping(self, ring: Vring) -> int:
        self._unwatch(ring)
        timer = self._timers.pop(ring.index, None)
        if timer is not None:
            timer.cancel()
        if ring.index == RX_RING:
            # Popped but unused chains are the last ones popped: the back-end
            # rewinds the avail index over them so the guest gets them back.
            held = len(self._rx_held)
            self._rx_held.clear()
            self._drop_backlog("rx_ring_stopped")
            if self._rx_notify_pending:
                self._flush_rx_notify()
            return held
        return 0

    def ring_enable_changed(self, ring: Vring) -> None:
        log.info("%s: ring %d %s", self.name, ring.index, "enabled" if ring.enabled else "disabled")

    def send_rarp(self, mac: bytes) -> None:
        # Sent as if the guest had: the switch learns the guest's port.
        log.info("%s: RARP for %s", self.name, mac.hex(":"))
        self.on_frame(make_rarp(mac))

    def set_mtu(self, mtu: int) -> None:
        if not has(self.features, VIRTIO_NET_F_MTU):
            raise RequestFailed("NET_SET_MTU without VIRTIO_NET_F_MTU negotiated")
        if not _MIN_MTU <= mtu <= _MAX_MTU:
            raise RequestFailed(f"MTU {mtu} out of range {_MIN_MTU}..{_MAX_MTU}")
        self.mtu = mtu
        log.info("%s: MTU %d", self.name, mtu)

    def status_set(self, status: int) -> None:
        self.status = status

    def reset(self) -> None:
        for index in list(self._watched):
            self._unwatch_index(index)
        for timer in self._timers.values():
            timer.cancel()
        self._reset_state()

    # -- loop plumbing ---------------------------------------------------------
    def _watch(self, ring: Vring, callback: Callable[[], None]) -> None:
        if self.loop is None:
            return
        if ring.kick_fd is not None:
            self.loop.add_reader(ring.kick_fd, callback)
            self._watched[ring.index] = ring.kick_fd
        elif ring.index == TX_RING:
            self._poll_tx()

    def _unwatch(self, ring: Vring) -> None:
        self._unwatch_index(ring.index)

    def _unwatch_index(self, index: int) -> None:
        fd = self._watched.pop(index, None)
        if fd is not None and self.loop is not None:
            self.loop.remove_reader(fd)

    def _soon(self, key: int, callback: Callable[[], None], delay: float = 0.0) -> None:
        if self.loop is None or key in self._timers:
            return

        def run() -> None:
            self._timers.pop(key, None)
            callback()
        self._timers[key] = self.loop.call_later(delay, run)

    def _poll_tx(self) -> None:
        ring = self.tx
        if ring is None or not ring.started or not ring.polling:
            return
        self.process_tx()
        self._soon(TX_RING, self._poll_tx, _POLL_INTERVAL)

    def _read_kick(self, ring: Vring) -> bool:
        """Clear the kick eventfd; False if the fd is unusable (ring broken)."""
        try:
            data = os.read(ring.kick_fd, 8)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as e:
            self._break(ring, f"kick fd read failed: {e.strerror}")
            return False
        if not data:
            # A file at EOF is always readable: we would spin on it.
            self._break(ring, "kick fd is at end of file (not an eventfd)")
            return False
        return True

    def _on_tx_kick(self) -> None:
        ring = self.tx
        if ring is None or ring.kick_fd is None:
            return
        self.counters.tx_kicks += 1
        if self._read_kick(ring):
            self.process_tx()

    def _on_rx_kick(self) -> None:
        ring = self.rx
        if ring is None or ring.kick_fd is None:
            return
        self.counters.rx_kicks += 1
        if self._read_kick(ring):
            self._flush_backlog()

    def _break(self, ring: Vring, reason: str) -> None:
        log.warning("%s: %s ring broken: %s", self.name, "rx" if ring.index == RX_RING else "tx", reason)
        ring.mark_broken(reason)
        ring.signal_error()
        self._unwatch(ring)
        if ring.index == RX_RING:
            self._rx_held.clear()
            self._drop_backlog("ring_broken")

    def _guarded(self, ring: Vring, fn) -> bool:
        try:
            fn(ring.queue)
        except QueueBroken as e:
            self._break(ring, e.reason)
            return False
        return True

    def _notify(self, ring: Vring) -> None:
        if ring.queue.needs_notification(self.mem) and ring.signal_call():
            self.counters.calls += 1

    # -- TX: frames from the guest ----------------------------------------------
    def process_tx(self) -> int:
        """Drain the guest's transmit ring; returns the chains taken.

        Takes up to `tx_budget` chains, returning them in bursts (one used-idx
        store and at most one notification per burst) and handing the frames
        to `on_frame`. With notifications re-enabled, the ring is checked once
        more, closing the race with a driver that added buffers meanwhile."""
        ring = self.tx
        if ring is None or ring.queue is None or ring.broken or self.mem is None:
            return 0
        queue, mem, hdr_len = ring.queue, self.mem, self.hdr_len
        budget = self.tx_budget
        taken = 0
        frames: list[bytes] = []
        try:
            while True:
                queue.disable_notifications(mem)
                while budget > 0:
                    used = []
                    while len(used) < self.tx_burst and budget > 0:
                        chain = queue.pop(mem)
                        if chain is None:
                            break
                        budget -= 1
                        used.append((chain.head, 0))
                        frame = self._tx_frame(chain, mem, hdr_len, ring.enabled)
                        if frame is not None:
                            frames.append(frame)
                    if not used:
                        break
                    taken += len(used)
                    queue.push_many(mem, used)
                    self._notify(ring)
                    self._emit(frames)
                    frames = []
                if budget <= 0:
                    # More may be waiting: come back on the next turn of the loop.
                    self._soon(TX_RING, self.process_tx)
                    break
                if not queue.enable_notifications(mem):
                    break
        except QueueBroken as e:
            self._break(ring, e.reason)
            self._emit(frames)
        return taken

    def _tx_frame(self, chain: DescriptorChain, mem: GuestMemory, hdr_len: int, enabled: bool) -> bytes | None:
        n = chain.readable_len
        if n < hdr_len + HEADER_LEN:
            self._drop("tx", "tx_short_frame" if n >= hdr_len else "tx_no_header")
            return None
        if not enabled:
            # A disabled ring is drained without side effects.
            self._drop("tx", "tx_ring_disabled")
            return None
        size = n - hdr_len
        too_big = size > self.max_frame
        if too_big and (not self.tx_gso or size > _MAX_GSO_FRAME):
            self._drop("tx", "tx_frame_too_big")
            return None
        data = chain.read(mem)
        if data[1] or data[0] & _NEEDS_CSUM:
            return self._tx_offload(data, hdr_len)
        if too_big:
            self._drop("tx", "tx_frame_too_big")     # only a GSO frame may be longer
            return None
        return data[hdr_len:]

    def _tx_offload(self, data: bytes, hdr_len: int) -> tuple[bytes, FrameMeta] | None:
        """A guest frame with NEEDS_CSUM or GSO: (frame, checked metadata), or a counted drop."""
        hdr = NetHdr.unpack(data, hdr_len)
        frame = data[hdr_len:]
        gso = hdr.gso_type
        if (hdr.needs_csum and not self.tx_csum) or (gso and (
                gso & ~GSO_ECN not in self.tx_gso or (gso & GSO_ECN and GSO_ECN not in self.tx_gso))):
            self._drop("tx", "tx_offload_not_negotiated")
            return None
        if not gso and len(frame) > self.max_frame:
            self._drop("tx", "tx_frame_too_big")
            return None
        try:
            meta = offload.check(frame, FrameMeta.from_hdr(hdr, data_valid=False))
        except OffloadError as e:
            log.debug("%s: dropped a guest frame: %s", self.name, e)
            self._drop("tx", "tx_" + e.reason)
            return None
        return frame, meta

    def _emit(self, frames: list) -> None:
        counters = self.counters
        for frame in frames:
            if type(frame) is tuple:
                self._emit_offload(*frame)
                continue
            counters.tx_frames += 1
            counters.tx_bytes += len(frame)
            self.on_frame(frame)

    def _emit_offload(self, frame: bytes, meta: FrameMeta) -> None:
        counters = self.counters
        counters.tx_frames += 1
        counters.tx_bytes += len(frame)
        if meta.needs_csum:
            counters.tx_csum_partial += 1
        if meta.gso_type:
            counters.tx_gso += 1
        if self.on_offload_frame is not None:
            self.on_offload_frame(frame, meta)
            return
        for done in offload.finish(frame, meta):     # checked on the way in: cannot fail
            self.on_frame(done)

    # -- RX: frames to the guest ------------------------------------------------
    def can_take(self, meta: FrameMeta) -> bool:
        """Would the guest get a frame with `meta` as it is (negotiated offloads)?"""
        return offload.acceptable(meta, self.guest_csum, self.rx_gso)

    def receive(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        """Put one frame into the guest's receive ring. False = dropped (counted).

        `meta`: a partial checksum, GSO or DATA_VALID to pass on in the
        header; what the guest did not negotiate is done in software first."""
        ring = self.rx
        if ring is None or ring.queue is None or self.mem is None:
            return self._drop("rx", "rx_ring_not_started")
        if ring.broken:
            return self._drop("rx", "ring_broken")
        if not ring.enabled:
            return self._drop("rx", "rx_ring_disabled")
        if meta is not None:
            if not self.can_take(meta):
                return self._receive_finished(frame, meta)
            if not self.guest_csum:
                meta = None             # DATA_VALID alone, to a guest that cannot use it
        if len(frame) > (self.max_frame if meta is None or not meta.gso_type else _MAX_GSO_FRAME):
            return self._drop("rx", "frame_too_big")
        if self._rx_backlog:
            self._flush_backlog()       # buffers may have come without a kick (no loop)
            if self._rx_backlog:
                return self._backlog_rx(ring, frame, meta)     # keep the order
        try:
            failure = self._receive(ring, frame, meta)
        except QueueBroken as e:
            self._break(ring, e.reason)
            return self._drop("rx", "ring_broken")
        if failure is None:
            self._delivered(frame, meta)
            self._schedule_rx_notify()
            return True
        if failure == "no_rx_buffers":
            return self._backlog_rx(ring, frame, meta)
        return self._drop("rx", failure)

    def _receive_finished(self, frame: bytes, meta: FrameMeta) -> bool:
        # The switch normally does this; a direct caller may not have.
        try:
            frames = offload.finish(frame, meta)
        except OffloadError as e:
            log.debug("%s: frame for the guest dropped: %s", self.name, e)
            return self._drop("rx", "rx_" + e.reason)
        self.counters.rx_finished += 1
        done = DATA_VALID if self.guest_csum else None
        ok = True
        for f in frames:
            ok = self.receive(f, done) and ok
        return ok

    def _delivered(self, frame: bytes, meta: FrameMeta | None) -> None:
        counters = self.counters
        counters.rx_frames += 1
        counters.rx_bytes += len(frame)
        if meta is not None:
            if meta.needs_csum:
                counters.rx_csum_partial += 1
            elif meta.data_valid:
                counters.rx_data_valid += 1
            if meta.gso_type:
                counters.rx_gso += 1

    def _backlog_rx(self, ring: Vring, frame: bytes, meta: FrameMeta | None) -> bool:
        """Hold a frame until the guest posts receive buffers (bounded)."""
        if len(self._rx_backlog) >= RX_BACKLOG_FRAMES:
            return self._drop("rx", "no_rx_buffers")
        first = not self._rx_backlog
        self._rx_backlog.append((frame, meta))
        self.counters.rx_backlogged += 1
        if first:
            # Ask for a kick when buffers arrive; if some arrived meanwhile,
            # go now (the usual enable-then-recheck race).
            try:
                if ring.queue.enable_notifications(self.mem):
                    self._soon(RX_RING, self._flush_backlog)
            except QueueBroken as e:
                self._break(ring, e.reason)
        return True

    def _flush_backlog(self) -> None:
        """Move waiting frames into buffers the guest has posted since."""
        ring = self.rx
        if ring is None or ring.queue is None or ring.broken or self.mem is None:
            return
        delivered = 0
        try:
            while self._rx_backlog:
                frame, meta = self._rx_backlog[0]
                failure = self._receive(ring, frame, meta)
                if failure == "no_rx_buffers":
                    if ring.queue.enable_notifications(self.mem):
                        continue        # buffers arrived while we looked
                    break               # wait for the next kick
                self._rx_backlog.popleft()
                if failure is None:
                    self._delivered(frame, meta)
                    delivered += 1
                else:
                    self._drop("rx", failure)
        except QueueBroken as e:
            self._break(ring, e.reason)
            return
        if delivered:
            self._schedule_rx_notify()

    def _drop_backlog(self, reason: str) -> None:
        while self._rx_backlog:
            self._rx_backlog.popleft()
            self._drop("rx", reason)

    def _next_rx_chain(self, ring: Vring) -> DescriptorChain | None:
        if self._rx_held:
            return self._rx_held.popleft()
        return ring.queue.pop(self.mem)

    def _receive(self, ring: Vring, frame: bytes, meta: FrameMeta | None) -> str | None:
        """Write one frame into receive buffers; None, or why it could not."""
        mem, hdr_len = self.mem, self.hdr_len
        need = hdr_len + len(frame)
        chains: list[DescriptorChain] = []
        room = 0
        while room < need:
            chain = self._next_rx_chain(ring)
            if chain is None:
                break
            chains.append(chain)
            room += chain.writable_len
            if not self.mrg_rxbuf:
                break       # without MRG_RXBUF a frame must fit in one chain
        if room < need:
            # Keep the chains for the next frame, in order (they are the last popped).
            self._rx_held.extendleft(reversed(chains))
            if not chains or self.mrg_rxbuf:
                return "no_rx_buffers"
            return "frame_too_big"
        if meta is None:
            hdr = NetHdr(num_buffers=len(chains)).pack(hdr_len) if hdr_len == 12 else NetHdr().pack(10)
        else:
            hdr = meta.to_hdr(len(chains) if hdr_len == 12 else 0).pack(hdr_len)
        data = memoryview(hdr + frame)
        pos = 0
        used = []
        for chain in chains:
            n = chain.write(mem, data[pos:])
            pos += n
            used.append((chain.head, n))
        ring.queue.push_many(mem, used)
        return None

    def _schedule_rx_notify(self) -> None:
        # One notification per burst of frames: the switch hands us frames
        # one at a time, so signal once at the end of this turn of the loop.
        if self.loop is None:
            self._flush_rx_notify(force=True)
            return
        if not self._rx_notify_pending:
            self._rx_notify_pending = True
            self.loop.call_later(0, self._flush_rx_notify)

    def _flush_rx_notify(self, force: bool = False) -> None:
        if not self._rx_notify_pending and not force:
            return
        self._rx_notify_pending = False
        ring = self.rx
        if ring is None or ring.queue is None or ring.broken or self.mem is None:
            return
        self._guarded(ring, lambda q: self._notify(ring))
