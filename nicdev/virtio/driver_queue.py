"""The driver half of a split virtqueue: offer buffers, reap used ones.

This is what a guest's virtio driver does, in Python: the stack's NIC driver
uses it over memory it owns and shares with a vhost-user backend, and the
tests use it to drive `DeviceQueue`. Like the device half it holds indices
and addresses only, and takes the `GuestMemory` in each call.

Typical use:

    head = queue.add(mem, [(hdr_gpa, 12), (frame_gpa, n)], [], token=buf)
    queue.publish(mem)                 # one avail idx store for the burst
    if queue.should_kick(mem):
        write_kick_eventfd()
    ...
    for token, written in queue.reap(mem):
        ...

The driver trusts its own arguments (bad ones raise ValueError) but not the
device: a used entry naming a descriptor that is not in flight, or a used idx
running ahead, raises `QueueBroken`.
"""
from __future__ import annotations

from .memory import GuestMemory
from .ring import (
    DESC_SIZE,
    DESC_STRUCT,
    USED_ELEM_STRUCT,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
    QueueBroken,
    avail_ring_bytes,
    check_queue_size,
    memory_barrier,
    used_ring_bytes,
    vring_need_event,
)

__all__ = ["DriverQueue", "QueueFull", "QueueBroken"]

_MAX_CHAIN_BYTES = 0xFFFF_FFFF
_pack_desc = DESC_STRUCT.pack_into
_unpack_used = USED_ELEM_STRUCT.unpack_from


class QueueFull(Exception):
    """Not enough free descriptors for this buffer; reap and try again."""


class DriverQueue:
    """Driver-side state of one split virtqueue."""

    def __init__(self, size: int, desc_gpa: int, avail_gpa: int, used_gpa: int, *, event_idx: bool = False) -> None:
        check_queue_size(size)
        for name, gpa, align in (("descriptor table", desc_gpa, 16), ("available ring", avail_gpa, 2), ("used ring", used_gpa, 4)):
            if not isinstance(gpa, int) or gpa < 0 or gpa % align:
                raise ValueError(f"{name} address {gpa!r} is not a {align}-aligned guest address")
        self.size = size
        self.desc_gpa = desc_gpa
        self.avail_gpa = avail_gpa
        self.used_gpa = used_gpa
        self.event_idx = event_idx
        self._mask = size - 1
        self._desc_bytes = DESC_SIZE * size
        self._avail_bytes = avail_ring_bytes(size, event_idx)
        self._used_bytes = used_ring_bytes(size, event_idx)
        self._used_event_word = 2 + size
        self._avail_event_word = 2 + 4 * size
        self.broken: str | None = None
        self.len_clamped = 0  # used entries whose len exceeded the buffer (device bug)
        self.events = None  # a driver_events.DriverEvents to trace into, or None
        self._reset(0)

    @classmethod
    def from_layout(cls, layout, **kwargs) -> "DriverQueue":
        """A queue over the areas of a `SplitRingLayout`."""
        return cls(layout.queue_size, layout.desc, layout.avail, layout.used, **kwargs)

    def __repr__(self) -> str:
        return (
            f"DriverQueue(size={self.size}, free={len(self._free)}, avail_idx={self._published}, "
            f"last_used={self._last_used}{', broken' if self.broken else ''})"
        )

    def _reset(self, start_idx: int) -> None:
        self._free = list(range(self.size - 1, -1, -1))  # a stack: pops 0, 1, 2, ...
        self._chains: list[list[int] | None] = [None] * self.size  # head -> descriptors it holds
        self._tokens: list[object] = [None] * self.size
        self._capacity = [0] * self.size  # head -> device-writable bytes
        self._avail_idx = start_idx  # next avail slot to fill
        self._published = start_idx  # avail idx as last written to memory
        self._kick_old = start_idx  # avail idx at the last kick decision
        self._last_used = start_idx  # used idx we have reaped up to
        self.broken = None

    def init(self, mem: GuestMemory, *, start_idx: int = 0) -> None:
        """Zero the three ring areas and forget every buffer.

        `start_idx` (normally 0) starts both rings' idx there, e.g. to match a
        vhost-user SET_VRING_BASE, or to test 16-bit wrap-around."""
        if not 0 <= start_idx <= 0xFFFF:
            raise ValueError(f"start_idx {start_idx} is not a 16-bit index")
        mem.write(self.desc_gpa, bytes(self._desc_bytes))
        mem.write(self.avail_gpa, bytes(self._avail_bytes))
        mem.write(self.used_gpa, bytes(self._used_bytes))
        mem.view(self.avail_gpa, self._avail_bytes).cast("H")[1] = start_idx
        mem.view(self.used_gpa, self._used_bytes).cast("H")[1] = start_idx
        self._reset(start_idx)

    def hand_over(self) -> int:
        """Give the queue to another implementation of the driver half (the C
        kernels, `driver_burst_c`): returns the idx both rings are at.

        Only an empty queue (every descriptor free, nothing unpublished) can
        go; afterwards this object refuses every call, so the two never
        write the same ring."""
        self._check_usable()
        if len(self._free) != self.size or self._avail_idx != self._published:
            raise ValueError(f"{self!r} holds buffers; only an empty queue can be handed over")
        self.broken = "handed over to another implementation of the driver"
        return self._last_used

    # -- state --------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Free descriptors."""
        return len(self._free)

    @property
    def in_flight(self) -> int:
        """Buffers added and not yet reaped."""
        return (self._avail_idx - self._last_used) & 0xFFFF

    @property
    def avail_idx(self) -> int:
        """The available idx last published."""
        return self._published

    @property
    def last_used(self) -> int:
        """The used idx we have reaped up to."""
        return self._last_used

    def _check_usable(self) -> None:
        if self.broken is not None:
            raise QueueBroken(self.broken)

    def _fail(self, reason: str) -> QueueBroken:
        if self.broken is None:
            self.broken = reason
        return QueueBroken(reason)

    # -- offering buffers ---------------------------------------------------
    @staticmethod
    def _check_segments(out_segments, in_segments) -> int:
        total = 0
        for gpa, length in (*out_segments, *in_segments):
            if not 0 <= gpa < 1 << 64 or not 0 <= length <= _MAX_CHAIN_BYTES:
                raise ValueError(f"segment {gpa!r}+{length!r} is not a u64 address and u32 length")
            total += length
        if total > _MAX_CHAIN_BYTES:
            raise ValueError(f"buffer of {total} bytes does not fit in a u32 used length")
        return sum(length for _, length in in_segments)

    def _offer(self, mem: GuestMemory, head: int, descs: list[int], capacity: int, token) -> None:
        self._chains[head] = descs
        self._tokens[head] = token
        self._capacity[head] = capacity
        avail = mem.view(self.avail_gpa, self._avail_bytes).cast("H")
        avail[2 + (self._avail_idx & self._mask)] = head
        self._avail_idx = (self._avail_idx + 1) & 0xFFFF

    def add(self, mem: GuestMemory, out_segments, in_segments, token) -> int:
        """Chain (gpa, len) segments into descriptors and queue the head.

        `out_segments` are device-readable, `in_segments` device-writable
        (they follow, as the spec requires). The buffer is invisible to the
        device until `publish`. Returns the head descriptor index; `token`
        comes back from `reap`. Raises QueueFull if descriptors are short."""
        self._check_usable()
        out_segments = list(out_segments)
        in_segments = list(in_segments)
        n = len(out_segments) + len(in_segments)
        if n == 0:
            raise ValueError("a buffer needs at least one segment")
        capacity = self._check_segments(out_segments, in_segments)
        if n > len(self._free):
            raise QueueFull(f"{n} descriptors needed, {len(self._free)} free")
        free = self._free
        descs = free[-n:]
        descs.reverse()
        del free[-n:]
        table = mem.view(self.desc_gpa, self._desc_bytes)
        n_out = len(out_segments)
        last = n - 1
        for i, (gpa, length) in enumerate((*out_segments, *in_segments)):
            flags = VRING_DESC_F_WRITE if i >= n_out else 0
            nxt = 0
            if i < last:
                flags |= VRING_DESC_F_NEXT
                nxt = descs[i + 1]
            _pack_desc(table, descs[i] * DESC_SIZE, gpa, length, flags, nxt)
        self._offer(mem, descs[0], descs, capacity, token)
        if self.events is not None:
            self._trace_add(descs[0], n, out_segments, in_segments, capacity)
        return descs[0]

    def _trace_add(self, head: int, ndesc: int, out_segments: list, in_segments: list, capacity: int) -> None:
        if in_segments:
            self.events.add(self.events.RX_POST, head, capacity)
        else:
            self.events.add(self.events.TX_ADD, head, sum(n for _, n in out_segments), ndesc)

    def add_indirect(self, mem: GuestMemory, table_gpa: int, out_segments, in_segments, token) -> int:
        """Like `add`, but the segments go into an indirect table at `table_gpa`.

        Uses one ring descriptor whatever the segment count. The caller owns
        the table's memory (16 bytes per segment) until the buffer is reaped;
        the device must have negotiated VIRTIO_F_RING_INDIRECT_DESC."""
        self._check_usable()
        out_segments = list(out_segments)
        in_segments = list(in_segments)
        n = len(out_segments) + len(in_segments)
        if not 0 < n <= self.size:
            raise ValueError(f"an indirect table holds 1 to {self.size} segments, not {n}")
        capacity = self._check_segments(out_segments, in_segments)
        if not self._free:
            raise QueueFull("no free descriptor for the indirect table")
        table = bytearray(n * DESC_SIZE)
        n_out = len(out_segments)
        for i, (gpa, length) in enumerate((*out_segments, *in_segments)):
            flags = VRING_DESC_F_WRITE if i >= n_out else 0
            if i < n - 1:
                flags |= VRING_DESC_F_NEXT
            _pack_desc(table, i * DESC_SIZE, gpa, length, flags, i + 1 if i < n - 1 else 0)
        mem.write(table_gpa, table)
        head = self._free.pop()
        ring = mem.view(self.desc_gpa, self._desc_bytes)
        _pack_desc(ring, head * DESC_SIZE, table_gpa, len(table), VRING_DESC_F_INDIRECT, 0)
        self._offer(mem, head, [head], capacity, token)
        if self.events is not None:
            self._trace_add(head, n, out_segments, in_segments, capacity)
        return head

    def publish(self, mem: GuestMemory) -> int:
        """Make everything added so far visible with one avail idx store.

        Returns how many buffers this published. Descriptors and ring entries
        were stored before the idx, and x86 keeps stores in order."""
        self._check_usable()
        added = (self._avail_idx - self._published) & 0xFFFF
        if added:
            mem.view(self.avail_gpa, self._avail_bytes).cast("H")[1] = self._avail_idx
            self._published = self._avail_idx
        return added

    def should_kick(self, mem: GuestMemory) -> bool:
        """Does the device want a kick for what was published since the last check?

        False when nothing was published since. With EVENT_IDX: only if the
        avail idx passed the device's avail_event; without: unless the device
        set VRING_USED_F_NO_NOTIFY."""
        self._check_usable()
        new, old = self._published, self._kick_old
        self._kick_old = new
        if new == old:
            return False
        memory_barrier()  # our idx store must be visible before we read the device's field
        used = mem.view(self.used_gpa, self._used_bytes).cast("H")
        if self.event_idx:
            kick = vring_need_event(used[self._avail_event_word], new, old)
        else:
            kick = not used[0] & VRING_USED_F_NO_NOTIFY
        if self.events is not None:
            self.events.add(self.events.KICK if kick else self.events.NO_KICK, new, 0)
        return kick

    # -- used buffers -------------------------------------------------------
    def pending_used(self, mem: GuestMemory) -> int:
        """Used entries the device has published that we have not reaped."""
        self._check_usable()
        used_idx = mem.view(self.used_gpa, self._used_bytes).cast("H")[1]
        return self._pending_used(used_idx)

    def _pending_used(self, used_idx: int) -> int:
        pending = (used_idx - self._last_used) & 0xFFFF
        offered = (self._published - self._last_used) & 0xFFFF
        if pending > offered:
            raise self._fail(f"device used idx {used_idx} is {pending} ahead of {self._last_used}, only {offered} buffers published")
        return pending

    def reap(self, mem: GuestMemory, heads: list | None = None) -> list[tuple[object, int]]:
        """Take every used entry since the last reap: [(token, written_len)].

        Frees their descriptors. A written length above the buffer's capacity
        is clamped (and counted in `len_clamped`); an id that is not a
        buffer in flight raises QueueBroken. `heads`: a list to append each
        entry's id to (the caller then traces the entries; else, with
        `events`, each is traced here as USED)."""
        self._check_usable()
        used = mem.view(self.used_gpa, self._used_bytes)
        pending = self._pending_used(used.cast("H")[1])
        if not pending:
            return []
        done = []
        idx = self._last_used
        mask = self._mask
        chains, tokens, capacity, free = self._chains, self._tokens, self._capacity, self._free
        for _ in range(pending):
            head, written = _unpack_used(used, 4 + 8 * (idx & mask))
            if head >= self.size or chains[head] is None:
                self._last_used = idx
                raise self._fail(f"used entry {idx} names descriptor {head}, which is not a buffer in flight")
            if written > capacity[head]:
                self.len_clamped += 1
                written = capacity[head]
            done.append((tokens[head], written))
            if heads is not None:
                heads.append(head)
            elif self.events is not None:
                self.events.add(self.events.USED, head, written)
            free.extend(chains[head])
            chains[head] = None
            tokens[head] = None
            idx = (idx + 1) & 0xFFFF
        self._last_used = idx
        return done

    def enable_interrupts(self, mem: GuestMemory) -> bool:
        """Ask the device to signal when it uses the next buffer.

        Returns True if used entries are already waiting: the device may have
        pushed them before it saw the enable, so reap them now."""
        self._check_usable()
        avail = mem.view(self.avail_gpa, self._avail_bytes).cast("H")
        if self.event_idx:
            avail[self._used_event_word] = self._last_used
        else:
            avail[0] &= ~VRING_AVAIL_F_NO_INTERRUPT & 0xFFFF
        memory_barrier()  # the enable must be visible before we re-read used idx
        return self.pending_used(mem) > 0

    def disable_interrupts(self, mem: GuestMemory) -> None:
        """Tell the device that used-buffer signals are not needed for now.

        Without EVENT_IDX this sets VRING_AVAIL_F_NO_INTERRUPT. With EVENT_IDX
        (avail.flags must stay 0) used_event is set one behind what we have
        reaped, the value the device's index reaches last."""
        self._check_usable()
        avail = mem.view(self.avail_gpa, self._avail_bytes).cast("H")
        if self.event_idx:
            avail[self._used_event_word] = (self._last_used - 1) & 0xFFFF
        else:
            avail[0] |= VRING_AVAIL_F_NO_INTERRUPT
