"""The ring trace of a virtio-net device: records from what its data path did.

The data path (`nicdev.net.device_datapath`) tests `tracer.on` and
`tracer.frames_on` once per burst (once per frame towards the guest, which
comes one frame at a time); only when one is set does it take the traced
way through here, so tracing off costs those tests and nothing else.

Both data paths give the same records in the same order: the Python path
hands over the descriptors `DeviceQueue.pop` walked; the C kernels fill a
`KernelEvents` buffer (each chain popped with its descriptors, each used
element pushed) that is turned into the same records here. What both share
is read here once per burst: the avail index the driver published (an
`avail_idx` record when it moved since the last look) and the used index
before and after (`used_idx`). Frames go to `tracer.frame` with the head of
their chain (the first chain, for a frame over several receive chains).

Record order of a transmit burst: `avail_idx`, then per chain its `chain`
record followed by its `drop` if the frame was dropped, then the `used`
records and `used_idx`. Of a frame to the guest: `avail_idx`, the `chain`
records of the chains popped, their `used` records, `used_idx`.
"""
from __future__ import annotations

from nicdev.virtio import device_burst
from nicdev.virtio.device_burst import KernelEvents, PooledFrames
from nicdev.virtio.device_queue import STATE_USED_IDX, DeviceQueue
from nicdev.virtio.memory import GuestMemory, GuestMemoryError
from nicdev.virtio.ring import QueueBroken
from nicdev.virtio.trace import Tracer

from .ethernet import MAX_FRAME_LEN

__all__ = ["DeviceRingTrace", "RX_QUEUE", "TX_QUEUE", "DIRECTIONS"]

RX_QUEUE, TX_QUEUE = 0, 1
DIRECTIONS = ("rx", "tx")           # by queue index: the guest's receive, then transmit queue
_QUEUE_OF = {"rx": RX_QUEUE, "tx": TX_QUEUE}
_POPPED = (KernelEvents.TX_CHAIN, KernelEvents.RX_POP)
# A burst whose events did not fit makes the next buffer this much bigger, up to the cap.
_MAX_EVENTS = 1 << 16


class DeviceRingTrace:
    """Builds one device's ring records and hands them to its `Tracer`."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._events: KernelEvents | None = None
        self._avail_seen: list[int | None] = [None, None]

    # -- what both data paths share ---------------------------------------------------
    def kernel_events(self) -> KernelEvents:
        """The C kernels' event buffer, made at the first traced call."""
        if self._events is None:
            self._events = KernelEvents()
        return self._events

    def avail(self, q: int, queue: DeviceQueue, mem: GuestMemory) -> None:
        """An `avail_idx` record if the driver's avail index moved since the last look."""
        if not self.tracer.on:
            return
        try:
            idx = mem.read_u16(queue.avail_gpa + 2)
        except GuestMemoryError:
            return          # the burst finds the ring broken and says why
        old = self._avail_seen[q]
        if idx != old:
            self._avail_seen[q] = idx
            self.tracer.emit("avail_idx", q, DIRECTIONS[q], old=old, new=idx)

    @staticmethod
    def used_before(queue: DeviceQueue, mem: GuestMemory) -> int:
        """The used index before a burst: the queue's, or the ring's when the
        queue has not read it yet (it reads it at its first push)."""
        old = queue.state[STATE_USED_IDX]
        if old < 0:
            try:
                old = mem.read_u16(queue.used_gpa + 2)
            except GuestMemoryError:
                pass
        return old

    def used_idx(self, q: int, old: int, new: int) -> None:
        if old != new and new >= 0 and self.tracer.on:
            self.tracer.emit("used_idx", q, DIRECTIONS[q], old=None if old < 0 else old, new=new)

    def ring_restarted(self, q: int) -> None:
        """A ring (re)started: its avail index is looked at afresh."""
        self._avail_seen[q] = None

    def chain(self, q: int, head: int, descs: list, indirect: bool, nbytes: int) -> None:
        if self.tracer.on:
            self.tracer.emit("chain", q, DIRECTIONS[q], head=head, descs=descs, indirect=indirect, bytes=nbytes)

    def used(self, q: int, items) -> None:
        tracer = self.tracer
        if tracer.on:
            direction = DIRECTIONS[q]
            for head, written in items:
                tracer.emit("used", q, direction, id=head, len=written)

    def drop(self, direction: str, reason: str, length: int | None) -> None:
        self.tracer.emit("drop", _QUEUE_OF[direction], direction, reason=reason, len=length)

    def call(self, q: int, queue: DeviceQueue, sent: bool, signalled: bool) -> None:
        """The decision after used buffers: a call sent, or why not."""
        tracer = self.tracer
        if sent and signalled:
            tracer.emit("call", q, DIRECTIONS[q])
        elif sent:
            tracer.emit("call_suppressed", q, DIRECTIONS[q], reason="no_call_fd")
        else:
            tracer.emit("call_suppressed", q, DIRECTIONS[q], reason="event_idx" if queue.event_idx else "no_interrupt")

    # -- the C kernels' events -------------------------------------------------------------
    def kernel_records(self, q: int, events: KernelEvents) -> tuple[list, list]:
        """The events of one kernel call as (chains popped, used elements):
        chain records' fields as (head, descs, indirect, bytes), used ones as (id, len)."""
        lost = events.lost
        details = events.details()
        if lost:
            self._overflow(q, lost)
        chains, used = [], []
        for event in details:
            kind = event[0]
            if kind in _POPPED:
                chains.append((event[1], event[3], event[4], event[5]))
            elif kind == KernelEvents.USED:
                used.append((event[1], event[2]))
        return chains, used

    def _overflow(self, q: int, lost: int) -> None:
        """Events did not fit the buffer: say so, and make the next one bigger."""
        if self.tracer.on:
            self.tracer.emit("trace", q, DIRECTIONS[q], state="overflow", lost=lost)
        capacity = min(self._events.capacity * 4, _MAX_EVENTS)
        self._events = KernelEvents(capacity)

    def emit_chains(self, q: int, chains: list) -> None:
        for head, descs, indirect, nbytes in chains:
            self.chain(q, head, descs, indirect, nbytes)

    # -- traced transmit bursts ----------------------------------------------------------
    def tx_burst(self, dp, queue: DeviceQueue, mem: GuestMemory, limit: int, enabled: bool, out: list,
                 pooled: bool = False):
        """`NetDatapath.tx_burst` (or `tx_burst_pooled`, `pooled`) with its records."""
        self.avail(TX_QUEUE, queue, mem)
        old = self.used_before(queue, mem)
        if not dp.c_bursts:
            n = self._tx_burst_python(dp, queue, mem, limit, enabled, out)
            result = (n, None) if pooled else n
        else:
            result = self._tx_burst_c(dp, queue, mem, limit, enabled, out, pooled)
        self.used_idx(TX_QUEUE, old, queue.state[STATE_USED_IDX])
        return result

    def _tx_burst_python(self, dp, queue: DeviceQueue, mem: GuestMemory, limit: int, enabled: bool,
                         out: list) -> int:
        tracer = self.tracer
        used = []
        hdr_len = dp.hdr_len
        while len(used) < limit:
            descs: list = []
            chain = queue.pop(mem, descs)
            if chain is None:
                break
            self.chain(TX_QUEUE, chain.head, descs, chain.indirect, chain.readable_len + chain.writable_len)
            used.append((chain.head, 0))
            item = dp._tx_frame(chain, mem, hdr_len, enabled)
            if item is not None:
                out.append(item)
                if tracer.frames_on:
                    tracer.frame(TX_QUEUE, "tx", chain.head, item[0])
        if used and dp.publish_used(queue, mem, "tx", used):
            self.used(TX_QUEUE, used)
        return len(used)

    def _tx_burst_c(self, dp, queue: DeviceQueue, mem: GuestMemory, limit: int, enabled: bool, out: list,
                    pooled: bool):
        """NetDatapath._tx_burst_c's rules with each chain's records in turn."""
        tracer = self.tracer
        kernel = dp._tx_kernel
        hdr_len = dp.hdr_len
        kernel.configure(hdr_len, dp.max_frame, dp.max_gso_frame, bool(dp.tx_gso))
        events = self.kernel_events()
        n, error = kernel.run(queue, mem, limit, enabled, events)
        chains, used = self.kernel_records(TX_QUEUE, events)
        counters, work = dp.counters, kernel.work
        heads = kernel.heads(n)
        if pooled and error is None and work.frames_ok == n and dp.max_frame <= MAX_FRAME_LEN:
            counters.tx_frames += n
            counters.tx_bytes += work.bytes_ok
            frames = PooledFrames(kernel, n, hdr_len, work.bytes_ok) if n else None
            self.emit_chains(TX_QUEUE, chains)
            if tracer.frames_on and frames is not None:
                for i, head in enumerate(heads):
                    tracer.frame(TX_QUEUE, "tx", head, frames.frame(i))
            self.used(TX_QUEUE, used)
            return n, frames
        statuses, offsets, lengths = kernel.chains(n)
        ends = [o + m for o, m, st in zip(offsets, lengths, statuses) if st <= device_burst.TX_OFFLOAD]
        pool = kernel.data(ends[-1]) if ends else b""
        for i, (status, offset, length) in enumerate(zip(statuses, offsets, lengths)):
            if i < len(chains):
                self.chain(TX_QUEUE, *chains[i])
            item = None
            if status == device_burst.TX_OK:
                item = (pool[offset + hdr_len:offset + length], None)
            elif status == device_burst.TX_OFFLOAD:
                item = dp._tx_offload(pool[offset:offset + length], hdr_len)
            else:
                dp.drop("tx", device_burst.TX_DROP_REASONS[status], max(0, length - hdr_len))
            if item is not None:
                out.append(item)
                if tracer.frames_on:
                    tracer.frame(TX_QUEUE, "tx", heads[i], item[0])
        self.emit_chains(TX_QUEUE, chains[n:])
        self.used(TX_QUEUE, used)
        counters.tx_frames += work.frames_ok
        counters.tx_bytes += work.bytes_ok
        if error is not None:
            raise error
        return (n, None) if pooled else n

    # -- traced frames to the guest -------------------------------------------------------
    def rx_write(self, dp, queue: DeviceQueue, mem: GuestMemory, frame: bytes, meta) -> str | None:
        """`NetDatapath._write` with its records."""
        self.avail(RX_QUEUE, queue, mem)
        old = self.used_before(queue, mem)
        try:
            failure = dp._write(queue, mem, frame, meta, self)
        except QueueBroken:
            if self._events is not None:    # chains the C kernel popped before the break
                chains, used = self.kernel_records(RX_QUEUE, self._events)
                self.emit_chains(RX_QUEUE, chains)
                self.used(RX_QUEUE, used)
            raise
        self.used_idx(RX_QUEUE, old, queue.state[STATE_USED_IDX])
        return failure

    def rx_kernel_put(self, events: KernelEvents, frame: bytes) -> None:
        """After the C kernel put a frame: its chains, used elements and the frame."""
        chains, used = self.kernel_records(RX_QUEUE, events)
        self.emit_chains(RX_QUEUE, chains)
        self.used(RX_QUEUE, used)
        if used and self.tracer.frames_on:
            self.tracer.frame(RX_QUEUE, "rx", used[0][0], frame)

    def rx_kernel_refused(self, events: KernelEvents) -> None:
        """The kernel popped nothing after all: forget what it recorded."""
        lost = events.lost
        events.details()
        if lost:
            self._overflow(RX_QUEUE, lost)

    def rx_python_put(self, used: list, frame: bytes, head: int) -> None:
        """After the Python rules put a frame: its used elements (none while a
        device mode holds them: they are traced when published) and the frame."""
        self.used(RX_QUEUE, used)
        if self.tracer.frames_on:
            self.tracer.frame(RX_QUEUE, "rx", head, frame)
