"""The driver's TX and RX rings on the C kernels (csrc/driver_burst.c).

Same methods and results as `driver_burst.TxRing`/`RxRing` (the Python
reference; the differential tests compare them). A ring takes over an empty
`DriverQueue` (`DriverQueue.hand_over`): the queue's geometry, idx and trace
go to a C `struct mnet_drvq`, its bookkeeping arrays are allocated here, and
the C code gets pointers to exactly the four areas it may touch: the
descriptor table, both rings and the buffer pool. `close()` gives those
buffers back (a shared mapping cannot close while C holds them).
"""
from __future__ import annotations

import collections
from array import array

from .driver_burst import HDR_LEN, TxFrames, tx_slot_stacks
from .driver_events import DriverEvents
from .driver_queue import DriverQueue, QueueFull
from .kernels import ffi, lib
from .memory import GuestMemory
from .ring import DESC_SIZE, QueueBroken, avail_ring_bytes, used_ring_bytes

__all__ = ["CTxRing", "CRxRing"]


class _CQueue:
    """A DriverQueue's state in C, with the buffers C may touch."""

    def __init__(self, queue: DriverQueue, mem: GuestMemory, events: DriverEvents | None) -> None:
        size = queue.size
        self.size = size
        self.used_gpa = queue.used_gpa
        self._buffers = []
        q = ffi.new("struct mnet_drvq *")
        q.desc = self._span(mem, queue.desc_gpa, DESC_SIZE * size, 16)
        q.avail = ffi.cast("uint16_t *", self._span(mem, queue.avail_gpa, avail_ring_bytes(size, queue.event_idx), 2))
        q.used = self._span(mem, queue.used_gpa, used_ring_bytes(size, queue.event_idx), 4)
        q.desc_len = DESC_SIZE * size
        q.avail_len = avail_ring_bytes(size, queue.event_idx)
        q.used_len = used_ring_bytes(size, queue.event_idx)
        q.size = size
        q.event_idx = bool(queue.event_idx)
        self._arrays = []
        for name, ctype in (("free_stack", "uint16_t[]"), ("in_flight", "uint8_t[]"), ("capacity", "uint32_t[]"),
                            ("token", "uint32_t[]"), ("reap_token", "uint32_t[]"), ("reap_written", "uint32_t[]")):
            arr = ffi.new(ctype, size)
            self._arrays.append(arr)
            setattr(q, name, arr)
        q.ev = ffi.NULL if events is None else events.c_table(ffi)
        if lib.mnet_drvq_start(q, queue.hand_over()) != 0:
            raise ValueError(f"the C kernels refuse {queue!r}")
        self.q = q
        self.broken: str | None = None

    def _span(self, mem: GuestMemory, gpa: int, length: int, align: int):
        buf = ffi.from_buffer("uint8_t[]", mem.view(gpa, length), require_writable=True)
        self._buffers.append(buf)
        if int(ffi.cast("uintptr_t", buf)) % align:
            raise ValueError(f"guest memory at {gpa:#x} is not {align}-aligned in the host")
        return buf

    def pool(self, mem: GuestMemory, gpa: int, length: int):
        return self._span(mem, gpa, length, 1)

    @property
    def last_used(self) -> int:
        return self.q.last_used

    @property
    def len_clamped(self) -> int:
        return self.q.len_clamped

    def error(self, rc: int) -> Exception:
        """The exception for a kernel's negative return code (as DriverQueue raises it)."""
        if rc == lib.MNET_DRV_BROKEN:
            if self.broken is None:
                self.broken = self._reason()
            return QueueBroken(self.broken)
        if rc == lib.MNET_DRV_FULL:
            return QueueFull(f"no free descriptor ({self.q.num_free} free)")
        return ValueError(f"the C ring kernels refused their arguments (code {rc})")

    def _reason(self) -> str:
        q = self.q
        a, b, c, d = q.err[0], q.err[1], q.err[2], q.err[3]
        if q.error == lib.MNET_DRV_E_USED_AHEAD:
            return f"device used idx {a} is {b} ahead of {c}, only {d} buffers published"
        if q.error == lib.MNET_DRV_E_NOT_IN_FLIGHT:
            return f"used entry {a} names descriptor {b}, which is not a buffer in flight"
        return f"broken (code {q.error})"

    def check(self, rc: int) -> int:
        if rc < 0:
            raise self.error(rc)
        return rc

    def publish(self) -> int:
        return self.check(lib.mnet_drvq_publish(self.q))

    def should_kick(self) -> bool:
        return bool(self.check(lib.mnet_drvq_should_kick(self.q)))

    def flush(self) -> bool:
        return bool(self.check(lib.mnet_drvq_flush(self.q)))

    def enable_interrupts(self) -> bool:
        return bool(self.check(lib.mnet_drvq_enable_irq(self.q)))

    def disable_interrupts(self) -> None:
        self.check(lib.mnet_drvq_disable_irq(self.q))

    def release(self) -> None:
        for buf in self._buffers:
            ffi.release(buf)
        self._buffers = []


class CTxRing:
    """`driver_burst.TxRing` on the C kernels (same arguments, same results)."""

    def __init__(self, queue: DriverQueue, mem: GuestMemory, pool_gpa: int, slot_offsets: list[int],
                 slot_lengths: list[int], small: int, split_big: bool, max_frame: int,
                 events: DriverEvents | None = None) -> None:
        self._q = cq = _CQueue(queue, mem, events)
        nslots = len(slot_offsets)
        if not 0 < nslots <= 0xFFFF or len(slot_lengths) != nslots:
            raise ValueError(f"{nslots} TX slots: one offset and one length each, at most 65535")
        pool_len = max(o + n for o, n in zip(slot_offsets, slot_lengths))
        small_free, big_free = tx_slot_stacks(nslots, small, split_big)
        self._slot_off = ffi.new("uint32_t[]", slot_offsets)
        self._slot_len = ffi.new("uint32_t[]", slot_lengths)
        self._small_free = ffi.new("uint16_t[]", small_free + [0] * (nslots - len(small_free)))
        self._big_free = ffi.new("uint16_t[]", big_free + [0] * (nslots - len(big_free)))
        self._tx = ffi.new("struct mnet_drv_tx *", {
            "q": cq.q, "pool": cq.pool(mem, pool_gpa, pool_len), "pool_gpa": pool_gpa, "pool_len": pool_len,
            "slot_off": self._slot_off, "slot_len": self._slot_len, "nslots": nslots, "small": small,
            "split_big": bool(split_big), "max_frame": max_frame, "small_free": self._small_free,
            "big_free": self._big_free, "n_small_free": len(small_free), "n_big_free": len(big_free),
        })
        self._counts = ffi.new("struct mnet_drv_tx_counts *")
        self.used_gpa = queue.used_gpa

    @property
    def last_used(self) -> int:
        return self._q.last_used

    @property
    def len_clamped(self) -> int:
        return self._q.len_clamped

    @property
    def small_free(self) -> int:
        return self._tx.n_small_free

    @property
    def big_free(self) -> int:
        return self._tx.n_big_free

    def put(self, frames: list, hdrs: bytes | None, kinds: bytes | None, start: int,
            counters: collections.Counter) -> tuple[int, int]:
        """See `TxRing.put`."""
        if type(frames) is TxFrames:
            blob, lens = frames.blob, frames.lens
        else:
            blob = b"".join(frames)
            lens = array("I", map(len, frames))
        counts = self._counts
        # bytes go to a char * as they are (hdrs and kinds are bytes too)
        stop = lib.mnet_drv_tx_put(self._tx, blob, len(blob), ffi.from_buffer("uint32_t[]", lens),
                                   ffi.NULL if hdrs is None else bytes(hdrs), ffi.NULL if kinds is None else bytes(kinds),
                                   start, len(frames), counts)
        if stop < 0:
            raise self._q.error(stop)
        taken = counts.taken
        if taken:
            counters["tx_frames"] += taken
            counters["tx_bytes"] += counts.bytes
            if counts.sw_csum:
                counters["tx_sw_csum"] += counts.sw_csum
        if counts.dropped:
            for name, value in (("tx_drop_oversize", counts.oversize), ("tx_drop_runt", counts.runt),
                                ("tx_drop_bad_csum_offsets", counts.bad_csum)):
                if value:
                    counters[name] += value
        return stop, taken

    def put_one(self, big: bool, frame, hdr: bytes | None) -> int | None:
        """See `TxRing.put_one`."""
        slot = lib.mnet_drv_tx_put_one(self._tx, bool(big), ffi.from_buffer(frame), len(frame),
                                       ffi.NULL if hdr is None else ffi.from_buffer(hdr))
        if slot == lib.MNET_DRV_FULL:
            return None
        return self._q.check(slot)

    def lend_big(self) -> bool:
        return bool(lib.mnet_drv_tx_lend_big(self._tx))

    def reap(self) -> int:
        return self._q.check(lib.mnet_drv_tx_reap(self._tx))

    def publish(self) -> int:
        return self._q.publish()

    def should_kick(self) -> bool:
        return self._q.should_kick()

    def flush(self) -> bool:
        return self._q.flush()

    def disable_interrupts(self) -> None:
        self._q.disable_interrupts()

    def close(self) -> None:
        self._q.release()


class CRxRing:
    """`driver_burst.RxRing` on the C kernels (same arguments, same results)."""

    def __init__(self, queue: DriverQueue, mem: GuestMemory, pool_gpa: int, buf_size: int, mrg: bool,
                 events: DriverEvents | None = None) -> None:
        self._q = cq = _CQueue(queue, mem, events)
        size = queue.size
        self.buf_size = buf_size
        # A frame takes at most every buffer of the ring, and one poll ends
        # at most one partial frame and size - 1 others.
        ring_bytes = size * buf_size
        self._partial = ffi.new("uint8_t[]", ring_bytes)
        self._reap_head = ffi.new("uint16_t[]", size)
        self._rx = ffi.new("struct mnet_drv_rx *", {
            "q": cq.q, "pool": cq.pool(mem, pool_gpa, ring_bytes), "pool_gpa": pool_gpa, "pool_len": ring_bytes,
            "buf_size": buf_size, "mrg": bool(mrg), "reap_head": self._reap_head, "partial": self._partial,
            "partial_cap": ring_bytes,
        })
        self._buf = ffi.new("uint8_t[]", 2 * ring_bytes)
        self._len = ffi.new("uint32_t[]", size)
        self._hdr = ffi.new("uint8_t[]", HDR_LEN * size)
        self._out = ffi.new("struct mnet_drv_rx_out *", {
            "buf": self._buf, "cap": 2 * ring_bytes, "len": self._len, "hdr": self._hdr, "max_frames": size,
        })
        self.used_gpa = queue.used_gpa

    @property
    def last_used(self) -> int:
        return self._q.last_used

    @property
    def len_clamped(self) -> int:
        return self._q.len_clamped

    def fill(self) -> None:
        self._q.check(lib.mnet_drv_rx_fill(self._rx))

    def poll(self, out: list, counters: collections.Counter) -> bool:
        """See `RxRing.poll`."""
        o = self._out
        rc = lib.mnet_drv_rx_poll(self._rx, o)
        if rc < 0:
            raise self._q.error(rc)
        if o.buffers:
            counters["rx_buffers"] += o.buffers
            if o.short_buffer:
                counters["rx_drop_short_buffer"] += o.short_buffer
            if o.bad_num_buffers:
                counters["rx_bad_num_buffers"] += o.bad_num_buffers
        nframes = o.frames
        if nframes:
            blob = ffi.buffer(self._buf, o.used)[:]
            hdrs = ffi.buffer(self._hdr, HDR_LEN * nframes)[:]
            pos = 0
            for i, n in enumerate(ffi.unpack(self._len, nframes)):
                out.append((blob[pos:pos + n], hdrs[HDR_LEN * i:HDR_LEN * i + HDR_LEN]))
                pos += n
        if rc == lib.MNET_DRV_E_NUM_BUFFERS:
            raise QueueBroken(f"device says a frame spans {self._q.q.err[0]} buffers; the ring has {self._q.size}")
        return bool(o.kick)

    def should_kick(self) -> bool:
        return self._q.should_kick()

    def enable_interrupts(self) -> bool:
        return self._q.enable_interrupts()

    def disable_interrupts(self) -> None:
        self._q.disable_interrupts()

    def close(self) -> None:
        self._q.release()
