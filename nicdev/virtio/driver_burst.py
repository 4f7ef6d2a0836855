"""A virtio-net driver's two rings in bursts: frames into TX slots, frames out of RX buffers.

The stack's NIC driver keeps its buffers in a pool of memory it shares with
the device: TX slots (a 12-byte virtio_net_hdr and one frame each, one
descriptor) and RX buffers (one descriptor each; with MRG_RXBUF a frame may
span several, as its header's num_buffers says). `TxRing` and `RxRing` are
those two rings over a `DriverQueue`, in Python: the readable reference.
`driver_burst_c.CTxRing`/`CRxRing` do the same in C (`csrc/driver_burst.c`)
and the differential tests hold the two to identical results;
`driver_rings.tx_ring()`/`rx_ring()` pick one by the selected data path
(`MNET_DATAPATH`).

TX: `put` copies a burst of frames (a list, or a `TxFrames` joined once)
into free small slots and queues them,
stopping at the first frame that finds none (the caller publishes, kicks,
`reap`s, maybe `lend_big`s, and calls again from there); `publish` makes the
burst visible with one avail idx store and `should_kick` decides the kick
(`flush` does both).
RX: `fill` offers every buffer once; `poll` reaps what the device used,
copies finished frames out with their headers, gives the buffers straight
back and publishes them; it returns whether to kick.

Counters go into the caller's `collections.Counter` under the names the
driver reports (only when not zero, so a drop counter exists once it counted).

`events`: a `driver_events.DriverEvents` to trace the ring's work into (None:
no trace), the same records on both data paths.
"""
from __future__ import annotations

import collections
from array import array

from .driver_events import DriverEvents
from .driver_queue import DriverQueue, QueueFull
from .memory import GuestMemory
from .ring import QueueBroken

__all__ = [
    "HDR_LEN", "ETH_HEADER_LEN", "TX_PLAIN", "TX_BAD_CSUM", "TX_SW_CSUM",
    "TxFrames", "TxRing", "RxRing", "tx_slot_stacks",
]

HDR_LEN = 12            # virtio_net_hdr with VERSION_1, mergeable or not
ETH_HEADER_LEN = 14

# What `put` does with each frame of a burst (`kinds`; None: all TX_PLAIN).
TX_PLAIN = 0
TX_BAD_CSUM = 1         # refused once it has a slot: its checksum offsets lie outside it
TX_SW_CSUM = 2          # its checksum was finished in software: counted when it is taken

_ZERO_HDR = bytes(HDR_LEN)


def tx_slot_stacks(nslots: int, small: int, split_big: bool) -> tuple[list[int], list[int]]:
    """The free small and big slot stacks at the start (both pop the lowest first).

    With `split_big` the slots from `small` on are kept for GSO frames;
    without, every slot is an ordinary one."""
    if split_big:
        return list(range(small - 1, -1, -1)), list(range(nslots - 1, small - 1, -1))
    return list(range(nslots - 1, -1, -1)), []


class TxFrames:
    """A burst of frames for `TxRing.put`, joined into one buffer with a
    length per frame: what the C kernel reads. Built once, it can be put any
    number of times without a Python step per frame (`put` given a plain
    list joins it on every call)."""

    __slots__ = ("frames", "blob", "lens")

    def __init__(self, frames) -> None:
        self.frames = list(frames)
        self.blob = b"".join(self.frames)
        self.lens = array("I", map(len, self.frames))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        return self.frames[index]


def _add_counts(counters: collections.Counter, **counts: int) -> None:
    for name, value in counts.items():
        if value:
            counters[name] += value


class TxRing:
    """The driver's TX ring in Python (the reference; see the module doc).

    `slot_offsets`/`slot_lengths`: where each slot lies in the pool at
    `pool_gpa`; slots from `small` on are big (GSO) ones, kept apart only if
    `split_big`. Frames longer than `max_frame` or shorter than an Ethernet
    header are dropped and counted."""

    def __init__(self, queue: DriverQueue, mem: GuestMemory, pool_gpa: int, slot_offsets: list[int],
                 slot_lengths: list[int], small: int, split_big: bool, max_frame: int,
                 events: DriverEvents | None = None) -> None:
        queue.events = events
        self.queue = queue
        self.mem = mem
        self.pool_gpa = pool_gpa
        self.pool = mem.view(pool_gpa, max(o + n for o, n in zip(slot_offsets, slot_lengths)))
        self.slot_off = list(slot_offsets)
        self.slot_len = list(slot_lengths)
        self.small = small
        self.split_big = split_big
        self.max_frame = max_frame
        self._small_free, self._big_free = tx_slot_stacks(len(slot_offsets), small, split_big)

    @property
    def used_gpa(self) -> int:
        return self.queue.used_gpa

    @property
    def last_used(self) -> int:
        return self.queue.last_used

    @property
    def len_clamped(self) -> int:
        return self.queue.len_clamped

    @property
    def small_free(self) -> int:
        """Free ordinary slots."""
        return len(self._small_free)

    @property
    def big_free(self) -> int:
        """Free big (GSO) slots."""
        return len(self._big_free)

    def _check_usable(self) -> None:
        if self.queue.broken is not None:
            raise QueueBroken(self.queue.broken)

    def _put_slot(self, slot: int, frame, hdr: bytes | None) -> None:
        off, n = self.slot_off[slot], len(frame)
        if HDR_LEN + n > self.slot_len[slot]:
            raise ValueError(f"a {n}-byte frame does not fit TX slot {slot}")
        self.pool[off:off + HDR_LEN] = _ZERO_HDR if hdr is None else hdr
        self.pool[off + HDR_LEN:off + HDR_LEN + n] = frame
        self.queue.add(self.mem, ((self.pool_gpa + off, HDR_LEN + n),), (), slot)

    def put(self, frames: list, hdrs: bytes | None, kinds: bytes | None, start: int,
            counters: collections.Counter) -> tuple[int, int]:
        """Queue frames[start:] (unpublished) until no small slot is free.

        `frames`: a list of frames or a `TxFrames`. `hdrs`: 12 header
        bytes per frame (None: all zero); `kinds`: one
        TX_* byte per frame (None: all TX_PLAIN). Returns (the index of the
        frame that found no slot, or len(frames); frames taken)."""
        self._check_usable()
        free, max_frame = self._small_free, self.max_frame
        taken = nbytes = oversize = runt = bad_csum = sw_csum = 0
        stop = len(frames)
        for i in range(start, len(frames)):
            frame = frames[i]
            n = len(frame)
            if n > max_frame:
                oversize += 1
                continue
            if n < ETH_HEADER_LEN:
                runt += 1
                continue
            if not free:
                stop = i
                break
            kind = kinds[i] if kinds is not None else TX_PLAIN
            if kind == TX_BAD_CSUM:
                bad_csum += 1
                continue
            if not self.queue.num_free:
                raise QueueFull("no free descriptor for a free TX slot")
            slot = free.pop()
            self._put_slot(slot, frame, None if hdrs is None else hdrs[HDR_LEN * i:HDR_LEN * (i + 1)])
            taken += 1
            nbytes += n
            sw_csum += kind == TX_SW_CSUM
        if taken:
            counters["tx_frames"] += taken
            counters["tx_bytes"] += nbytes
        if oversize or runt or bad_csum or sw_csum:
            _add_counts(counters, tx_drop_oversize=oversize, tx_drop_runt=runt, tx_drop_bad_csum_offsets=bad_csum,
                        tx_sw_csum=sw_csum)
        return stop, taken

    def put_one(self, big: bool, frame, hdr: bytes | None) -> int | None:
        """One frame into a free big (or small) slot; its slot, or None if none is free."""
        self._check_usable()
        free = self._big_free if big else self._small_free
        if not free or not self.queue.num_free:
            return None
        slot = free[-1]
        if HDR_LEN + len(frame) > self.slot_len[slot]:
            raise ValueError(f"a {len(frame)}-byte frame does not fit TX slot {slot}")
        free.pop()
        self._put_slot(slot, frame, hdr)
        return slot

    def lend_big(self) -> bool:
        """Move a free big slot to the small ones (reaping gives it back); False if none."""
        if not self._big_free:
            return False
        self._small_free.append(self._big_free.pop())
        return True

    def reap(self) -> int:
        """Take back the slots the device has used; how many."""
        done = self.queue.reap(self.mem)
        small, free, big = self.small, self._small_free, self._big_free
        for slot, _ in done:
            (big if self.split_big and slot >= small else free).append(slot)
        return len(done)

    def publish(self) -> int:
        return self.queue.publish(self.mem)

    def should_kick(self) -> bool:
        return self.queue.should_kick(self.mem)

    def flush(self) -> bool:
        """`publish`, then `should_kick`: the end of a burst."""
        self.queue.publish(self.mem)
        return self.queue.should_kick(self.mem)

    def disable_interrupts(self) -> None:
        self.queue.disable_interrupts(self.mem)

    def close(self) -> None:
        self.pool.release()


class RxRing:
    """The driver's RX ring in Python (the reference; see the module doc).

    One buffer of `buf_size` bytes per descriptor, buffer i at `pool_gpa +
    i * buf_size`. `mrg`: MRG_RXBUF was negotiated (num_buffers counts)."""

    def __init__(self, queue: DriverQueue, mem: GuestMemory, pool_gpa: int, buf_size: int, mrg: bool,
                 events: DriverEvents | None = None) -> None:
        queue.events = events
        self.queue = queue
        self.mem = mem
        self.pool_gpa = pool_gpa
        self.buf_size = buf_size
        self.mrg = mrg
        self.pool = mem.view(pool_gpa, queue.size * buf_size)
        # A mergeable frame whose first buffers came: [header, pieces, buffers still missing].
        self.partial: list | None = None

    @property
    def used_gpa(self) -> int:
        return self.queue.used_gpa

    @property
    def last_used(self) -> int:
        return self.queue.last_used

    @property
    def len_clamped(self) -> int:
        return self.queue.len_clamped

    def _give(self, slot: int) -> None:
        size = self.buf_size
        self.queue.add(self.mem, (), ((self.pool_gpa + slot * size, size),), slot)

    def fill(self) -> None:
        """Offer every buffer and publish them (the caller decides the kick)."""
        for slot in range(self.queue.size):
            self._give(slot)
        self.queue.publish(self.mem)

    def poll(self, out: list, counters: collections.Counter) -> bool:
        """Append (frame, 12-byte header) for each finished frame to `out`,
        give the used buffers back; returns whether to kick.

        A header claiming more buffers than the ring has raises QueueBroken
        (the frames before it are in `out`)."""
        events = self.queue.events
        heads = None if events is None else []      # traced here, with their num_buffers
        used = self.queue.reap(self.mem, heads)
        if not used:
            return False
        pool, size = self.pool, self.buf_size
        counters["rx_buffers"] += len(used)
        short = bad_nbuf = 0
        partial = self.partial
        for k, (slot, written) in enumerate(used):
            off = slot * size
            if partial is not None:             # a continuation buffer of a mergeable frame
                if events is not None:
                    events.add(events.RX_USED, heads[k], written, 0)
                partial[1].append(bytes(pool[off:off + written]))
                partial[2] -= 1
                if not partial[2]:
                    out.append((b"".join(partial[1]), partial[0]))
                    partial = None
                continue
            if written < HDR_LEN:
                if events is not None:
                    events.add(events.RX_USED, heads[k], written, 0)
                short += 1
                continue
            hdr = bytes(pool[off:off + HDR_LEN])
            data = bytes(pool[off + HDR_LEN:off + written])
            nbuf = int.from_bytes(hdr[10:12], "little")
            if events is not None:
                events.add(events.RX_USED, heads[k], written, nbuf)
            if self.mrg and nbuf != 1:
                if nbuf == 0:
                    bad_nbuf += 1               # device bug; treat as 1
                elif nbuf > self.queue.size:
                    self.partial = partial
                    _add_counts(counters, rx_drop_short_buffer=short, rx_bad_num_buffers=bad_nbuf)
                    raise QueueBroken(f"device says a frame spans {nbuf} buffers; the ring has {self.queue.size}")
                else:
                    partial = [hdr, [data], nbuf - 1]
                    continue
            out.append((data, hdr))
        self.partial = partial
        if short or bad_nbuf:
            _add_counts(counters, rx_drop_short_buffer=short, rx_bad_num_buffers=bad_nbuf)
        for slot, _ in used:
            self._give(slot)
        self.queue.publish(self.mem)
        return self.queue.should_kick(self.mem)

    def should_kick(self) -> bool:
        return self.queue.should_kick(self.mem)

    def enable_interrupts(self) -> bool:
        return self.queue.enable_interrupts(self.mem)

    def disable_interrupts(self) -> None:
        self.queue.disable_interrupts(self.mem)

    def close(self) -> None:
        self.pool.release()
