"""What one of the driver's rings did, as ring trace records (side "driver").

The driver's rings run on the C kernels or on their Python reference, and
both report counts only. What they did is in the ring's memory, which the
driver shares with the device and reads here: the avail ring entries between
the avail idx at the last look and now are the chains the driver added (the
descriptor table says what each holds), the used ring entries between the
last reaped idx then and now are the used entries it reaped. One reader
thus traces both data paths alike, and costs nothing while tracing is off:
the driver calls `mark` at the start of a traced burst and `look` after
each step that publishes or reaps (`traced` runs a burst so), and
`emit_kick` after each publish.

This is exact because the driver alone writes its descriptor table and
avail ring (under its lock, so nothing changes them between a step and its
look), and the device writes a used ring slot again only after the driver
gave that many more buffers. The one window left is a receive poll, which
reaps, gives the buffers back and publishes in one call: `mark` copies the
used entries already there before the call, so only entries the device
pushed during the call are read after it (and the device would have to fill
the whole ring in that time to overwrite one).
"""
from __future__ import annotations

from typing import Callable

from nicdev.virtio.memory import GuestMemory, GuestMemoryError
from nicdev.virtio.ring import (
    DESC_SIZE, DESC_STRUCT, USED_ELEM_STRUCT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
)
from nicdev.virtio.trace import Tracer

__all__ = ["RingWatch", "drop_counts", "emit_drops", "emit_kick", "traced"]

_MAX_CHAIN = 1024       # more descriptors than this in one chain: a loop, stop walking


class RingWatch:
    """Reads one driver ring's memory between looks and emits what changed.

    `queue`: the ring's `DriverQueue` (its geometry; the C kernels may own
    its state); `ring`: the `TxRing`/`RxRing` (C or Python) whose
    `last_used` says how far the driver reaped."""

    def __init__(self, tracer: Tracer, index: int, direction: str, mem: GuestMemory, queue, ring) -> None:
        self.tracer = tracer
        self.index = index
        self.direction = direction
        self.size = queue.size
        self._mask = queue.size - 1
        self._mem = mem
        self._desc_gpa = queue.desc_gpa
        self._avail_gpa = queue.avail_gpa
        self._used_gpa = queue.used_gpa
        self._ring = ring
        self._avail_mark = self._avail_idx()
        self._used_mark = ring.last_used
        self._seen_used: dict[int, tuple[int, int]] = {}
        self.published = 0          # chains the last look saw published

    def _avail_idx(self) -> int:
        return int.from_bytes(self._mem.read(self._avail_gpa + 2, 2), "little")

    def _used_entry(self, idx: int) -> tuple[int, int]:
        return USED_ELEM_STRUCT.unpack(self._mem.read(self._used_gpa + 4 + 8 * (idx & self._mask), 8))

    def mark(self) -> None:
        """Start of a traced burst: what the ring holds now is not news;
        copy the used entries waiting to be reaped (see the module doc)."""
        self._avail_mark = self._avail_idx()
        self._used_mark = last = self._ring.last_used
        used_idx = int.from_bytes(self._mem.read(self._used_gpa + 2, 2), "little")
        pending = min((used_idx - last) & 0xFFFF, self.size)
        self._seen_used = {(last + k) & 0xFFFF: self._used_entry(last + k) for k in range(pending)}

    def look(self) -> None:
        """Emit the used entries reaped and the chains published since the
        last look (or mark), with the index moves."""
        tracer, q, d = self.tracer, self.index, self.direction
        old, new = self._used_mark, self._ring.last_used
        if new != old:
            seen = self._seen_used
            for k in range((new - old) & 0xFFFF):
                idx = (old + k) & 0xFFFF
                head, written = seen.get(idx) or self._used_entry(idx)
                tracer.emit("used", q, d, id=head, len=written)
            tracer.emit("used_idx", q, d, old=old, new=new)
            self._used_mark = new
            self._seen_used = {}
        old, new = self._avail_mark, self._avail_idx()
        self.published = (new - old) & 0xFFFF
        if self.published:
            for k in range(self.published):
                slot = (old + k) & self._mask
                head = int.from_bytes(self._mem.read(self._avail_gpa + 4 + 2 * slot, 2), "little")
                descs, indirect = self.chain(head)
                tracer.emit("chain", q, d, head=head, descs=descs, indirect=indirect,
                            bytes=sum(length for _, length, flags in descs if not flags & VRING_DESC_F_INDIRECT))
            tracer.emit("avail_idx", q, d, old=old, new=new)
            self._avail_mark = new

    def chain(self, head: int) -> tuple[list[list[int]], bool]:
        """The descriptors of the chain at `head`, [addr, len, flags] each; for
        an indirect chain its ring descriptor (flags 4), then the table's
        entries, as the device side records them."""
        read = self._mem.read
        addr, length, flags, nxt = DESC_STRUCT.unpack(read(self._desc_gpa + DESC_SIZE * (head % self.size),
                                                           DESC_SIZE))
        if flags & VRING_DESC_F_INDIRECT:
            try:
                table = read(addr, length - length % DESC_SIZE)
            except GuestMemoryError:        # tracing never breaks the driver: show the ring descriptor
                return [[addr, length, flags]], True
            entries = [DESC_STRUCT.unpack_from(table, off) for off in range(0, len(table), DESC_SIZE)]
            return [[addr, length, flags]] + [[a, n, f] for a, n, f, _ in entries], True
        descs = [[addr, length, flags]]
        while flags & VRING_DESC_F_NEXT and len(descs) < _MAX_CHAIN:
            addr, length, flags, nxt = DESC_STRUCT.unpack(read(self._desc_gpa + DESC_SIZE * (nxt % self.size),
                                                               DESC_SIZE))
            descs.append([addr, length, flags])
        return descs, False


def drop_counts(counters) -> dict[str, int]:
    """The driver's drop counters (named *_drop_*) as they are now."""
    return {name: value for name, value in counters.items() if "_drop_" in name}


def emit_drops(tracer: Tracer, before: dict[str, int], counters, queues: dict[str, int]) -> None:
    """One `drop` record per frame the counters show dropped since `before`.

    The rings count drops by reason only, so `len` is null. `queues` maps
    a direction to its queue index."""
    for name, value in counters.items():
        if "_drop_" not in name:
            continue
        extra = value - before.get(name, 0)
        if extra > 0:
            direction, reason = name.split("_drop_", 1)
            for _ in range(extra):
                tracer.emit("drop", queues.get(direction), direction if direction in queues else None,
                            reason=reason, len=None)


def traced(watch: RingWatch, counters, queues: dict[str, int], step: Callable, *args):
    """Run one burst `step(*args)` with `watch`'s ring watched and the drops
    it counted in `counters` recorded (`queues` as for `emit_drops`); the
    step itself looks after each publish and reap."""
    watch.mark()
    before = drop_counts(counters)
    try:
        return step(*args)
    finally:
        watch.look()
        emit_drops(watch.tracer, before, counters, queues)


def emit_kick(watch: RingWatch, kicked: bool, suppressed_by: str) -> None:
    """A `kick` record if the driver kicked `watch`'s ring, else, if the last
    look saw chains published, a `kick_suppressed` one giving `suppressed_by`
    as the reason the device did not ask for it."""
    if kicked:
        watch.tracer.emit("kick", watch.index, watch.direction)
    elif watch.published:
        watch.tracer.emit("kick_suppressed", watch.index, watch.direction, reason=suppressed_by)
