"""The virtio-net device: queue pair 0 of a vhost-user back-end, as a NIC.

Ring 0 is the guest's receive queue (we fill its buffers with frames for the
guest), ring 1 its transmit queue (we take the frames the guest sends). The
control queue (ring 2, CTRL_VQ) is not offered: QEMU and DPDK's virtio-user
keep it to themselves anyway.

Directions are named from the guest's side, as virtio does: *RX* = towards
the guest (`receive(frame, meta)`), *TX* = from the guest
(`on_frame(frame, meta)`).

This module is the glue around the data path (`nicdev.net.device_datapath`,
which moves frames between rings and callers and knows no file descriptor,
timer or clock): it owns the kick and call eventfds, the event loop
registration, the timers, and the notification policy, that is *when* to
signal the guest and when to ask it for kicks:

- TX: kicks are off while a drain runs and back on at its end, with one
  re-check for buffers added meanwhile; the guest is signalled once per
  burst of `tx_burst` chains (256 by default: a whole ring of DPDK's or
  QEMU's default size in one C call, so the Python around a burst is paid
  once per ring, not once per 64 frames); at most `tx_budget` chains per turn of the
  loop, then the drain continues on the next turn, so one guest cannot
  starve the rest.
- RX: the guest need not kick for receive buffers until a frame waits for
  one (the data path then asks for a kick); the guest is signalled once per
  turn of the loop however many frames went in, since the switch hands us
  frames one at a time.

- Polling (`poll`, a `nicdev.net.polling.PollMode`): after traffic the
  rings may be polled from the event loop with the guest's kicks off,
  until they stay idle (`nicdev.net.device_polling.DevicePoller`, which
  wraps `process_tx` and `_flush_backlog`).

- Device modes (`set_fault`, a `nicdev.net.faults.Fault`): the device
  misbehaves on purpose for driver tests (stalls TX, swallows calls, holds,
  reorders or lies about used entries, starves RX); one test per burst
  here, the rules in nicdev.net.faults, docs/device-modes.md.

Whether a signal or a kick is due under EVENT_IDX or NO_INTERRUPT is
decided by the queue itself (`DeviceQueue.needs_notification`,
`enable_notifications`: pure ring arithmetic in nicdev.virtio), so no
policy object is needed here: the glue only chooses the moments to ask.

Every frame we cannot carry is a counted drop with a reason
(`counters.drops`), never an exception. A ring the guest breaks (a loop in a
chain, an address outside its memory...) is marked broken with the reason:
the device stops using that ring and counts what it drops, the rest of the
process carries on, and the front-end's next set-up of the ring (or a
reconnect) clears it.

Offloads (`offloads=True`, the default): the device offers CSUM, HOST_TSO4/6
and HOST_ECN (the guest may send partial checksums and GSO frames: they
reach `on_frame(frame, meta)` as they are, with a
`nicdev.virtio.offload.FrameMeta` checked by `offload.check`; the device
never finishes them, whoever needs them finished does), and GUEST_CSUM,
GUEST_TSO4/6 and GUEST_ECN (`receive(frame, meta)` hands such frames to a
guest that negotiated them, with NEEDS_CSUM, GSO or DATA_VALID in the
header; a direct caller's metadata the guest did not negotiate is finished
here first, as at any egress: `nicdev.net.egress`). Hostile headers are
counted drops (`tx_bad_csum_offsets`, `tx_gso_size_zero`,
`tx_gso_headers`...).
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from nicdev.vhost_user.backend import BackendDevice, RequestFailed, VhostUserBackend, Vring
from nicdev.vhost_user.protocol import ProtocolFeature
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, describe, has, mask,
)
from nicdev.virtio.device_burst import PooledFrames
from nicdev.virtio.memory import GuestMemory
from nicdev.virtio.offload import FrameMeta
from nicdev.virtio.ring import QueueBroken
from nicdev.virtio.trace import Tracer

from .device_datapath import RX_NOTIFY, RX_RECHECK, RX_TAKEN, DeviceCounters, NetDatapath
from .device_polling import DevicePoller
from .egress import EgressFrame
from .ethernet import BROADCAST
from .faults import Fault
from .polling import DEFAULT_POLL, PollMode

__all__ = ["VirtioNetDevice", "DEVICE_FEATURES", "BASE_FEATURES", "OFFLOAD_FEATURES",
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
# not negotiate is done in software (nicdev.virtio.offload), so offering them
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

_MIN_MTU = 68
_MAX_MTU = 65535
_POLL_INTERVAL = 0.001   # ring polling when the front-end gave no kick fd
# Timer keys for releasing used entries a device mode holds (the ring
# indices key the rings' own timers).
_RELEASE_TIMER = {RX_RING: "release-rx", TX_RING: "release-tx"}
_DIRECTION = {RX_RING: "rx", TX_RING: "tx"}


def make_rarp(mac: bytes) -> bytes:
    """A broadcast RARP "request reverse" announcing `mac` (what QEMU sends
    after a migration so switches learn where the guest is now)."""
    arp = (b"\x00\x01" b"\x08\x00" b"\x06\x04" b"\x00\x03"  # Ethernet/IPv4, op 3
           + mac + bytes(4) + mac + bytes(4))
    frame = BROADCAST + mac + b"\x80\x35" + arp
    return frame + bytes(max(0, 60 - len(frame)))


class VirtioNetDevice(BackendDevice):
    """A virtio-net device behind a `VhostUserBackend`.

    `on_frame(frame, meta)` gets each frame the guest transmits, `meta` a
    `FrameMeta` for a partial checksum or GSO, None for a finished frame.
    `on_drop(direction, reason)` (optional) hears about each drop, direction
    "rx" (towards the guest) or "tx" (from the guest). `offloads=False`
    offers no checksum or GSO features. `datapath` ("c" or "python") picks
    the data path's implementation, by default MNET_DATAPATH's.
    `on_burst(items)` (optional) gets each TX burst's `(frame, meta)` pairs
    at once instead of `on_frame` per frame, and `on_pooled(frames)`
    (optional) a burst of finished frames still in the C data path's pool
    (`PooledFrames`, valid only during the call). Call
    `attach_loop(loop)` before the rings start so kick fds can be watched;
    without a loop (unit tests) call `process_tx()` yourself. `tracer` (a
    `nicdev.virtio.trace.Tracer`, by default one of its own: `device.tracer`)
    gets the ring records while it is on (docs/tracing.md).

    What was negotiated (header size, offloads each way, MTU) is the data
    path's: `device.datapath`.
    """

    def __init__(
        self,
        on_frame: Callable[[bytes, FrameMeta | None], None],
        *,
        name: str = "virtio-net",
        on_drop: Callable[[str, str], None] | None = None,
        offloads: bool = True,
        tx_burst: int = 256,
        tx_budget: int = 1024,
        poll: PollMode = DEFAULT_POLL,
        datapath: str | None = None,
        on_burst: Callable[[list], None] | None = None,
        on_pooled: Callable[[PooledFrames], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.name = name
        self.on_frame = on_frame
        self.on_burst = on_burst
        self.on_pooled = on_pooled
        self.offered_features = DEVICE_FEATURES if offloads else BASE_FEATURES
        self.tx_burst = tx_burst
        self.tx_budget = tx_budget      # chains per turn of the loop, so one guest cannot starve the rest
        self.loop = None
        self.counters = DeviceCounters()
        self.datapath = NetDatapath(self.counters, on_drop=on_drop, name=name, datapath=datapath, tracer=tracer)
        self.tracer = self.datapath.tracer
        self.ring_trace = self.datapath.ring_trace
        self.poller = DevicePoller(self, poll)     # polls the rings after traffic, by the `poll` mode
        self.fault: Fault | None = None             # the device mode (nicdev.net.faults), kept over resets
        self._reset_state()

    def _reset_state(self) -> None:
        self.datapath.reset()
        self.status = 0
        self.mem: GuestMemory | None = None
        self.rx: Vring | None = None
        self.tx: Vring | None = None
        self._rx_notify_pending = False
        self._timers: dict[int, object] = {}
        self._watched: dict[int, int] = {}   # ring index -> kick fd registered with the loop

    def attach_loop(self, loop) -> None:
        self.loop = loop

    def make_backend(self, name: str | None = None) -> VhostUserBackend:
        """A back-end offering this device's features, with this device attached."""
        return VhostUserBackend(self.offered_features, PROTOCOL_FEATURES, 2, device=self, queue_num=1,
                                name=name or self.name, tracer=self.tracer)

    # -- state ---------------------------------------------------------------
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
        features = self.datapath.features
        feats = "+".join(n for n in describe(features) if n != "VHOST_USER_PROTOCOL_FEATURES") or "none"
        return f"features {feats}, rx ring {ring_state(self.rx)}, tx ring {ring_state(self.tx)}"

    # -- BackendDevice callbacks ---------------------------------------------
    def features_set(self, features: int) -> None:
        self.datapath.negotiate(features)
        log.info("%s: features %s (header %d bytes)", self.name, "+".join(describe(features)),
                 self.datapath.hdr_len)

    def mem_table_changed(self, mem: GuestMemory | None) -> None:
        self.mem = mem

    def ring_started(self, ring: Vring) -> None:
        self.ring_trace.ring_restarted(ring.index)
        if ring.index == RX_RING:
            self.rx = ring
            self.datapath.rx_ring_started()
            # The guest need not kick us for receive buffers until a frame
            # waits for one (then the data path turns notifications on).
            self._guarded(ring, lambda q: q.disable_notifications(self.mem))
            self._watch(ring, self._on_rx_kick)
        elif ring.index == TX_RING:
            self.tx = ring
            self._watch(ring, self._on_tx_kick)
            # Buffers may be waiting from before the (re)start.
            self._soon(TX_RING, self.process_tx)
        self.poller.ring_started()

    def ring_stopping(self, ring: Vring) -> int:
        self._unwatch(ring)
        for key in (ring.index, _RELEASE_TIMER.get(ring.index)):
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
        # Used entries a device mode held go out now: the driver gets its
        # buffers back before the ring's base is read.
        self._release_held(ring, everything=True)
        if ring.index == RX_RING:
            # Popped but unused chains are the last ones popped: the back-end
            # rewinds the avail index over them so the guest gets them back.
            held = self.datapath.rx_abandon("rx_ring_stopped")
            if self._rx_notify_pending:
                self._flush_rx_notify()
            self.poller.ring_stopping()
            return held
        self.poller.ring_stopping()
        return 0

    def ring_enable_changed(self, ring: Vring) -> None:
        log.info("%s: ring %d %s", self.name, ring.index, "enabled" if ring.enabled else "disabled")

    def send_rarp(self, mac: bytes) -> None:
        # Sent as if the guest had: the switch learns the guest's port.
        log.info("%s: RARP for %s", self.name, mac.hex(":"))
        self.on_frame(make_rarp(mac), None)

    def set_mtu(self, mtu: int) -> None:
        if not has(self.datapath.features, VIRTIO_NET_F_MTU):
            raise RequestFailed("NET_SET_MTU without VIRTIO_NET_F_MTU negotiated")
        if not _MIN_MTU <= mtu <= _MAX_MTU:
            raise RequestFailed(f"MTU {mtu} out of range {_MIN_MTU}..{_MAX_MTU}")
        self.datapath.mtu = mtu
        log.info("%s: MTU %d", self.name, mtu)

    def status_set(self, status: int) -> None:
        self.status = status

    def reset(self) -> None:
        self.poller.stop()
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
        if self.tracer.on:
            self.tracer.emit("kick", TX_RING, "tx")
        if self._read_kick(ring):
            self.process_tx()
            self.poller.traffic()

    def _on_rx_kick(self) -> None:
        ring = self.rx
        if ring is None or ring.kick_fd is None:
            return
        self.counters.rx_kicks += 1
        if self.tracer.on:
            self.tracer.emit("kick", RX_RING, "rx")
        if self._read_kick(ring):
            self._flush_backlog()
            self.poller.traffic()

    def _break(self, ring: Vring, reason: str) -> None:
        log.warning("%s: %s ring broken: %s", self.name, "rx" if ring.index == RX_RING else "tx", reason)
        ring.mark_broken(reason)
        if self.tracer.on:
            index = ring.index
            self.tracer.emit("ring", index, "rx" if index == RX_RING else "tx", state="broken", reason=reason)
        ring.signal_error()
        self._unwatch(ring)
        if ring.index == RX_RING:
            self.datapath.rx_abandon("ring_broken")

    def _guarded(self, ring: Vring, fn) -> bool:
        try:
            fn(ring.queue)
        except QueueBroken as e:
            self._break(ring, e.reason)
            return False
        return True

    def _notify(self, ring: Vring) -> None:
        needed = self.datapath.needs_notification(ring.queue, self.mem)
        if needed and self.fault is not None and self.fault.drop_calls:
            self.counters.fault("calls_dropped")
            if self.tracer.on:
                self.tracer.emit("call_suppressed", ring.index, _DIRECTION[ring.index], reason="fault")
            return
        signalled = needed and ring.signal_call()
        if signalled:
            self.counters.calls += 1
        if self.tracer.on:
            self.ring_trace.call(ring.index, ring.queue, needed, signalled)

    # -- device modes (nicdev.net.faults) -------------------------------------------
    def set_fault(self, fault: Fault | None) -> None:
        """Misbehave on purpose from now on (None: behave). Whatever the old
        mode kept from the driver is given back when it no longer applies:
        held used entries are published, a swallowed call is sent on each
        ring, stalled TX chains and starved RX frames are taken again."""
        old, self.fault = self.fault, fault
        self.datapath.set_fault(fault)
        if old is None:
            return
        new = fault or Fault()
        if old.holds_used and not new.holds_used:
            for ring in (self.rx, self.tx):
                self._release_held(ring, everything=True)
        if old.drop_calls and not new.drop_calls:
            # Calls were swallowed: the driver may wait for one that will never come.
            for ring in (self.rx, self.tx):
                if ring is not None and ring.started and not ring.broken and ring.signal_call():
                    self.counters.calls += 1
        if old.stall_tx and not new.stall_tx:
            self._soon(TX_RING, self.process_tx)
        if old.starve_rx and not new.starve_rx:
            self._soon(RX_RING, self._flush_backlog)

    def _release_held(self, ring: Vring | None, everything: bool = False, notify: bool = True) -> None:
        """Publish the used entries a device mode held on `ring` that are due
        (all of them with `everything`), signal (unless the caller does), and
        come back for the rest."""
        datapath = self.datapath
        if ring is None:
            return
        direction = _DIRECTION[ring.index]
        if not datapath.held.held(direction):
            return
        if ring.queue is None or ring.broken or self.mem is None:
            datapath.held.forget(direction)
            return
        try:
            if datapath.release_used(direction, ring.queue, self.mem, everything) and notify:
                self._notify(ring)
        except QueueBroken as e:
            self._break(ring, e.reason)
            datapath.held.forget(direction)
            return
        wait = datapath.held.next_release(direction)
        if wait is not None:
            self._soon(_RELEASE_TIMER[ring.index], lambda: self._release_held(self._ring(ring.index)), wait)

    def _ring(self, index: int) -> Vring | None:
        return self.rx if index == RX_RING else self.tx

    # -- TX: frames from the guest ----------------------------------------------
    def process_tx(self) -> int:
        """Drain the guest's transmit ring; returns the chains taken.

        Takes up to `tx_budget` chains, returning them in bursts (one used-idx
        store and at most one notification per burst) and handing the frames
        on. With notifications re-enabled, the ring is checked once more,
        closing the race with a driver that added buffers meanwhile."""
        ring = self.tx
        if ring is None or ring.queue is None or ring.broken or self.mem is None:
            return 0
        if self.fault is not None:
            if self.fault.stall_tx:
                return 0        # the chains stay in the ring: the driver's TX ring fills
            taken = self._process_tx(ring)
            self._release_held(ring)
            return taken
        return self._process_tx(ring)

    def _process_tx(self, ring: Vring) -> int:
        queue, mem, datapath = ring.queue, self.mem, self.datapath
        burst, budget, enabled = self.tx_burst, self.tx_budget, ring.enabled
        taken = 0
        frames: list = []
        try:
            while True:
                queue.disable_notifications(mem)
                while budget > 0:
                    limit = burst if burst < budget else budget
                    if self.on_pooled is not None:
                        n, pooled = datapath.tx_burst_pooled(queue, mem, limit, enabled, frames)
                    else:
                        n, pooled = datapath.tx_burst(queue, mem, limit, enabled, frames), None
                    if not n:
                        break
                    budget -= n
                    taken += n
                    self._notify(ring)
                    if pooled is not None:
                        self.on_pooled(pooled)
                    else:
                        self._emit(frames)
                    frames = []
                    if n < limit:
                        break       # the ring ran dry: enabling kicks below looks again
                if budget <= 0:
                    # More may be waiting: come back on the next turn of the loop.
                    self._soon(TX_RING, self.process_tx)
                    break
                if self.poller.polling:
                    break           # the poll looks again; turning kicks on would invite them
                if not datapath.enable_notifications(queue, mem):
                    break
        except QueueBroken as e:
            self._break(ring, e.reason)
            self._emit(frames)
        return taken

    def _emit(self, frames: list) -> None:
        if self.on_burst is not None:
            if frames:
                self.on_burst(frames)
            return
        on_frame = self.on_frame
        for frame, meta in frames:
            on_frame(frame, meta)

    # -- RX: frames to the guest ------------------------------------------------
    def receive(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        """Put one frame into the guest's receive ring. False = dropped (counted).

        `meta`: a partial checksum, GSO or DATA_VALID to pass on in the
        header; what the guest did not negotiate is done in software first."""
        ring = self.rx
        datapath = self.datapath
        reason = self._rx_refusal(ring)
        if reason is not None:
            return datapath.drop("rx", reason)
        if meta is not None and not datapath.can_take(meta):
            return self._receive_finished(frame, meta)
        try:
            outcome = datapath.rx_put(ring.queue, self.mem, frame, meta)
        except QueueBroken as e:
            self._break(ring, e.reason)
            return datapath.drop("rx", "ring_broken")
        if outcome & RX_NOTIFY:
            self._schedule_rx_notify()
        if outcome & RX_RECHECK:
            self._soon(RX_RING, self._flush_backlog)
        return bool(outcome & RX_TAKEN)

    def receive_pooled(self, frames: PooledFrames, first: int, count: int) -> tuple[int, int]:
        """Put frames first..first+count of another device's TX pool into the
        guest's receive ring, as `receive` would one by one, with no Python
        object per frame. Returns (frames taken, their bytes); the rest are
        counted drops."""
        ring = self.rx
        datapath = self.datapath
        if not datapath.c_bursts:
            taken = nbytes = 0
            for frame, _ in frames.items(first, count):
                if self.receive(frame, None):
                    taken, nbytes = taken + 1, nbytes + len(frame)
            return taken, nbytes
        reason = self._rx_refusal(ring)
        if reason is not None:
            for _ in range(count):
                datapath.drop("rx", reason)
            return 0, 0
        taken, nbytes, outcome, broken, at = datapath.rx_pooled(ring.queue, self.mem, frames, first, count)
        if broken is not None:
            self._break(ring, broken.reason)
            for _ in range(first + count - at):     # the frame it broke at and those after it
                datapath.drop("rx", "ring_broken")
        if outcome & RX_NOTIFY:
            self._schedule_rx_notify()
        if outcome & RX_RECHECK:
            self._soon(RX_RING, self._flush_backlog)
        return taken, nbytes

    def receive_burst(self, items: list) -> tuple[int, int]:
        """Put `(frame, meta)` pairs into the guest's receive ring in order, as
        `receive` would one by one: on the C data path runs of frames the
        guest can take as they are go in one C call each, offload headers
        included. Returns (frames taken, their bytes); the rest are counted
        drops."""
        if not self.datapath.c_bursts:
            return self._receive_each(items)
        ring = self.rx
        datapath = self.datapath
        reason = self._rx_refusal(ring)
        if reason is not None:
            for _ in items:
                datapath.drop("rx", reason)
            return 0, 0
        can_take = datapath.can_take
        taken = nbytes = 0
        i, end = 0, len(items)
        while i < end:
            j = i
            while j < end and (items[j][1] is None or can_take(items[j][1])):
                j += 1
            if j > i:
                run = items if i == 0 and j == end else items[i:j]
                done, written, outcome, broken, at = datapath.rx_frames(ring.queue, self.mem, run)
                taken, nbytes = taken + done, nbytes + written
                if outcome & RX_NOTIFY:
                    self._schedule_rx_notify()
                if outcome & RX_RECHECK:
                    self._soon(RX_RING, self._flush_backlog)
                if broken is not None:
                    self._break(ring, broken.reason)
                    datapath.drop("rx", "ring_broken")          # the frame it broke at, as receive() counts it
                    more, more_bytes = self._receive_each(items[i + at + 1:])     # dropped: the ring is broken
                    return taken + more, nbytes + more_bytes
            if j < end:
                more, more_bytes = self._receive_each(items[j:j + 1])      # to be finished first
                taken, nbytes = taken + more, nbytes + more_bytes
            i = j + 1
        return taken, nbytes

    def _receive_each(self, items) -> tuple[int, int]:
        taken = nbytes = 0
        for frame, meta in items:
            if self.receive(frame, meta):
                taken, nbytes = taken + 1, nbytes + len(frame)
        return taken, nbytes

    def _rx_refusal(self, ring: Vring | None) -> str | None:
        """Why no frame can go to the guest now (receive's checks), or None."""
        if ring is None or ring.queue is None or self.mem is None:
            return "rx_ring_not_started"
        if ring.broken:
            return "ring_broken"
        if not ring.enabled:
            return "rx_ring_disabled"
        if self.fault is not None and self.fault.starve_rx:
            return "fault_starve_rx"
        return None

    def _receive_finished(self, frame: bytes, meta: FrameMeta) -> bool:
        # The switch never passes metadata the guest cannot take; a direct
        # caller may: we are the egress that needs the frame finished.
        datapath = self.datapath
        egress = EgressFrame(frame, meta)
        frames = egress.for_egress(datapath.guest_csum, datapath.rx_gso)
        if egress.error is not None:
            log.debug("%s: frame for the guest dropped: %s", self.name, egress.error)
            return datapath.drop("rx", "rx_" + egress.error.reason)
        self.counters.rx_finished += 1
        ok = True
        for f, done in frames:
            ok = self.receive(f, done) and ok
        return ok

    def _flush_backlog(self) -> None:
        """Move waiting frames into buffers the guest has posted since."""
        ring = self.rx
        if ring is None or ring.queue is None or ring.broken or self.mem is None:
            return
        if self.fault is not None and self.fault.starve_rx:
            return
        try:
            outcome = self.datapath.rx_flush(ring.queue, self.mem)
        except QueueBroken as e:
            self._break(ring, e.reason)
            return
        if outcome & RX_NOTIFY:
            self._schedule_rx_notify()

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
        if self.fault is not None and self.fault.holds_used:
            self._release_held(ring, notify=False)
        self._guarded(ring, lambda q: self._notify(ring))
        self.poller.traffic()       # frames went to the guest this turn: its answer may follow
