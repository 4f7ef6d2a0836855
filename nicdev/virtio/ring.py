"""Split virtqueue layout (virtio 1.x, "Split Virtqueues"), shared by both halves.

A split virtqueue is three areas of guest memory, all little-endian:

    descriptor table  16 * size bytes, 16-aligned   struct {u64 addr; u32 len; u16 flags; u16 next}
    available ring    6 + 2 * size,     2-aligned   {u16 flags; u16 idx; u16 ring[size]; u16 used_event}
    used ring         6 + 8 * size,     4-aligned   {u16 flags; u16 idx; {u32 id; u32 len} ring[size]; u16 avail_event}

The driver writes the table and the available ring, the device writes the used
ring. `idx` fields run freely and wrap at 65536; a slot is `idx % size`.
`used_event`/`avail_event` exist only with VIRTIO_F_RING_EVENT_IDX.

Fields that the other side reads while we write them (the idx, flags and event
fields) are accessed through native 16-bit memoryview casts, so each is one
aligned 16-bit load or store and never seen half-written. Descriptors and used
elements are published by a later idx store, so `struct` is fine for them.
"""
from __future__ import annotations

import struct
import sys
import threading
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "QueueBroken",
    "Descriptor",
    "DESC_SIZE",
    "USED_ELEM_SIZE",
    "MAX_QUEUE_SIZE",
    "VRING_DESC_F_NEXT",
    "VRING_DESC_F_WRITE",
    "VRING_DESC_F_INDIRECT",
    "VRING_AVAIL_F_NO_INTERRUPT",
    "VRING_USED_F_NO_NOTIFY",
    "SplitRingLayout",
    "check_queue_size",
    "avail_ring_bytes",
    "used_ring_bytes",
    "vring_need_event",
    "pack_descriptor",
    "unpack_descriptor",
    "memory_barrier",
]

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("nicdev.virtio accesses ring fields natively and needs a little-endian host")

DESC_SIZE = 16
USED_ELEM_SIZE = 8
MAX_QUEUE_SIZE = 32768

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4

VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1

DESC_STRUCT = struct.Struct("<QIHH")
USED_ELEM_STRUCT = struct.Struct("<II")


class QueueBroken(Exception):
    """The other side broke the ring's rules; the queue must not be used again.

    `reason` says what was wrong (which index, which address) so that a log
    line or a trace explains why the device stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Descriptor(NamedTuple):
    """One decoded descriptor-table entry."""

    addr: int
    len: int
    flags: int
    next: int


def pack_descriptor(addr: int, length: int, flags: int = 0, next: int = 0) -> bytes:
    """The 16 bytes of one descriptor."""
    return DESC_STRUCT.pack(addr, length, flags, next)


def unpack_descriptor(data, offset: int = 0) -> Descriptor:
    """Decode the descriptor at `offset` of a buffer."""
    return Descriptor(*DESC_STRUCT.unpack_from(data, offset))


def check_queue_size(size: int) -> int:
    """Return `size` if it is a valid split-queue size, else raise ValueError."""
    if not isinstance(size, int) or size <= 0 or size > MAX_QUEUE_SIZE or size & (size - 1):
        raise ValueError(f"queue size must be a power of two from 1 to {MAX_QUEUE_SIZE}, not {size!r}")
    return size


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """True if moving an index from `old_idx` to `new_idx` passed `event_idx`.

    The EVENT_IDX rule: the other side asked to be notified once the entry at
    `event_idx` is written, i.e. when event_idx lies in [old_idx, new_idx),
    counted modulo 2**16."""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


def avail_ring_bytes(size: int, event_idx: bool = True) -> int:
    """Bytes of an available ring (with the trailing used_event if `event_idx`)."""
    return 4 + 2 * size + (2 if event_idx else 0)


def used_ring_bytes(size: int, event_idx: bool = True) -> int:
    """Bytes of a used ring (with the trailing avail_event if `event_idx`)."""
    return 4 + USED_ELEM_SIZE * size + (2 if event_idx else 0)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


@dataclass(frozen=True)
class SplitRingLayout:
    """Where the three parts of a split ring go when packed from `base`.

    Alignments are the 1.x minimums (16/2/4) and sizes include the event
    fields, as the 1.x size table does, so the layout works with or without
    EVENT_IDX.

    >>> SplitRingLayout(256, 0x1000).used
    8712
    """

    queue_size: int
    base: int = 0

    def __post_init__(self) -> None:
        check_queue_size(self.queue_size)
        if self.base < 0:
            raise ValueError(f"negative base address {self.base:#x}")

    @property
    def desc(self) -> int:
        """GPA of the descriptor table."""
        return _align(self.base, 16)

    @property
    def avail(self) -> int:
        """GPA of the available ring."""
        return self.desc + DESC_SIZE * self.queue_size

    @property
    def used(self) -> int:
        """GPA of the used ring."""
        return _align(self.avail + avail_ring_bytes(self.queue_size), 4)

    @property
    def end(self) -> int:
        """First GPA after the used ring."""
        return self.used + used_ring_bytes(self.queue_size)

    @property
    def total_size(self) -> int:
        """Bytes from `base` to `end`, alignment padding included."""
        return self.end - self.base


# A full fence orders our last store before our next load (needed before
# reading the other side's event/flags field after publishing an index). x86
# keeps stores in order and loads in order but may let a load pass a store;
# any locked instruction stops that, and acquiring and releasing a CPython lock
# runs one (an atomic compare-and-exchange in the semaphore or mutex).
_fence_lock = threading.Lock()


def memory_barrier() -> None:
    """A full memory barrier between our stores and our following loads."""
    _fence_lock.acquire()
    _fence_lock.release()

