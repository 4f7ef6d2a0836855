"""One connection of the stack's virtio-net driver: the front-end, its two
rings and the buffer pool they share (`VirtioNetNic` in
`stack.drivers.virtio_driver` makes a new one for every connection).

* RX (ring 0): every descriptor holds one receive buffer from the pool in
  the shared memfd. With MRG_RXBUF the buffers are 2 KiB and a long frame
  spans several (the header's num_buffers says how many); without it each
  buffer holds a whole frame (header + MTU + 18). The NIC's `receive(max)` reaps the
  used ring, copies frames out, gives every buffer straight back, publishes
  them with one index store and kicks only if the device asks (EVENT_IDX).
* TX (ring 1): one descriptor per frame: the 12-byte virtio_net_hdr and the
  frame copied into a fixed TX slot (one copy, one descriptor for the device
  to read: cheaper than a two-descriptor chain in Python and for the
  device). The NIC's `transmit(frames)` publishes the whole burst once and kicks at
  most once. Used TX slots are reaped when the burst needs them; a full ring
  drops the frame and counts it.
* Both rings' work (adding buffers, reaping used ones, copying frames in
  and out) is done by `nicdev.virtio.driver_rings`' rings in bursts: the C
  kernels (the default) or their Python reference (MNET_DATAPATH=python).
* Checksums: with CSUM negotiated a `FrameMeta` checksum request becomes
  NEEDS_CSUM (else it is finished in software); with GUEST_CSUM a DATA_VALID
  frame arrives as `DATA_VALID` (a NEEDS_CSUM one is finished
  here and marked valid too).
* Segmentation: with HOST_TSO4 a `FrameMeta(gso_type=GSO_TCPV4, gso_size=MSS)` TCP
  frame of up to 64 KiB goes out whole in one of the big TX slots (an eighth
  of the ring) with GSO in the header, and the back-end segments it; without
  it (or with CWR set, as HOST_ECN is not negotiated) it is segmented here.
  With GUEST_TSO4 (only asked for together with MRG_RXBUF) the back-end may
  hand us coalesced TCP frames: `FrameMeta(data_valid=True, gso_type=GSO_TCPV4,
  gso_size=MSS)`.
"""
from __future__ import annotations

import collections
import os
from dataclasses import replace

from nicdev.virtio.offload import DATA_VALID, FrameMeta, OffloadError, complete_checksum, segment
from nicdev.vhost_user.frontend import VhostUserFrontend
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF, has,
)
from nicdev.virtio.driver_burst import TX_BAD_CSUM, TX_SW_CSUM
from nicdev.virtio.driver_events import DriverEvents
from nicdev.virtio.driver_rings import rx_ring, tx_ring
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_TCPV4, NetHdr
from nicdev.virtio.trace import DRIVER, Tracer
from stack.drivers.nic import NO_RX_META, TxItem, not_a_tx_pair
from stack.drivers.ring_state import ring_state
from stack.drivers.ring_trace import RingWatch, emit_kick, traced

__all__ = ["VirtioLink", "RX_RING", "TX_RING", "HDR_LEN", "big_tx_slots", "pool_bytes", "is_pair", "drain_eventfd",
           "EVENTFD_ONE"]

RX_RING = 0
TX_RING = 1

HDR_LEN = 12            # VERSION_1: always 12 bytes, mergeable or not
ETH_HEADER_LEN = 14
VLAN_TAG_LEN = 4        # room for one 802.1Q tag on top of the MTU, as Linux allows
MRG_BUFFER = 2048       # receive buffer size with MRG_RXBUF
_SLOT_ALIGN = 64
MAX_GSO_FRAME = 65535 + ETH_HEADER_LEN + VLAN_TAG_LEN    # a 64 KiB IP packet
_TCP_CSUM_OFFSET = 16
_TCP_CWR = 0x80

EVENTFD_ONE = (1).to_bytes(8, "little")     # what signals an eventfd once
# Where drop records go: the counters' direction prefix -> its ring.
_DROP_QUEUES = {"rx": RX_RING, "tx": TX_RING}


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _frame_limit(mtu: int) -> int:
    return mtu + ETH_HEADER_LEN + VLAN_TAG_LEN


def big_tx_slots(queue_size: int, features: int) -> int:
    """TX slots for whole GSO frames: an eighth of the ring, if HOST_TSO4 may be negotiated."""
    return max(1, queue_size // 8) if has(features, VIRTIO_NET_F_HOST_TSO4) else 0


def pool_bytes(queue_size: int, mtu: int, big_slots: int = 0) -> int:
    """Buffer memory a NIC needs: RX buffers of the larger kind, plus TX slots
    (`big_slots` of them large enough for a 64 KiB GSO frame)."""
    full = _align(HDR_LEN + _frame_limit(mtu), _SLOT_ALIGN)
    big = _align(HDR_LEN + MAX_GSO_FRAME, _SLOT_ALIGN)
    return queue_size * max(MRG_BUFFER, full) + (queue_size - big_slots) * full + big_slots * big


def is_pair(item: object) -> bool:
    """Whether `item` unpacks into two (a (frame, meta) pair)."""
    try:
        _, _ = item
    except (TypeError, ValueError):
        return False
    return True


def drain_eventfd(fd: int) -> int:
    """Read (and so reset) a non-blocking eventfd: its count, 0 if it was not signalled."""
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0


class VirtioLink:
    """One connection's data path: the front-end, its two rings, the pool.

    A new `VirtioLink` (new memfd, new rings) is made for every (re)connection, so
    nothing from a dead connection leaks into the next. The rings
    (`nicdev.virtio.driver_burst`) run on the selected data path: the C
    kernels or the Python reference."""

    def __init__(self, frontend: VhostUserFrontend, mtu: int, counters: collections.Counter,
                 big_slots: int = 0, tracer: Tracer | None = None, events: DriverEvents | None = None) -> None:
        self.frontend = frontend
        self.counters = counters
        self.tracer = tracer if tracer is not None else Tracer("virtio-net", DRIVER)
        self.mem = frontend.mem
        self.features = frontend.features
        self.mrg = has(self.features, VIRTIO_NET_F_MRG_RXBUF)
        self.tx_csum = has(self.features, VIRTIO_NET_F_CSUM)
        self.guest_csum = has(self.features, VIRTIO_NET_F_GUEST_CSUM)
        # Spec: HOST_TSO4 needs CSUM, GUEST_TSO4 needs GUEST_CSUM.
        self.tso = self.tx_csum and has(self.features, VIRTIO_NET_F_HOST_TSO4)
        self.guest_tso = self.guest_csum and has(self.features, VIRTIO_NET_F_GUEST_TSO4)
        # Why a kick the device did not ask for was not sent (trace records).
        self.kick_suppressed_by = "event_idx" if has(self.features, VIRTIO_F_RING_EVENT_IDX) else "no_notify"
        rx, tx = frontend.rings[RX_RING], frontend.rings[TX_RING]
        self.rx_queue, self.tx_queue = rx.queue, tx.queue     # their geometry, for ring_state
        self.rx_kick_fd, self.tx_kick_fd = rx.kick_fd, tx.kick_fd
        self.rx_call_fd = rx.call_fd
        self.err_fds = {rx.err_fd: RX_RING, tx.err_fd: TX_RING}
        self.sock_fd = frontend.connection_fileno()
        self.size = qs = frontend.queue_size
        self.max_frame = _frame_limit(mtu)
        full = _align(HDR_LEN + self.max_frame, _SLOT_ALIGN)
        self.rx_buf = MRG_BUFFER if self.mrg else full
        tx_base = qs * self.rx_buf          # pool offset of TX slot 0
        big = _align(HDR_LEN + MAX_GSO_FRAME, _SLOT_ALIGN)
        small = qs - big_slots
        # Pool offset of each TX slot: `small` normal ones, then the big ones.
        # Without TSO the big slots are just (roomy) normal ones.
        tx_off = [tx_base + i * full for i in range(small)]
        tx_off += [tx_base + small * full + i * big for i in range(big_slots)]
        if tx_base + small * full + big_slots * big > frontend.pool_size:
            raise ValueError(f"buffer pool of {frontend.pool_size} bytes is too small for {qs} RX and TX buffers")
        # The device need not tell us about TX completions: we reap on demand.
        tx.queue.disable_interrupts(self.mem)
        self.txq = tx_ring(tx.queue, self.mem, frontend.pool_gpa, tx_off, [full] * small + [big] * big_slots,
                           small, self.tso, self.max_frame, events=events)
        self.rxq = rx_ring(rx.queue, self.mem, frontend.pool_gpa, self.rx_buf, self.mrg, events=events)
        self.tx_watch = RingWatch(self.tracer, TX_RING, "tx", self.mem, tx.queue, self.txq)
        self.rx_watch = RingWatch(self.tracer, RX_RING, "rx", self.mem, rx.queue, self.rxq)
        self.rx_irq_enabled = True
        self.rxq.fill()
        if self.tracer.on:
            self.rx_watch.look()
        self._kick_rx_if_asked(self.rxq.should_kick())

    # -- RX ---------------------------------------------------------------------
    def _kick_rx_if_asked(self, kick: bool) -> None:
        if kick:
            os.write(self.rx_kick_fd, EVENTFD_ONE)
            self.counters["rx_kicks"] += 1
        if self.tracer.on:
            emit_kick(self.rx_watch, kick, self.kick_suppressed_by)

    def poll_rx(self, out: collections.deque) -> None:
        """Reap used RX buffers into finished frames on `out`; give the buffers back."""
        if self.tracer.on:
            traced(self.rx_watch, self.counters, _DROP_QUEUES, self._poll_rx, out)
        else:
            self._poll_rx(out)

    def _poll_rx(self, out: collections.deque) -> None:
        if self.rx_irq_enabled:
            self.rxq.disable_interrupts()
            self.rx_irq_enabled = False
        got: list[tuple[bytes, bytes]] = []
        try:
            kick = self.rxq.poll(got, self.counters)
        finally:
            if got:     # frames before a broken buffer still go up, as they came
                self._finish_all(out, got)
        if self.tracer.on:
            self.rx_watch.look()
        self._kick_rx_if_asked(kick)

    def _finish_all(self, out: collections.deque, got: list[tuple[bytes, bytes]]) -> None:
        """(frame, header) pairs to the stack; a header that asks nothing (or
        only says DATA_VALID) is read here, any other by `_finish`."""
        counters, max_frame = self.counters, self.max_frame
        valid_meta = DATA_VALID if self.guest_csum else NO_RX_META
        frames = nbytes = 0
        for frame, hdr in got:
            flags = hdr[0]
            if hdr[1] or (flags and flags != VIRTIO_NET_HDR_F_DATA_VALID):
                self._finish(out, frame, NetHdr.unpack(hdr, HDR_LEN))
                continue
            n = len(frame)
            if n > max_frame:
                counters["rx_drop_oversize"] += 1
            elif n < ETH_HEADER_LEN:
                counters["rx_drop_runt"] += 1
            else:
                out.append((frame, valid_meta if flags else NO_RX_META))
                frames += 1
                nbytes += n
        if frames:
            counters["rx_frames"] += frames
            counters["rx_bytes"] += nbytes

    def _finish(self, out: collections.deque, frame: bytes, hdr: NetHdr) -> None:
        counters = self.counters
        n = len(frame)
        # DATA_VALID means something only with GUEST_CSUM negotiated.
        offload = FrameMeta.from_hdr(hdr, data_valid=self.guest_csum)
        gso_type = hdr.gso_type
        if gso_type:
            if not self.guest_tso or hdr.gso != VIRTIO_NET_HDR_GSO_TCPV4:
                counters["rx_drop_gso_not_negotiated"] += 1
                return
            if n > MAX_GSO_FRAME:
                counters["rx_drop_oversize"] += 1
                return
        elif n > self.max_frame:
            counters["rx_drop_oversize"] += 1
            return
        if n < ETH_HEADER_LEN:
            counters["rx_drop_runt"] += 1
            return
        meta = NO_RX_META
        if offload is not None and offload.needs_csum:
            # A partial checksum (GUEST_CSUM): finish it, so the bytes are right.
            try:
                frame = complete_checksum(frame, offload)
            except ValueError:
                counters["rx_drop_bad_csum_offsets"] += 1
                return
            meta = DATA_VALID
        elif offload is not None and offload.data_valid:
            meta = DATA_VALID
        if gso_type:
            # A coalesced TCP frame: its data came checksummed from its sender.
            meta = FrameMeta(data_valid=meta.data_valid, gso_type=gso_type, gso_size=hdr.gso_size)
            counters["rx_gso"] += 1
        counters["rx_frames"] += 1
        counters["rx_bytes"] += n
        out.append((frame, meta))

    def enable_rx_interrupts(self) -> bool:
        """Ask for a signal on the next used RX buffer; True if some are already there."""
        self.rx_irq_enabled = True
        return self.rxq.enable_interrupts()

    # -- TX ---------------------------------------------------------------------
    def transmit(self, items: list[TxItem]) -> tuple[int, bool]:
        """Queue a burst of (frame, meta) pairs; returns (frames taken, whether the ring was full)."""
        n = len(items)
        try:
            finished = [frame for frame, meta in items if meta is None]
        except (TypeError, ValueError):
            finished = None
        if finished is not None and len(finished) == n:      # the common burst: nothing to do but send
            return self.transmit_frames(finished, None)
        try:
            frames = [frame for frame, _ in items]
            metas = [meta for _, meta in items]
            bad = n
        except (TypeError, ValueError):
            bad = next(i for i, item in enumerate(items) if not is_pair(item))
            frames = [item[0] for item in items[:bad]]
            metas = [meta for _, meta in items[:bad]]
        taken, full = self.transmit_frames(frames, metas, n)
        if bad < n and not full:
            raise not_a_tx_pair(items[bad])     # what was queued before the bad item went out
        return taken, full

    def transmit_frames(self, frames, metas: list | None = None, total: int | None = None) -> tuple[int, bool]:
        """Queue `frames` (a list or a `TxFrames`), `metas` theirs (None: all
        finished); returns (frames taken, whether the ring was full). `total`:
        the burst's length if it goes on past `frames` (those count as
        dropped when the ring fills).

        Runs of frames without GSO go to the ring in one call each; a GSO
        frame goes whole into a big slot or is segmented here."""
        if self.tracer.on:
            return traced(self.tx_watch, self.counters, _DROP_QUEUES,
                          self._transmit_frames, frames, metas, total)
        return self._transmit_frames(frames, metas, total)

    def _transmit_frames(self, frames, metas: list | None, total: int | None) -> tuple[int, bool]:
        n = len(frames)
        total = n if total is None else total
        if self.txq.small_free < n:
            self._reap_tx()
        if metas is None:
            taken, stop = self._transmit_run(frames, None, 0)
            return self._end_burst(total, taken, stop)
        if len(metas) != n:
            raise ValueError(f"{n} frames and {len(metas)} metas: one meta (or None) per frame")
        # GSO frames go one by one; the runs between them in one call each.
        gso_at = [k for k in range(n) if metas[k] is not None and metas[k].gso_type] + [n]
        taken = i = 0
        for g in gso_at:
            if i < g:
                run = frames if i == 0 and g == n else frames[i:g]
                run_taken, stop = self._transmit_run(run, metas[i:g], i)
                taken += run_taken
                if stop is not None:
                    return self._end_burst(total, taken, stop)
            if g == n:
                break
            status = self._transmit_gso(frames[g], metas[g])
            if status is None:
                return self._end_burst(total, taken, g)
            taken += status
            i = g + 1
        return self._end_burst(total, taken, None)

    def _end_burst(self, n: int, taken: int, full_at: int | None) -> tuple[int, bool]:
        """Publish (and kick); frames from `full_at` on found the ring full."""
        if full_at is not None:
            self.counters["tx_drop_ring_full"] += n - full_at
        self._publish_tx()
        return taken, full_at is not None

    def _transmit_run(self, frames: list, metas: list | None, base: int) -> tuple[int, int | None]:
        """Frames (none GSO; `metas` theirs, or None for finished ones) into
        small slots: (frames taken, the burst index where the ring was full,
        or None). `base`: the burst index of frames[0]."""
        hdrs = kinds = None
        if metas is not None and metas.count(None) != len(metas):
            frames = list(frames)           # ours to change: a checksum finished here replaces its frame
            hdrs, kinds = self._checksum_requests(frames, metas)
        ring = self.txq
        taken = start = 0
        while True:
            start, k = ring.put(frames, hdrs, kinds, start, self.counters)
            taken += k
            if start == len(frames):
                return taken, None
            self._publish_tx()              # let the device see what it has, then look again
            self._reap_tx()
            if not ring.small_free:
                ring.lend_big()             # reaping gives it back to the big ones
            if not ring.small_free:
                return taken, base + start

    def _checksum_requests(self, frames: list, metas: list) -> tuple[bytes | None, bytes]:
        """Headers and TX_* kinds for a run with checksum requests: a
        NEEDS_CSUM header with CSUM negotiated, else the checksum finished
        here (the frame in `frames` is replaced)."""
        hdrs = bytearray(HDR_LEN * len(frames)) if self.tx_csum else None
        kinds = bytearray(len(frames))
        for k, meta in enumerate(metas):
            if meta is None or not meta.needs_csum:
                continue
            start, field, n = meta.csum_start, meta.csum_offset, len(frames[k])
            if not (0 <= start and start + field + 2 <= n and field >= 0):
                kinds[k] = TX_BAD_CSUM
            elif hdrs is not None:
                meta.to_hdr().pack_into(hdrs, HDR_LEN * k)
            else:
                frames[k] = complete_checksum(frames[k], meta)
                kinds[k] = TX_SW_CSUM
        return (None if hdrs is None else bytes(hdrs)), bytes(kinds)

    def _put_one(self, big: bool, frame: bytes, hdr: NetHdr | None) -> bool:
        """One frame into a big (or small) slot; False if the ring is full."""
        ring = self.txq
        packed = None if hdr is None else hdr.pack(HDR_LEN)
        if ring.put_one(big, frame, packed) is None:
            self._publish_tx()              # let the device see what it has, then look again
            self._reap_tx()
            if not big and not ring.small_free:
                ring.lend_big()             # reaping gives it back to the big ones
            if ring.put_one(big, frame, packed) is None:
                return False
        self.counters["tx_frames"] += 1
        self.counters["tx_bytes"] += len(frame)
        return True

    def _transmit_gso(self, frame: bytes, meta: FrameMeta) -> int | None:
        """One TCP GSO frame: whole with a GSO header (TSO negotiated), else
        segmented here. 1 = taken, 0 = dropped (counted), None = ring full."""
        counters = self.counters
        n = len(frame)
        start = meta.csum_start
        if (meta.gso_type != VIRTIO_NET_HDR_GSO_TCPV4 or not meta.gso_size > 0 or not meta.needs_csum
                or meta.csum_offset != _TCP_CSUM_OFFSET or n > MAX_GSO_FRAME
                or not ETH_HEADER_LEN + 20 <= start <= n - 20):
            counters["tx_drop_bad_gso"] += 1
            return 0
        # HOST_ECN is not negotiated: a CWR segment must not be sent as GSO.
        if self.tso and not frame[start + 13] & _TCP_CWR:
            hdr_len = start + (frame[start + 12] >> 4) * 4
            if not self._put_one(True, frame, replace(meta, hdr_len=hdr_len).to_hdr()):
                return None
            counters["tx_gso"] += 1
            return 1
        try:
            segments = segment(frame, meta)
        except OffloadError:
            counters["tx_drop_bad_gso"] += 1
            return 0
        counters["tx_sw_gso"] += 1
        for k, seg in enumerate(segments):
            if len(seg) > self.max_frame:
                counters["tx_drop_oversize"] += len(segments) - k
                return 0
            if not self._put_one(False, seg, None):
                counters["tx_drop_ring_full"] += len(segments) - k - 1
                return None
        return 1

    def _reap_tx(self) -> None:
        self.txq.reap()
        if self.tracer.on:
            self.tx_watch.look()

    def _publish_tx(self) -> None:
        kick = self.txq.flush()
        if kick:
            os.write(self.tx_kick_fd, EVENTFD_ONE)
            self.counters["tx_kicks"] += 1
        if self.tracer.on:
            self.tx_watch.look()
            emit_kick(self.tx_watch, kick, self.kick_suppressed_by)

    def ring_states(self) -> list[dict]:
        """Both rings as plain data (`stack.drivers.ring_state`), read from ring memory."""
        return [ring_state("rx", self.mem, self.rx_queue, self.rxq, self.counters, "rx"),
                ring_state("tx", self.mem, self.tx_queue, self.txq, self.counters, "tx")]

    # -- health -------------------------------------------------------------------
    def check(self) -> str | None:
        """Is the back-end still there and are its rings whole? None, or why not."""
        for fd, index in self.err_fds.items():
            if drain_eventfd(fd):
                return f"the back-end reported the {'RX' if index == RX_RING else 'TX'} ring broken"
        return self.frontend.check_connection()

    def fds(self) -> list[int]:
        return [self.rx_call_fd, self.sock_fd, *self.err_fds]

    def close(self, stop_rings: bool) -> None:
        self.txq.close()        # the rings let go of the shared memory first
        self.rxq.close()
        self.mem = None
        self.frontend.close(stop_rings=stop_rings)
