"""The virtio-net device's data path: the guest's rings in, frames out, and back.

TX (from the guest): `tx_burst` pops descriptor chains from the transmit
queue, returns them used, and yields each frame with its checked
`FrameMeta` (partial checksum, GSO) or None for a finished frame. RX (to the
guest): `rx_put` writes a frame and its metadata into the receive buffers,
over several of them with MRG_RXBUF, and keeps frames that find no buffer in
a bounded backlog, in order, until `rx_flush` finds buffers for them.
Everything it cannot carry is a counted drop with a reason.

Two data paths, one behaviour: with the C kernels (`nicdev.virtio.kernels`:
MNET_DATAPATH=c, the default) a TX burst is one C call that walks the
chains, gathers the frames into a pool and returns the chains used, and a
frame to the guest is one C call (`nicdev.virtio.device_burst`); with
MNET_DATAPATH=python the `DeviceQueue` calls below do it, the readable
reference. Frames, used entries, errors, counters and drop reasons are the
same on both (tests/unit/test_device_kernels.py holds them to it). Frames
that need a held receive chain, and the header checks of offloaded TX
frames, always take the Python rules.

A device mode (`set_fault`, nicdev.net.faults) that holds or rewrites
single used entries (delay-used, reorder-used, bad-rx-len) runs the Python
rules while it is set (`c_bursts` False): the C kernels publish their used
entries themselves. Held entries wait in `held` (a `HeldUsed`, whose clock
stamps them) until the caller's timer calls `release_used`.

No file descriptors, timers or clocks: the caller (`nicdev.net.device`)
hands in the `DeviceQueue` and the `GuestMemory`, decides when to run, and
turns what this reports into kicks, calls and timers. So the data path is
tested on real rings in guest memory, without threads or an event loop.
`QueueBroken` (a guest breaking its ring) propagates to the caller, which
marks the ring broken and calls `rx_abandon`.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Callable

from nicdev.virtio import device_burst, kernels, offload
from nicdev.virtio.device_burst import PooledFrames
from nicdev.virtio.device_queue import STATE_USED_IDX, DescriptorChain, DeviceQueue
from nicdev.virtio.features import (
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, has,
)
from nicdev.virtio.memory import GuestMemory
from nicdev.virtio.net_hdr import NetHdr, header_size
from nicdev.virtio.offload import GSO_ECN, GSO_TCPV4, GSO_TCPV6, FrameMeta, OffloadError
from nicdev.virtio.trace import DEVICE, Tracer

from .ethernet import HEADER_LEN, MAX_FRAME_LEN
from .faults import Fault, HeldUsed
from .ring_trace import RX_QUEUE, TX_QUEUE, DeviceRingTrace

__all__ = ["NetDatapath", "DeviceCounters", "RX_BACKLOG_FRAMES", "RX_TAKEN", "RX_NOTIFY", "RX_RECHECK"]

log = logging.getLogger(__name__)

# Frames that found no receive buffer wait here (in order) until the guest
# posts more, as a real NIC's FIFO would; beyond this they are dropped. TCP
# bursts from a fast peer otherwise lose segments every time the guest's
# driver is a little late refilling its ring.
RX_BACKLOG_FRAMES = 256

# What `rx_put` and `rx_flush` report, as bits.
RX_TAKEN = 1        # the frame is in the guest's buffers or waits in the backlog (not dropped)
RX_NOTIFY = 2       # receive buffers were used: the guest is owed a used-buffer notification
RX_RECHECK = 4      # buffers came while we asked the guest for a kick: flush the backlog again soon

_VLAN_TAG = 4
# A GSO frame may be as long as a 64 KiB IP packet, whatever the MTU.
_MAX_GSO_FRAME = MAX_FRAME_LEN + _VLAN_TAG
_NO_GSO: frozenset = frozenset()
_NEEDS_CSUM = 1
_NO_RX_BUFFERS = "no_rx_buffers"
# The headers of finished frames, made once: every frame to the guest needs
# one, and most fit one buffer.
_PLAIN_HDR10 = NetHdr().pack(10)
_PLAIN_HDR12_ONE_BUFFER = NetHdr(num_buffers=1).pack(12)


@dataclass
class DeviceCounters:
    """Device-level counters; `drops` maps a reason to a count. The data
    path keeps all but the kick and call counts, which its glue keeps."""

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
    faults: dict = field(default_factory=dict)   # what a device mode did (nicdev.net.faults) -> count

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def fault(self, what: str, n: int = 1) -> None:
        self.faults[what] = self.faults.get(what, 0) + n

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["drops"] = dict(self.drops)
        d["faults"] = dict(self.faults)
        return d


class NetDatapath:
    """Frames to and from one queue pair's rings, by the negotiated features.

    `on_drop(direction, reason)` (optional) hears about each drop, direction
    "rx" (towards the guest) or "tx" (from the guest). `tracer` (by default
    one of its own) gets the ring records (`nicdev.net.ring_trace`) while
    it is on."""

    max_gso_frame = _MAX_GSO_FRAME

    def __init__(self, counters: DeviceCounters | None = None, *,
                 on_drop: Callable[[str, str], None] | None = None, name: str = "virtio-net",
                 datapath: str | None = None, tracer: Tracer | None = None) -> None:
        self.name = name
        self.counters = counters if counters is not None else DeviceCounters()
        self.on_drop = on_drop
        self.tracer = tracer if tracer is not None else Tracer(name, DEVICE)
        self.ring_trace = DeviceRingTrace(self.tracer)
        # "c" or "python"; by default the process's choice (MNET_DATAPATH).
        self.datapath = kernels.selected() if datapath is None else datapath
        if self.datapath not in kernels.DATAPATHS:
            raise ValueError(f"data path {datapath!r}: expected one of {', '.join(kernels.DATAPATHS)}")
        c = self.datapath == "c"
        self._tx_kernel = device_burst.TxKernel() if c else None
        self._rx_kernel = device_burst.RxKernel() if c else None
        # Whether bursts run in C now: not while a device mode rewrites or
        # holds single used entries (the kernels publish them themselves).
        self.c_bursts = c
        self.fault: Fault | None = None
        self.held = HeldUsed()      # used entries delay-used / reorder-used hold back, per direction
        self.reset()

    def set_fault(self, fault: Fault | None) -> None:
        """Apply a device mode (None: none). What it held stays held: the
        caller releases it (`release_used`)."""
        self.fault = fault
        self.c_bursts = self._tx_kernel is not None and (fault is None or not fault.per_entry)

    def reset(self) -> None:
        """Forget the guest: nothing negotiated, nothing held or waiting."""
        self.features = 0
        self.hdr_len = 12
        self.mrg_rxbuf = False
        self.mtu: int | None = None
        self._set_offloads(0)
        self._rx_held: collections.deque[DescriptorChain] = collections.deque()
        self._rx_backlog: collections.deque[tuple[bytes, FrameMeta | None]] = collections.deque()
        self.held.forget()

    def negotiate(self, features: int) -> None:
        """The features the driver acked: header size, mergeable buffers, offloads."""
        self.features = features
        self.hdr_len = header_size(features)
        self.mrg_rxbuf = has(features, VIRTIO_NET_F_MRG_RXBUF)
        self._set_offloads(features)
        if not has(features, VIRTIO_NET_F_MTU):
            self.mtu = None

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

    @property
    def max_frame(self) -> int:
        """The longest frame either way: MTU + header + one VLAN tag, or 64 KiB."""
        if self.mtu is not None:
            return self.mtu + HEADER_LEN + _VLAN_TAG
        return MAX_FRAME_LEN

    def can_take(self, meta: FrameMeta) -> bool:
        """Would the guest get a frame with `meta` as it is (negotiated offloads)?"""
        return offload.acceptable(meta, self.guest_csum, self.rx_gso)

    def drop(self, direction: str, reason: str, length: int | None = None) -> bool:
        """Count a drop (and tell `on_drop`, and the trace with the frame's
        `length` if known); returns False, what a dropped frame's caller returns."""
        self.counters.drop(reason)
        if self.on_drop is not None:
            self.on_drop(direction, reason)
        if self.tracer.on:
            self.ring_trace.drop(direction, reason, length)
        return False

    # -- notifications (the queue's rules, on this data path) ---------------------
    def needs_notification(self, queue: DeviceQueue, mem: GuestMemory) -> bool:
        """DeviceQueue.needs_notification: should the guest be signalled now?"""
        if self._tx_kernel is not None:
            return device_burst.needs_notification(queue, mem)
        return queue.needs_notification(mem)

    def enable_notifications(self, queue: DeviceQueue, mem: GuestMemory) -> bool:
        """DeviceQueue.enable_notifications: ask for kicks; True if buffers wait."""
        if self._tx_kernel is not None:
            return device_burst.enable_notifications(queue, mem)
        return queue.enable_notifications(mem)

    # -- TX: frames from the guest ----------------------------------------------
    def tx_burst(self, queue: DeviceQueue, mem: GuestMemory, limit: int, enabled: bool, out: list) -> int:
        """Take up to `limit` chains from the transmit queue and return them used
        (one used-idx store); each frame goes to `out` as (frame, FrameMeta | None).
        Returns the chains taken. A disabled ring (`enabled` False) is drained
        without side effects: its chains go back, their frames are drops.

        On QueueBroken the frames read so far are in `out` already."""
        tracer = self.tracer
        if tracer.on or tracer.frames_on:
            return self.ring_trace.tx_burst(self, queue, mem, limit, enabled, out)
        if self.c_bursts:
            return self._tx_burst_c(queue, mem, limit, enabled, out)
        used = []
        hdr_len = self.hdr_len
        tx_frame = self._tx_frame
        while len(used) < limit:
            chain = queue.pop(mem)
            if chain is None:
                break
            used.append((chain.head, 0))
            item = tx_frame(chain, mem, hdr_len, enabled)
            if item is not None:
                out.append(item)
        if used:
            if self.fault is None:
                queue.push_many(mem, used)
            else:
                self.publish_used(queue, mem, "tx", used)
        return len(used)

    def tx_burst_pooled(self, queue: DeviceQueue, mem: GuestMemory, limit: int, enabled: bool,
                        out: list) -> tuple[int, PooledFrames | None]:
        """tx_burst for a caller that can forward frames still in the C pool:
        when every chain was a finished frame (the usual case) they stay
        there, returned as PooledFrames (valid until the next burst) with
        `out` untouched; otherwise, and on the Python data path, they go to
        `out` as tx_burst puts them and the second value is None."""
        tracer = self.tracer
        if tracer.on or tracer.frames_on:
            return self.ring_trace.tx_burst(self, queue, mem, limit, enabled, out, pooled=True)
        if not self.c_bursts:
            return self.tx_burst(queue, mem, limit, enabled, out), None
        return self._tx_burst_c(queue, mem, limit, enabled, out, pooled=True)

    def _tx_burst_c(self, queue: DeviceQueue, mem: GuestMemory, limit: int, enabled: bool, out: list,
                    pooled: bool = False):
        """tx_burst in one C call; then one bytes object per frame, or none
        (`pooled`: returns (chains, PooledFrames or None))."""
        kernel = self._tx_kernel
        hdr_len = self.hdr_len
        kernel.configure(hdr_len, self.max_frame, _MAX_GSO_FRAME, bool(self.tx_gso))
        n, error = kernel.run(queue, mem, limit, enabled)
        counters, work = self.counters, kernel.work
        if pooled and error is None and work.frames_ok == n and self.max_frame <= MAX_FRAME_LEN:
            counters.tx_frames += n
            counters.tx_bytes += work.bytes_ok
            return n, (PooledFrames(kernel, n, hdr_len, work.bytes_ok) if n else None)
        statuses, offsets, lengths = kernel.chains(n)
        ends = [o + n for o, n, st in zip(offsets, lengths, statuses) if st <= device_burst.TX_OFFLOAD]
        pool = kernel.data(ends[-1]) if ends else b""
        for status, offset, length in zip(statuses, offsets, lengths):
            if status == device_burst.TX_OK:
                out.append((pool[offset + hdr_len:offset + length], None))
            elif status == device_burst.TX_OFFLOAD:
                item = self._tx_offload(pool[offset:offset + length], hdr_len)
                if item is not None:
                    out.append(item)
            else:
                self.drop("tx", device_burst.TX_DROP_REASONS[status], max(0, length - hdr_len))
        counters.tx_frames += work.frames_ok
        counters.tx_bytes += work.bytes_ok
        if error is not None:
            raise error
        return (n, None) if pooled else n

    def _tx_frame(self, chain: DescriptorChain, mem: GuestMemory, hdr_len: int,
                  enabled: bool) -> tuple[bytes, FrameMeta | None] | None:
        n = chain.readable_len
        if n < hdr_len + HEADER_LEN:
            self.drop("tx", "tx_short_frame" if n >= hdr_len else "tx_no_header", max(0, n - hdr_len))
            return None
        size = n - hdr_len
        if not enabled:
            self.drop("tx", "tx_ring_disabled", size)
            return None
        too_big = size > self.max_frame
        if too_big and (not self.tx_gso or size > _MAX_GSO_FRAME):
            self.drop("tx", "tx_frame_too_big", size)
            return None
        data = chain.read(mem)
        if data[1] or data[0] & _NEEDS_CSUM:
            return self._tx_offload(data, hdr_len)
        if too_big:
            self.drop("tx", "tx_frame_too_big", size)     # only a GSO frame may be longer
            return None
        counters = self.counters
        counters.tx_frames += 1
        counters.tx_bytes += size
        return data[hdr_len:], None

    def _tx_offload(self, data: bytes, hdr_len: int) -> tuple[bytes, FrameMeta] | None:
        """A guest frame with NEEDS_CSUM or GSO: (frame, checked metadata), or a counted drop."""
        hdr = NetHdr.unpack(data, hdr_len)
        frame = data[hdr_len:]
        gso = hdr.gso_type
        if (hdr.needs_csum and not self.tx_csum) or (gso and (
                gso & ~GSO_ECN not in self.tx_gso or (gso & GSO_ECN and GSO_ECN not in self.tx_gso))):
            self.drop("tx", "tx_offload_not_negotiated", len(frame))
            return None
        if not gso and len(frame) > self.max_frame:
            self.drop("tx", "tx_frame_too_big", len(frame))
            return None
        try:
            meta = offload.check(frame, FrameMeta.from_hdr(hdr, data_valid=False))
        except OffloadError as e:
            log.debug("%s: dropped a guest frame: %s", self.name, e)
            self.drop("tx", "tx_" + e.reason, len(frame))
            return None
        counters = self.counters
        counters.tx_frames += 1
        counters.tx_bytes += len(frame)
        if meta.needs_csum:
            counters.tx_csum_partial += 1
        if meta.gso_type:
            counters.tx_gso += 1
        return frame, meta

    # -- RX: frames to the guest ------------------------------------------------
    def rx_put(self, queue: DeviceQueue, mem: GuestMemory, frame: bytes, meta: FrameMeta | None) -> int:
        """Write one frame into the guest's receive buffers, or queue it in the
        backlog behind frames already waiting. `meta` must be one the guest can
        take (`can_take`). Returns RX_* bits (no RX_TAKEN: a counted drop)."""
        if meta is not None and not self.guest_csum:
            meta = None                 # DATA_VALID alone, to a guest that cannot use it
        if len(frame) > (self.max_frame if meta is None or not meta.gso_type else _MAX_GSO_FRAME):
            self.drop("rx", "frame_too_big", len(frame))
            return 0
        flags = 0
        if self._rx_backlog:
            flags = self.rx_flush(queue, mem)       # buffers may have come without a kick
            if self._rx_backlog:
                return flags | self._backlog(queue, mem, frame, meta)     # keep the order
        failure = self._write(queue, mem, frame, meta)
        if failure is None:
            if meta is None:        # the common case, counted here: one call less per frame
                counters = self.counters
                counters.rx_frames += 1
                counters.rx_bytes += len(frame)
            else:
                self._delivered(frame, meta)
            return flags | RX_TAKEN | RX_NOTIFY
        if failure is _NO_RX_BUFFERS:
            return flags | self._backlog(queue, mem, frame, meta)
        self.drop("rx", failure, len(frame))
        return flags

    def rx_pooled(self, queue: DeviceQueue, mem: GuestMemory, frames: PooledFrames, first: int,
                  count: int) -> tuple[int, int, int, QueueBroken | None]:
        """Frames first..first+count of another device's TX pool (finished
        frames, C data path) into the receive buffers: runs of them in one C
        call each, and any frame the kernel stops at (too long, no room, a
        backlog to keep the order behind) by `rx_put`'s rules, so the result
        is rx_put's for each frame in turn. Returns (frames taken, their
        bytes, RX_* bits, None, first + count), or, when the ring broke,
        what was taken before it, the QueueBroken (the caller breaks the
        ring) and the index of the frame it broke at."""
        kernel = self._rx_kernel
        hdr = _PLAIN_HDR10 if self.hdr_len != 12 else _PLAIN_HDR12_ONE_BUFFER
        counters = self.counters
        end = first + count

        def run(i: int) -> tuple[int, int, QueueBroken | None]:
            done, written, broken = kernel.put_burst(queue, mem, hdr, frames, i, end - i, self.mrg_rxbuf,
                                                     self.max_frame)
            if done:
                counters.rx_frames += done
                counters.rx_bytes += written
            return done, written, broken

        return self._rx_runs(queue, mem, first, end, run, lambda i: (frames.frame(i), None))

    def rx_frames(self, queue: DeviceQueue, mem: GuestMemory,
                  items: list) -> tuple[int, int, int, QueueBroken | None]:
        """`items`, (frame, meta) pairs whose metadata the guest can take
        (`can_take`), into the receive buffers in order, C data path: runs of
        them in one C call each (offload headers carried through), and any
        frame the kernel stops at (too long, no room, a backlog to keep the
        order behind) by `rx_put`'s rules, so the result is rx_put's for
        each frame in turn. Returns (frames taken, their bytes, RX_* bits,
        None, len(items)), or, when the ring broke, what was taken before it,
        the QueueBroken and the index of the frame it broke at (the caller
        breaks the ring)."""
        kernel = self._rx_kernel
        plain = _PLAIN_HDR10 if self.hdr_len != 12 else _PLAIN_HDR12_ONE_BUFFER
        counters = self.counters

        def run(i: int) -> tuple[int, int, QueueBroken | None]:
            frames, metas, hdrs = self._rx_run(items, i, plain)
            if not frames:
                return 0, 0, None
            done, written, broken = kernel.put_frames(queue, mem, plain, frames, hdrs, self.mrg_rxbuf)
            if done:
                if hdrs is None:
                    counters.rx_frames += done
                    counters.rx_bytes += written
                else:
                    for frame, meta in zip(frames[:done], metas):
                        self._delivered(frame, meta)
            return done, written, broken

        return self._rx_runs(queue, mem, 0, len(items), run, items.__getitem__)

    def _rx_runs(self, queue: DeviceQueue, mem: GuestMemory, first: int, end: int,
                 run: Callable[[int], tuple[int, int, QueueBroken | None]],
                 item: Callable[[int], tuple]) -> tuple[int, int, int, QueueBroken | None, int]:
        """Frames first..end into the receive buffers: `run(i)` puts a run
        from frame i on in one C call (and counts it), returning (frames,
        bytes, QueueBroken or None); the frame it stops at, `item(i)` ->
        (frame, meta), goes by `rx_put`'s rules. Frame by frame throughout
        while traced, or while a backlog or held entries keep the order.
        Returns what rx_pooled and rx_frames return."""
        taken = nbytes = flags = 0
        i = first
        tracer = self.tracer
        traced = tracer.on or tracer.frames_on     # then frame by frame, each with its records
        while i < end:
            if not traced and not self._rx_backlog and not self._rx_held:
                done, written, broken = run(i)
                if done:
                    taken, nbytes, flags = taken + done, nbytes + written, flags | RX_NOTIFY
                if broken is not None:
                    return taken, nbytes, flags, broken, i + done
                i += done
                if i == end:
                    break
            frame, meta = item(i)
            try:
                outcome = self.rx_put(queue, mem, frame, meta)
            except QueueBroken as e:
                return taken, nbytes, flags, e, i
            if outcome & RX_TAKEN:
                taken, nbytes = taken + 1, nbytes + len(frame)
            flags |= outcome & ~RX_TAKEN
            i += 1
        return taken, nbytes, flags | (RX_TAKEN if taken else 0), None, end

    def _rx_run(self, items: list, first: int, plain: bytes) -> tuple[list, list, bytes | None]:
        """The frames from items[first] on that pass rx_put's length rule, with
        their metadata as rx_put writes it and, if any has some, every
        frame's header (else None: all take `plain`)."""
        max_frame, guest_csum, hdr_len = self.max_frame, self.guest_csum, self.hdr_len
        frames: list = []
        metas: list = []
        hdrs: list = []
        with_meta = False
        for k in range(first, len(items)):
            frame, meta = items[k]
            if meta is not None and not guest_csum:
                meta = None             # DATA_VALID alone, to a guest that cannot use it
            if meta is None:
                if len(frame) > max_frame:
                    break
                hdrs.append(plain)
            else:
                if len(frame) > (_MAX_GSO_FRAME if meta.gso_type else max_frame):
                    break
                hdrs.append(meta.to_hdr(0).pack(hdr_len))      # the kernel sets num_buffers
                with_meta = True
            frames.append(frame)
            metas.append(meta)
        return frames, metas, (b"".join(hdrs) if with_meta else None)

    def rx_flush(self, queue: DeviceQueue, mem: GuestMemory) -> int:
        """Move waiting frames into buffers the guest has posted since; when
        they run out, ask the guest for a kick. Returns RX_NOTIFY if any went."""
        backlog = self._rx_backlog
        delivered = 0
        while backlog:
            frame, meta = backlog[0]
            failure = self._write(queue, mem, frame, meta)
            if failure is _NO_RX_BUFFERS:
                if queue.enable_notifications(mem):
                    continue        # buffers arrived while we looked
                break               # wait for the guest's kick
            backlog.popleft()
            if failure is None:
                self._delivered(frame, meta)
                delivered += 1
            else:
                self.drop("rx", failure, len(frame))
        return RX_NOTIFY if delivered else 0

    @property
    def rx_waiting(self) -> int:
        """Frames in the backlog."""
        return len(self._rx_backlog)

    def rx_ring_started(self) -> None:
        """A (re)started receive ring: chains held from before are not ours any more."""
        self._rx_held.clear()

    def rx_abandon(self, reason: str) -> int:
        """The receive ring stops or broke: forget the chains we popped but did
        not use, and drop the waiting frames as `reason`. Returns how many
        chains were held (the back-end rewinds the avail index over them)."""
        held = len(self._rx_held)
        self._rx_held.clear()
        while self._rx_backlog:
            frame, _ = self._rx_backlog.popleft()
            self.drop("rx", reason, len(frame))
        return held

    def _backlog(self, queue: DeviceQueue, mem: GuestMemory, frame: bytes, meta: FrameMeta | None) -> int:
        """Hold a frame until the guest posts receive buffers (bounded)."""
        if len(self._rx_backlog) >= RX_BACKLOG_FRAMES:
            self.drop("rx", _NO_RX_BUFFERS, len(frame))
            return 0
        # The first frame to wait asks for a kick when buffers arrive; if some
        # arrived meanwhile, the caller comes back soon (the enable-then-recheck race).
        recheck = not self._rx_backlog and queue.enable_notifications(mem)
        self._rx_backlog.append((frame, meta))
        self.counters.rx_backlogged += 1
        return RX_TAKEN | RX_RECHECK if recheck else RX_TAKEN

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

    def _write(self, queue: DeviceQueue, mem: GuestMemory, frame: bytes, meta: FrameMeta | None,
               trace: DeviceRingTrace | None = None) -> str | None:
        """Write one frame into receive buffers; None, or why it could not.
        Traced (`trace`, which calls back with itself) while the tracer is on."""
        if trace is None:
            tracer = self.tracer
            if tracer.on or tracer.frames_on:
                return self.ring_trace.rx_write(self, queue, mem, frame, meta)
        hdr_len = self.hdr_len
        if self.c_bursts and not self._rx_held:
            if meta is None:
                hdr = _PLAIN_HDR10 if hdr_len != 12 else _PLAIN_HDR12_ONE_BUFFER
            else:
                hdr = meta.to_hdr(0).pack(hdr_len)      # the kernel sets num_buffers
            events = None if trace is None else trace.kernel_events()
            if self._rx_kernel.put(queue, mem, hdr, frame, self.mrg_rxbuf, events):
                if trace is not None:
                    trace.rx_kernel_put(events, frame)
                return None
            if trace is not None:
                trace.rx_kernel_refused(events)
            # The chains do not hold it: the rules below pop and hold them.
        need = hdr_len + len(frame)
        held = self._rx_held
        chains: list[DescriptorChain] = []
        room = 0
        while room < need:
            # Chains popped for a frame that did not fit come first, in order.
            if held:
                chain = held.popleft()
            elif trace is None:
                chain = queue.pop(mem)
            else:
                descs: list = []
                chain = queue.pop(mem, descs)
                if chain is not None:
                    trace.chain(0, chain.head, descs, chain.indirect, chain.readable_len + chain.writable_len)
            if chain is None:
                break
            chains.append(chain)
            room += chain.writable_len
            if not self.mrg_rxbuf:
                break       # without MRG_RXBUF a frame must fit in one chain
        if room < need:
            # Keep the chains for the next frame, in order (they are the last popped).
            held.extendleft(reversed(chains))
            if not chains or self.mrg_rxbuf:
                return _NO_RX_BUFFERS
            return "frame_too_big"
        if meta is None:
            if hdr_len != 12:
                hdr = _PLAIN_HDR10
            elif len(chains) == 1:
                hdr = _PLAIN_HDR12_ONE_BUFFER
            else:
                hdr = NetHdr(num_buffers=len(chains)).pack(12)
        else:
            hdr = meta.to_hdr(len(chains) if hdr_len == 12 else 0).pack(hdr_len)
        data = memoryview(hdr + frame)
        pos = 0
        used = []
        for chain in chains:
            n = chain.write(mem, data[pos:])
            pos += n
            used.append((chain.head, n))
        fault = self.fault
        if fault is None:
            queue.push_many(mem, used)
            published = True
        else:
            if fault.bad_rx_len:
                used = fault.rx_used(used, chains[0].writable_len)
                self.counters.fault("rx_len_lies")
            published = self.publish_used(queue, mem, "rx", used)
        if trace is not None:
            trace.rx_python_put(used if published else [], frame, used[0][0])
        return None

    # -- device modes (nicdev.net.faults) -------------------------------------------
    def publish_used(self, queue: DeviceQueue, mem: GuestMemory, direction: str, used: list) -> bool:
        """Publish a TX burst's used entries, or one received frame's (its
        buffers stay together), or hold them for delay-used / reorder-used.
        True if they went to the ring now."""
        fault = self.fault
        if fault is None or not fault.holds_used:
            queue.push_many(mem, used)
            return True
        groups = [[entry] for entry in used] if direction == "tx" else [used]
        for group in groups:
            self.held.hold(direction, queue, group, fault.delay_used)
        self.counters.fault("used_held", len(groups))
        return False

    def release_used(self, direction: str, queue: DeviceQueue, mem: GuestMemory, everything: bool = False) -> int:
        """Publish the held used entries of `direction` ("rx"/"tx") now due
        (all with `everything`), newest first under reorder-used. Returns how
        many went; entries held for an older queue are forgotten."""
        newest_first = self.fault is not None and self.fault.reorder_used
        groups = self.held.due(direction, queue, everything=everything, newest_first=newest_first)
        if not groups:
            return 0
        if newest_first and len(groups) > 1:
            self.counters.fault("used_reordered", len(groups))
        used = [entry for group in groups for entry in group]
        trace = self.ring_trace if self.tracer.on else None
        old = trace.used_before(queue, mem) if trace is not None else 0
        queue.push_many(mem, used)
        if trace is not None:       # held entries are traced when they reach the ring
            q = RX_QUEUE if direction == "rx" else TX_QUEUE
            trace.used(q, used)
            trace.used_idx(q, old, queue.state[STATE_USED_IDX])
        return len(used)
