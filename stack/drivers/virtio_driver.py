"""The stack's network card: a virtio-net driver over a vhost-user front-end.

`VirtioNetNic(path)` connects to a vhost-user-net back-end (a port of our
switch, DPDK's net_vhost, anything QEMU could use) with
`nicdev.vhost_user.frontend.VhostUserFrontend` and drives queue pair 0 the
way a guest's virtio-net driver does:

* RX (ring 0): every descriptor holds one receive buffer from the pool in
  the shared memfd. With MRG_RXBUF the buffers are 2 KiB and a long frame
  spans several (the header's num_buffers says how many); without it each
  buffer holds a whole frame (header + MTU + 18). `receive(max)` reaps the
  used ring, copies frames out, gives every buffer straight back, publishes
  them with one index store and kicks only if the device asks (EVENT_IDX).
* TX (ring 1): one descriptor per frame: the 12-byte virtio_net_hdr and the
  frame copied into a fixed TX slot (one copy, one descriptor for the device
  to read: cheaper than a two-descriptor chain in Python and for the
  device). `transmit(frames)` publishes the whole burst once and kicks at
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
* Interrupts: `fileno()` is an epoll fd that is readable when the device
  signalled the RX call eventfd, when the back-end hangs up or reports a
  broken ring, and when a reconnect attempt is due. `receive()` disables RX
  interrupts while it works and re-enables them (then re-checks the used
  ring) only when it has drained it.

A back-end that goes away (connection closed or reset, a ring it reports
broken, a ring that breaks the driver's rules) takes the link down: the
reason is logged once and kept in `last_error`, `counters["link_down"]`
counts it, `transmit` drops and counts, `receive` returns []. With
`reconnect=True` the NIC tries again, at most every `reconnect_interval`
seconds, whenever it is called (and the fd wakes the stack's thread when an
attempt is due), and resumes on fresh memory and rings.

Thread safety: one lock serialises transmit, receive, reconnect and close,
so the stack's thread and socket-calling threads (stack/runtime.py) may
call in at the same time.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import select
import threading
import time
from dataclasses import replace
from typing import Callable, Iterable

from nicdev.virtio.offload import DATA_VALID, FrameMeta, OffloadError, complete_checksum, segment
from nicdev.vhost_user.frontend import GSO_FEATURES, OPTIONAL_FEATURES, BackendError, VhostUserFrontend
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF, describe, has,
)
from nicdev.virtio.driver_burst import TX_BAD_CSUM, TX_SW_CSUM
from nicdev.virtio.driver_events import DriverEvents
from nicdev.virtio.driver_rings import rx_ring, tx_ring
from nicdev.virtio.memory import GuestMemoryError
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_TCPV4, NetHdr
from nicdev.virtio.ring import QueueBroken
from nicdev.virtio.trace import DRIVER, Tracer
from stack.drivers.nic import NO_RX_META, Nic, NicOffloads, TxItem, not_a_tx_pair
from stack.drivers.ring_state import ring_state
from stack.drivers.ring_trace import RingWatch, drop_counts, emit_drops
from stack.wire import MacAddress

__all__ = ["VirtioNetNic", "RX_RING", "TX_RING", "DEFAULT_FEATURES"]

log = logging.getLogger(__name__)

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

#: What the driver accepts by default: the front-end's optional features
#: plus TCP segmentation both ways (HOST_TSO4, GUEST_TSO4).
DEFAULT_FEATURES = OPTIONAL_FEATURES | GSO_FEATURES

_EVENTFD_ONE = (1).to_bytes(8, "little")
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


def _is_pair(item: object) -> bool:
    try:
        _, _ = item
    except (TypeError, ValueError):
        return False
    return True


def _drain_eventfd(fd: int) -> int:
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0


class _Link:
    """One connection's data path: the front-end, its two rings, the pool.

    A new `_Link` (new memfd, new rings) is made for every (re)connection, so
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

    # -- tracing ------------------------------------------------------------------
    def _traced(self, watch: RingWatch, step: Callable, *args):
        """Run one burst `step` with its ring watched (see ring_trace) and its
        drops recorded; the step itself looks after each publish and reap."""
        watch.mark()
        before = drop_counts(self.counters)
        try:
            return step(*args)
        finally:
            watch.look()
            emit_drops(self.tracer, before, self.counters, _DROP_QUEUES)

    def _trace_kick(self, watch: RingWatch, kicked: bool) -> None:
        if kicked:
            self.tracer.emit("kick", watch.index, watch.direction)
        elif watch.published:
            self.tracer.emit("kick_suppressed", watch.index, watch.direction, reason=self.kick_suppressed_by)

    # -- RX ---------------------------------------------------------------------
    def _kick_rx_if_asked(self, kick: bool) -> None:
        if kick:
            os.write(self.rx_kick_fd, _EVENTFD_ONE)
            self.counters["rx_kicks"] += 1
        if self.tracer.on:
            self._trace_kick(self.rx_watch, kick)

    def poll_rx(self, out: collections.deque) -> None:
        """Reap used RX buffers into finished frames on `out`; give the buffers back."""
        if self.tracer.on:
            self._traced(self.rx_watch, self._poll_rx, out)
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
            bad = next(i for i, item in enumerate(items) if not _is_pair(item))
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
            return self._traced(self.tx_watch, self._transmit_frames, frames, metas, total)
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
            os.write(self.tx_kick_fd, _EVENTFD_ONE)
            self.counters["tx_kicks"] += 1
        if self.tracer.on:
            self.tx_watch.look()
            self._trace_kick(self.tx_watch, kick)

    def ring_states(self) -> list[dict]:
        """Both rings as plain data (`stack.drivers.ring_state`), read from ring memory."""
        return [ring_state("rx", self.mem, self.rx_queue, self.rxq, self.counters, "rx"),
                ring_state("tx", self.mem, self.tx_queue, self.txq, self.counters, "tx")]

    # -- health -------------------------------------------------------------------
    def check(self) -> str | None:
        """Is the back-end still there and are its rings whole? None, or why not."""
        for fd, index in self.err_fds.items():
            if _drain_eventfd(fd):
                return f"the back-end reported the {'RX' if index == RX_RING else 'TX'} ring broken"
        return self.frontend.check_connection()

    def fds(self) -> list[int]:
        return [self.rx_call_fd, self.sock_fd, *self.err_fds]

    def close(self, stop_rings: bool) -> None:
        self.txq.close()        # the rings let go of the shared memory first
        self.rxq.close()
        self.mem = None
        self.frontend.close(stop_rings=stop_rings)


class VirtioNetNic(Nic):
    """A `stack.drivers.nic.Nic` on a vhost-user-net back-end at `socket_path`.

    `mac`: the card's address (a random locally administered one if None).
    `mtu`: the largest IP packet; frames up to MTU + 18 bytes (Ethernet
    header and one VLAN tag) go either way, and the back-end is told the MTU
    if it takes NET_SET_MTU. `queue_size`: entries per ring. `reconnect`:
    come back by itself when the back-end does. `features`: the optional
    virtio features to accept (default: all this driver uses). `timeout`:
    seconds for connecting and for each set-up reply. `trace_sink`: a
    ring trace sink (`nicdev.virtio.trace`) that gets the driver's records
    from the start, the connection's set-up included; more sinks can be
    added to `tracer` at any time. `events`: a
    `nicdev.virtio.driver_events.DriverEvents` that both rings trace their
    work into, on every connection (None: no trace, and no cost).

    Raises `nicdev.vhost_user.frontend.BackendUnavailable` if nobody listens
    on the path, `BackendError` if the set-up fails.
    """

    def __init__(
        self,
        socket_path: str,
        mac: MacAddress | str | bytes | None = None,
        mtu: int = 1500,
        queue_size: int = 256,
        reconnect: bool = True,
        *,
        features: int = DEFAULT_FEATURES,
        reconnect_interval: float = 0.5,
        timeout: float = 5.0,
        name: str | None = None,
        trace_sink: Callable[[dict], None] | None = None,
        events: DriverEvents | None = None,
    ) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        self.socket_path = socket_path
        self.mac = MacAddress(mac) if mac is not None else MacAddress.random_local()
        self.mtu = mtu
        self.queue_size = queue_size
        self.reconnect = reconnect
        self.reconnect_interval = reconnect_interval
        self.timeout = timeout
        self.events = events
        self.name = name or f"virtio-net:{os.path.basename(socket_path)}"
        # The driver's side of the rings, traced (docs/tracing.md); off until a sink is added.
        self.tracer = Tracer(self.name, DRIVER)
        if trace_sink is not None:
            self.tracer.add_sink(trace_sink)
        if not has(features, VIRTIO_NET_F_MRG_RXBUF):
            # Coalesced frames would not fit our MTU-sized receive buffers.
            features &= ~(1 << VIRTIO_NET_F_GUEST_TSO4)
        self.wanted_features = features
        self._big_slots = big_tx_slots(queue_size, features)
        self.offloads = NicOffloads.NONE
        self.counters: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._backlog: collections.deque[tuple[bytes, FrameMeta]] = collections.deque()
        self._link: _Link | None = None
        self._closed = False
        self._next_attempt = 0.0
        self._timer: threading.Timer | None = None
        self._timer_pending = False
        self._wake_lock = threading.Lock()      # guards _wake_fd against close() in the timer thread
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        try:
            self._connect()
        except BaseException:
            self._epoll.close()
            os.close(self._wake_fd)
            raise

    def __repr__(self) -> str:
        state = "link up" if self._link is not None else f"link down ({self.last_error})"
        return f"VirtioNetNic({self.socket_path!r}, mac={self.mac}, mtu={self.mtu}, {state})"

    # -- state -------------------------------------------------------------------
    @property
    def link_up(self) -> bool:
        """Connected to a back-end with working rings."""
        return self._link is not None

    @property
    def features(self) -> int:
        """The virtio features negotiated on the current connection (0 while down)."""
        link = self._link
        return link.features if link is not None else 0

    @property
    def drops(self) -> dict[str, int]:
        """Dropped frames by reason (the counters named *_drop_*)."""
        return {k: v for k, v in self.counters.items() if "_drop_" in k}

    def snapshot(self) -> dict:
        """`Nic.snapshot` with the link's state, the negotiated features and
        both rings' indexes and counters (taken under the NIC's lock)."""
        with self._lock:
            snap = super().snapshot()
            link = self._link
            snap.update(driver="virtio-net", name=self.name, socket=self.socket_path, queue_size=self.queue_size,
                        link=link is not None, last_error=self.last_error, backlog=len(self._backlog),
                        features=[] if link is None else [n for n in describe(link.features)
                                                          if n != "VHOST_USER_PROTOCOL_FEATURES"],
                        rings=[] if link is None or self._closed else link.ring_states())
            return snap

    def describe(self) -> str:
        """One line: link state and negotiated features."""
        link = self._link
        if link is None:
            return f"{self.name}: link down: {self.last_error}"
        feats = "+".join(n for n in describe(link.features) if n != "VHOST_USER_PROTOCOL_FEATURES")
        return f"{self.name}: link up on {self.socket_path}, features {feats}"

    def fileno(self) -> int | None:
        """An epoll fd, readable when receive() has something to do (see module doc)."""
        return None if self._closed else self._epoll.fileno()

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"{self.name} is closed")

    # -- connection life ---------------------------------------------------------
    def _connect(self) -> None:
        frontend = VhostUserFrontend(
            self.socket_path, queue_size=self.queue_size,
            pool_size=pool_bytes(self.queue_size, self.mtu, self._big_slots),
            features=self.wanted_features, mtu=self.mtu, timeout=self.timeout, name=self.name,
            tracer=self.tracer)
        try:
            link = _Link(frontend, self.mtu, self.counters, self._big_slots, self.tracer, self.events)
            for fd in link.fds():
                self._epoll.register(fd, select.EPOLLIN)
        except BaseException:
            frontend.close(stop_rings=False)
            raise
        self._link = link
        offloads = NicOffloads.NONE
        if link.tx_csum:
            offloads |= NicOffloads.TX_CSUM
        if link.tso:
            offloads |= NicOffloads.TSO
        if link.guest_csum:
            offloads |= NicOffloads.RX_CSUM_TRUSTED
        if link.guest_tso:
            offloads |= NicOffloads.RX_GSO
        self.offloads = offloads
        # An interrupt may have been missed while nothing was watching: look now.
        self._poke()

    def _link_down(self, reason: str, *, stop_rings: bool) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        for fd in link.fds():
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        link.close(stop_rings)
        self.counters["link_down"] += 1
        self.last_error = reason
        if self.reconnect:
            log.error("%s: link down: %s; reconnecting every %g s", self.name, reason, self.reconnect_interval)
            self._next_attempt = time.monotonic() + self.reconnect_interval
            self._arm_timer(self.reconnect_interval)
        else:
            log.error("%s: link down: %s", self.name, reason)

    def _maybe_reconnect(self) -> None:
        if not self.reconnect or self._closed:
            return
        now = time.monotonic()
        if now < self._next_attempt:
            self._arm_timer(self._next_attempt - now)
            return
        self._next_attempt = now + self.reconnect_interval
        try:
            self._connect()
        except (BackendError, OSError) as e:
            self.counters["reconnect_failures"] += 1
            log.debug("%s: reconnect failed: %s", self.name, e)
            self._arm_timer(self.reconnect_interval)
            return
        self.counters["reconnects"] += 1
        self.last_error = None
        log.info("%s: link up again: %s", self.name, self.describe())

    def _arm_timer(self, delay: float) -> None:
        # Wakes whoever waits on fileno() when the next attempt is due. At
        # most one timer is pending; it counts as gone once it has fired.
        with self._wake_lock:
            if self._timer_pending or self._wake_fd < 0:
                return
            self._timer_pending = True
        timer = threading.Timer(max(delay, 0.0), self._timer_fired)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _timer_fired(self) -> None:
        with self._wake_lock:
            self._timer_pending = False
        self._poke()

    def _poke(self) -> None:
        """Make fileno() readable (so the owner calls receive())."""
        with self._wake_lock:
            if self._wake_fd >= 0:
                try:
                    os.write(self._wake_fd, _EVENTFD_ONE)
                except OSError:
                    pass

    # -- the Nic API ---------------------------------------------------------------
    def transmit(self, frames: Iterable[TxItem]) -> int:
        """Queue a burst of frames (publish once, kick at most once); frames
        that do not fit or cannot be sent are dropped and counted."""
        if not isinstance(frames, list):
            frames = list(frames)
        return self._transmit(_Link.transmit, frames, None)

    def transmit_frames(self, frames, metas: list | None = None) -> int:
        """`transmit` for a burst given as frames (a list or a `TxFrames`) and
        one list of metas (None: all finished): no pair per frame."""
        return self._transmit(_Link.transmit_frames, frames, metas)

    def _transmit(self, send, frames, metas) -> int:
        with self._lock:
            self._check_open()
            link = self._link
            if link is None:
                self._maybe_reconnect()
                link = self._link
                if link is None:
                    self.counters["tx_drop_link_down"] += len(frames)
                    if self.tracer.on:
                        for item in frames:
                            size = len(item[0]) if _is_pair(item) else (
                                len(item) if isinstance(item, (bytes, bytearray, memoryview)) else None)
                            self.tracer.emit("drop", TX_RING, "tx", reason="link_down", len=size)
                    return 0
            try:
                taken, full = send(link, frames) if metas is None else send(link, frames, metas)
            except (QueueBroken, GuestMemoryError) as e:
                self._link_down(f"TX ring broken: {e}", stop_rings=True)
                return 0
            except OSError as e:
                self._link_down(f"kicking the TX ring failed: {e.strerror or e}", stop_rings=False)
                return 0
            if full:
                # A ring that stays full may mean the back-end is gone: look.
                reason = link.check()
                if reason is not None:
                    self._link_down(reason, stop_rings=False)
            return taken

    def receive(self, max: int = 64) -> list[tuple[bytes, FrameMeta]]:
        """Up to `max` received frames, never blocking (see the module doc)."""
        with self._lock:
            self._check_open()
            link = self._link
            for fd, _ in self._epoll.poll(0):
                if fd == self._wake_fd:
                    _drain_eventfd(fd)
                elif link is not None and fd == link.rx_call_fd:
                    if _drain_eventfd(fd):
                        self.counters["rx_interrupts"] += 1
                        if self.tracer.on:
                            self.tracer.emit("call", RX_RING, "rx")
                elif link is not None and (fd == link.sock_fd or fd in link.err_fds):
                    reason = link.check()
                    if reason is not None:
                        self._link_down(reason, stop_rings=fd != link.sock_fd)
                        link = None
            backlog = self._backlog
            if link is None:
                self._maybe_reconnect()
                link = self._link
            if link is not None and len(backlog) < max:
                try:
                    link.poll_rx(backlog)
                except (QueueBroken, GuestMemoryError) as e:
                    self._link_down(f"RX ring broken: {e}", stop_rings=True)
                    link = None
                except OSError as e:
                    self._link_down(f"kicking the RX ring failed: {e.strerror or e}", stop_rings=False)
                    link = None
            out = []
            while backlog and len(out) < max:
                out.append(backlog.popleft())
            if backlog:
                self._poke()                    # more is waiting: stay readable
            elif link is not None:
                try:
                    if link.enable_rx_interrupts():
                        self._poke()            # used buffers came in meanwhile
                except QueueBroken as e:
                    self._link_down(f"RX ring broken: {e}", stop_rings=True)
            return out

    def close(self) -> None:
        """Stop the rings, hang up, release everything; later calls raise EBADF."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            timer = self._timer
            if timer is not None:
                timer.cancel()
            link, self._link = self._link, None
            if link is not None:
                for fd in link.fds():
                    try:
                        self._epoll.unregister(fd)
                    except OSError:
                        pass
                link.close(stop_rings=True)
            self._backlog.clear()
            self._epoll.close()
            with self._wake_lock:
                os.close(self._wake_fd)
                self._wake_fd = -1

    def __enter__(self) -> "VirtioNetNic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
