"""The device half of a split virtqueue in bursts, in C (csrc/device_burst.c).

`DeviceQueue` (device_queue.py) is the readable reference; these are the
same rules run over a whole burst in one C call: `TxKernel` pops up to N
chains, gathers each frame into a preallocated pool and returns the chains
used with one used-idx store; `RxKernel` scatters one frame over one
receive chain, or several with MRG_RXBUF; `needs_notification` and
`enable_notifications` are DeviceQueue's, in C.

The queue's indices are the DeviceQueue's own `state` array, which C reads
and writes in place, so a queue may go from one data path to the other
between any two calls. A broken ring gives the same QueueBroken, with the
same message, as the Python queue: C reports a code and its numbers and the
message is worded here (for an address outside guest memory, GuestMemory is
asked again, so its words are the same too).
"""
from __future__ import annotations

import itertools

from . import kernels
from .memory import GuestMemory, GuestMemoryError
from .ring import DESC_SIZE, QueueBroken, avail_ring_bytes, used_ring_bytes

__all__ = ["TxKernel", "RxKernel", "PooledFrames", "KernelEvents", "needs_notification", "enable_notifications",
           "TX_OK", "TX_OFFLOAD", "TX_DROP_REASONS"]

_lib, _ffi = kernels.lib, kernels.ffi
# For the TX pool: only bytes the kernel wrote are ever read back.
_new_uncleared = _ffi.new_allocator(should_clear_after_alloc=False) if _ffi is not None else None

# What dk_tx_burst says of each chain (DK_TX_*): a finished frame, a frame
# whose header asks for an offload (checked in Python), or a drop's reason.
TX_OK, TX_OFFLOAD = 0, 1
TX_DROP_REASONS = {2: "tx_no_header", 3: "tx_short_frame", 4: "tx_ring_disabled", 5: "tx_frame_too_big"}


def _memory_error(check) -> str:
    """GuestMemory's own words for the access the kernel refused."""
    try:
        check()
    except GuestMemoryError as e:
        return str(e)
    raise AssertionError("the C kernel refused an access that GuestMemory allows")


def _reason(queue, mem: GuestMemory, e) -> str:
    """The message DeviceQueue gives for the error a kernel reported."""
    size, head, code = queue.size, e.head, e.code
    if code == _lib.DK_ERR_AVAIL_MEM:
        why = _memory_error(lambda: mem.view(queue.avail_gpa, avail_ring_bytes(size, queue.event_idx)))
        return f"available ring at {queue.avail_gpa:#x} is not in guest memory: {why}"
    if code == _lib.DK_ERR_USED_MEM:
        why = _memory_error(lambda: mem.view(queue.used_gpa, used_ring_bytes(size, queue.event_idx)))
        return f"used ring at {queue.used_gpa:#x} is not in guest memory: {why}"
    if code == _lib.DK_ERR_AHEAD:
        return (f"available idx {e.a} is {e.b} entries ahead of {queue.next_avail}, "
                f"more than the queue size {size}")
    if code == _lib.DK_ERR_HEAD_RANGE:
        return f"available entry {e.a} names descriptor {head}, queue size is {size}"
    if code == _lib.DK_ERR_DESC_MEM:
        why = _memory_error(lambda: mem.view(queue.desc_gpa, DESC_SIZE * size))
        return f"descriptor table at {queue.desc_gpa:#x} is not in guest memory: {why}"
    if code == _lib.DK_ERR_LOOP:
        where = "indirect table" if e.a else "chain"
        return f"chain {head}: {where} longer than {e.b} descriptors (a loop?)"
    if code == _lib.DK_ERR_NESTED_INDIRECT:
        return f"chain {head}: indirect descriptor inside an indirect table"
    if code == _lib.DK_ERR_INDIRECT_NOT_NEGOTIATED:
        return f"chain {head}: indirect descriptor but INDIRECT_DESC was not negotiated"
    if code == _lib.DK_ERR_INDIRECT_AND_NEXT:
        return f"chain {head}: descriptor {e.a} has both INDIRECT and NEXT"
    if code == _lib.DK_ERR_INDIRECT_LENGTH:
        return (f"chain {head}: indirect table length {e.len} is not a multiple of {DESC_SIZE} "
                f"from {DESC_SIZE} to {DESC_SIZE * size}")
    if code == _lib.DK_ERR_INDIRECT_MEM:
        why = _memory_error(lambda: mem.read(e.addr, e.len))
        return f"chain {head}: indirect table {e.addr:#x}+{e.len} is not in guest memory: {why}"
    if code == _lib.DK_ERR_BUFFER_MEM:
        why = _memory_error(lambda: mem.check(e.addr, e.len))
        return f"chain {head}: buffer {e.addr:#x}+{e.len} is not in guest memory: {why}"
    if code == _lib.DK_ERR_READABLE_AFTER_WRITABLE:
        return f"chain {head}: device-readable descriptor after a device-writable one"
    if code == _lib.DK_ERR_TOTAL_LENGTH:
        return f"chain {head}: total length {e.len} does not fit in 32 bits"
    if code == _lib.DK_ERR_NEXT_RANGE:
        return f"chain {head}: descriptor {e.a} points to {e.b}, outside a table of {e.len}"
    raise AssertionError(f"unknown kernel error code {code}")


def _broken(queue, mem: GuestMemory, e) -> QueueBroken:
    """Mark the queue broken as DeviceQueue would; the exception to raise."""
    reason = _reason(queue, mem, e)
    queue.mark_broken(reason)
    return QueueBroken(reason)


def _bind(queue):
    """The C view of a DeviceQueue, made once: its geometry, its state array
    and an error report for its notification calls."""
    bound = queue.__dict__.get("_c_ring")
    if bound is None:
        ring = _ffi.new("struct dk_ring *", {
            "desc_gpa": queue.desc_gpa, "avail_gpa": queue.avail_gpa, "used_gpa": queue.used_gpa,
            "size": queue.size, "event_idx": queue.event_idx, "indirect": queue.indirect})
        bound = queue.__dict__["_c_ring"] = (ring, _ffi.from_buffer("struct dk_state *", queue.state),
                                             _ffi.new("struct dk_error *"))
    return bound


def _usable(queue) -> None:
    if queue.broken is not None:
        raise QueueBroken(queue.broken)


class KernelEvents:
    """An optional trace for the kernels, filled only when a kernel is handed
    one (tracing off costs one NULL test per call site).

    `records()` gives (kind, head, len) per event; `details()` the same
    events with each popped chain's descriptors. Kinds: TX_CHAIN (a
    transmit chain popped, len its readable bytes), RX_POP (a receive chain
    popped, len its writable bytes), RX_CHAIN (a receive chain written, len
    the bytes written), USED (a used element pushed: head its id, len the
    written length). Events past `capacity`, or descriptors past
    `desc_capacity`, are counted in `lost`."""

    TX_CHAIN, RX_CHAIN, RX_POP, USED = 1, 2, 3, 4

    def __init__(self, capacity: int = 1024, desc_capacity: int | None = None) -> None:
        desc_capacity = 4 * capacity if desc_capacity is None else desc_capacity
        self._events = _ffi.new("struct dk_event[]", capacity)
        self._descs = _ffi.new("struct dk_desc[]", desc_capacity)
        self.c = _ffi.new("struct dk_events *", {
            "capacity": capacity, "count": 0, "events": self._events,
            "desc_capacity": desc_capacity, "desc_count": 0, "descs": self._descs})

    @property
    def capacity(self) -> int:
        return self.c.capacity

    @property
    def lost(self) -> int:
        """Events and descriptors that found no room since the last read."""
        return self.c.lost

    def _clear(self) -> None:
        self.c.count = self.c.desc_count = self.c.lost = 0

    def records(self) -> list[tuple[int, int, int]]:
        """The events so far, oldest first, and start again."""
        out = [(ev.kind, ev.head, ev.len) for ev in self._events[0:self.c.count]]
        self._clear()
        return out

    def details(self) -> list[tuple]:
        """The events so far, oldest first, and start again: (kind, head, len)
        for RX_CHAIN and USED; (kind, head, len, descs, indirect, total) for
        a popped chain, `descs` a list of [addr, len, flags]."""
        descs = self._descs
        out = []
        for ev in self._events[0:self.c.count]:
            if ev.kind == self.TX_CHAIN or ev.kind == self.RX_POP:
                first = ev.first_desc
                walked = [[d.addr, d.len, d.flags] for d in descs[first:first + ev.ndescs]]
                out.append((ev.kind, ev.head, ev.len, walked, bool(ev.indirect), ev.total))
            else:
                out.append((ev.kind, ev.head, ev.len))
        self._clear()
        return out


def _events(events: KernelEvents | None):
    return _ffi.NULL if events is None else events.c


class _Scratch:
    """The copy of an indirect table: 16 bytes per entry of the largest queue seen."""

    def __init__(self) -> None:
        self.size = 0
        self.buf = _ffi.NULL

    def fit(self, queue_size: int):
        if queue_size > self.size:
            self.buf = _ffi.new("uint8_t[]", DESC_SIZE * queue_size)
            self.size = queue_size
        return self.buf


class TxKernel:
    """TX bursts: chains in, frames (header included) gathered into `pool`.

    After `run`, `chains(n)` says what became of each chain of the burst:
    its status (TX_OK, TX_OFFLOAD or a key of TX_DROP_REASONS) and, for
    TX_OK/TX_OFFLOAD, where its bytes (header included) are in the pool.
    `work.frames_ok`/`work.bytes_ok` sum the TX_OK frames (bytes without
    the header)."""

    def __init__(self) -> None:
        self._scratch = _Scratch()
        self.work = _ffi.new("struct dk_tx_work *")
        self.params = _ffi.new("struct dk_tx_params *")
        self.error = _ffi.new("struct dk_error *")
        self._capacity = 0
        self._slot = 0
        self.pool = None

    def _fit(self, limit: int, slot: int) -> None:
        if limit <= self._capacity and slot <= self._slot:
            return
        # Room for `limit` of the largest frames: a burst never stops for
        # space. Not cleared: the OS maps its pages as frames first touch
        # them, so a burst of small frames costs their bytes, not 64 KiB each.
        capacity, slot = max(limit, self._capacity), max(slot, self._slot)
        if capacity * slot >= 1 << 32:
            raise ValueError(f"a TX burst of {limit} frames of {slot} bytes does not fit a 32-bit pool")
        self._capacity, self._slot = capacity, slot
        w = self.work
        self.pool = _new_uncleared("uint8_t[]", capacity * slot)
        self._offset = _ffi.new("uint32_t[]", capacity)
        self._len = _ffi.new("uint32_t[]", capacity)
        self._status = _ffi.new("uint8_t[]", capacity)
        self._used = _ffi.new("struct dk_used[]", capacity)
        self.runs = _ffi.new("struct dk_mac_run[]", capacity)      # PooledFrames.mac_runs
        w.pool, w.pool_size = self.pool, capacity * slot
        w.offset, w.len, w.status = self._offset, self._len, self._status
        w.used, w.capacity = self._used, capacity

    def configure(self, hdr_len: int, max_frame: int, max_gso_frame: int, gso: bool) -> None:
        """The negotiated header and frame limits (NetDatapath's rules)."""
        p = self.params
        p.hdr_len, p.max_frame, p.max_gso_frame, p.gso = hdr_len, max_frame, max_gso_frame, gso
        p.slot = hdr_len + max(max_frame, max_gso_frame)

    def run(self, queue, mem: GuestMemory, limit: int, enabled: bool,
            events: KernelEvents | None = None) -> tuple[int, QueueBroken | None]:
        """Take up to `limit` chains. Returns (chains taken, None), or, when
        the ring broke, the chains taken before it and the QueueBroken to
        raise once they are handled (they were not returned used, as with
        DeviceQueue.pop raising)."""
        _usable(queue)
        ring, state, _ = _bind(queue)
        self._fit(limit, self.params.slot)
        self.work.scratch = self._scratch.fit(queue.size)
        self.params.enabled = enabled
        err = self.error
        n = _lib.dk_tx_burst(ring, state, kernels.mem_table(mem), self.params, self.work, limit, err,
                             _events(events))
        return n, (_broken(queue, mem, err) if err.code else None)

    def heads(self, n: int) -> list[int]:
        """The head of each of the first n chains of the last burst."""
        return [u.id for u in self._used[0:n]]

    def chains(self, n: int) -> tuple[list[int], list[int], list[int]]:
        """(statuses, offsets, lengths) of the first n chains of the last burst."""
        return _ffi.unpack(self._status, n), _ffi.unpack(self._offset, n), _ffi.unpack(self._len, n)

    def data(self, end: int) -> bytes:
        """The pool's first `end` bytes, one copy (frames are sliced from it)."""
        return _ffi.buffer(self.pool, end)[:]


class PooledFrames:
    """The finished frames of one TX burst, still in its kernel's pool (no
    Python object per frame): `count` frames, `total_bytes` of them, each
    behind a `hdr_len`-byte header. Valid until that kernel runs again, so
    whoever gets it forwards or copies the frames before returning."""

    __slots__ = ("kernel", "count", "hdr_len", "total_bytes")

    def __init__(self, kernel: "TxKernel", count: int, hdr_len: int, total_bytes: int) -> None:
        self.kernel, self.count, self.hdr_len, self.total_bytes = kernel, count, hdr_len, total_bytes

    def __len__(self) -> int:
        return self.count

    def frame(self, i: int) -> bytes:
        """Frame i (header excluded) as bytes."""
        kernel, h = self.kernel, self.hdr_len
        start = kernel._offset[i] + h
        return _ffi.buffer(kernel.pool + start, kernel._len[i] - h)[:]

    def items(self, first: int = 0, count: int | None = None) -> list[tuple[bytes, None]]:
        """The frames as (frame, None) pairs, for whoever needs Python objects."""
        end = self.count if count is None else first + count
        if end <= first:
            return []
        _, offsets, lengths = self.kernel.chains(end)
        pool = self.kernel.data(offsets[end - 1] + lengths[end - 1])
        h = self.hdr_len
        return [(pool[o + h:o + n], None) for o, n in zip(offsets[first:], lengths[first:])]

    def mac_runs(self) -> list[tuple[int, int, bytes, bytes]]:
        """(first, count, destination MAC, source MAC) of each run of frames
        with the same two addresses, in order."""
        runs = self.kernel.runs
        n = _lib.dk_mac_runs(self.kernel.work, self.hdr_len, self.count, runs, self.count)
        out = []
        for r in runs[0:n]:
            macs = bytes(_ffi.buffer(r.macs))
            out.append((r.first, r.count, macs[:6], macs[6:]))
        return out


class RxKernel:
    """Frames into the guest's receive buffers, one C call per frame."""

    def __init__(self) -> None:
        self._scratch = _Scratch()
        self.work = _ffi.new("struct dk_rx_work *")
        self.params = _ffi.new("struct dk_rx_params *")
        self.error = _ffi.new("struct dk_error *")
        self._hdr = _ffi.new("uint8_t[12]")
        self._bytes = _ffi.new("uint64_t *")
        self._queue_size = 0
        self._seg_room = 0

    def _fit(self, queue_size: int, need: int) -> None:
        w = self.work
        if queue_size > self._queue_size:
            self._queue_size = queue_size
            self._chains = _ffi.new("struct dk_rx_chain[]", queue_size)
            self._used = _ffi.new("struct dk_used[]", queue_size)
            w.chains, w.used, w.chain_room = self._chains, self._used, queue_size
            w.scratch = self._scratch.fit(queue_size)
        if need > self._seg_room:
            # A stored segment holds at least one byte of the frame.
            self._seg_room = max(need, 2048)
            self._segs = _ffi.new("struct dk_seg[]", self._seg_room)
            w.segs, w.seg_room = self._segs, self._seg_room

    def put(self, queue, mem: GuestMemory, hdr: bytes, frame: bytes, mrg_rxbuf: bool,
            events: KernelEvents | None = None) -> int:
        """Write header + frame into the next receive chain(s); `hdr`'s
        num_buffers (12-byte header) is set to the chains used. Returns the
        chains used, or 0 when they do not hold the frame: then nothing was
        popped or written (the Python data path takes over). Raises
        QueueBroken as DeviceQueue does."""
        _usable(queue)
        ring, state, _ = _bind(queue)
        hdr_len = len(hdr)
        self._fit(queue.size, hdr_len + len(frame))
        self.params.hdr_len, self.params.mrg_rxbuf = hdr_len, mrg_rxbuf
        _ffi.memmove(self._hdr, hdr, hdr_len)
        err = self.error
        n = _lib.dk_rx_put(ring, state, kernels.mem_table(mem), self.params, self.work, self._hdr,
                           _ffi.from_buffer(frame), len(frame), err, _events(events))
        if n < 0:
            raise _broken(queue, mem, err)
        return n


    def put_burst(self, queue, mem: GuestMemory, hdr: bytes, frames: PooledFrames, first: int, count: int,
                  mrg_rxbuf: bool, max_frame: int, events: KernelEvents | None = None
                  ) -> tuple[int, int, QueueBroken | None]:
        """Frames first..first+count of another queue's TX pool, each as `put`
        would write it, with one used idx store. Stops before a frame longer
        than `max_frame` or without room. Returns (frames written, their
        bytes, None), or when the ring broke the frames written before it
        (returned used) and the QueueBroken to raise."""
        _usable(queue)
        ring, state, _ = _bind(queue)
        hdr_len = len(hdr)
        self._fit(queue.size, hdr_len + max_frame)
        self.params.hdr_len, self.params.mrg_rxbuf = hdr_len, mrg_rxbuf
        _ffi.memmove(self._hdr, hdr, hdr_len)
        err, nbytes = self.error, self._bytes
        n = _lib.dk_rx_burst(ring, state, kernels.mem_table(mem), self.params, self.work, self._hdr, _ffi.NULL,
                             frames.kernel.work, frames.hdr_len, first, count, max_frame, nbytes, err,
                             _events(events))
        if n < 0:
            return self.work.done, nbytes[0], _broken(queue, mem, err)
        return n, nbytes[0], None

    def put_frames(self, queue, mem: GuestMemory, hdr: bytes, frames: list, hdrs: bytes | None, mrg_rxbuf: bool,
                   events: KernelEvents | None = None) -> tuple[int, int, QueueBroken | None]:
        """`frames` (bytes) in order, as `put_burst` writes a pool's frames, in
        one C call: every frame behind `hdr`, or with `hdrs` frame i behind
        its own header, hdrs[i * len(hdr):(i + 1) * len(hdr)] (its
        num_buffers set here). The caller has checked their lengths. Returns
        (frames written, their bytes, None or the QueueBroken to raise)."""
        _usable(queue)
        ring, state, _ = _bind(queue)
        hdr_len, count = len(hdr), len(frames)
        lens = [len(f) for f in frames]
        self._fit(queue.size, hdr_len + max(lens, default=0))
        self.params.hdr_len, self.params.mrg_rxbuf = hdr_len, mrg_rxbuf
        _ffi.memmove(self._hdr, hdr, hdr_len)
        # The frames laid out as a TX pool (header length 0): one join, one copy.
        data = _ffi.from_buffer("uint8_t[]", b"".join(frames))
        offsets = _ffi.new("uint32_t[]", list(itertools.accumulate(lens[:-1], initial=0)) if count else 0)
        c_lens = _ffi.new("uint32_t[]", lens)       # kept alive here: the struct only points at them
        src = _ffi.new("struct dk_tx_work *", {"pool": data, "pool_size": len(data), "offset": offsets,
                                               "len": c_lens, "capacity": count})
        frame_hdrs = _ffi.NULL if hdrs is None else _ffi.from_buffer("uint8_t[]", hdrs)
        err, nbytes = self.error, self._bytes
        n = _lib.dk_rx_burst(ring, state, kernels.mem_table(mem), self.params, self.work, self._hdr, frame_hdrs,
                             src, 0, 0, count, 0xFFFF_FFFF, nbytes, err, _events(events))
        if n < 0:
            return self.work.done, nbytes[0], _broken(queue, mem, err)
        return n, nbytes[0], None


def needs_notification(queue, mem: GuestMemory) -> bool:
    """DeviceQueue.needs_notification, in C."""
    _usable(queue)
    ring, state, err = _bind(queue)
    r = _lib.dk_needs_notification(ring, state, kernels.mem_table(mem), err)
    if r < 0:
        raise _broken(queue, mem, err)
    return bool(r)


def enable_notifications(queue, mem: GuestMemory) -> bool:
    """DeviceQueue.enable_notifications, in C."""
    _usable(queue)
    ring, state, err = _bind(queue)
    r = _lib.dk_enable_notifications(ring, state, kernels.mem_table(mem), err)
    if r < 0:
        raise _broken(queue, mem, err)
    return bool(r)
