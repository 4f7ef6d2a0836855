"""The device half of a split virtqueue: pop descriptor chains, push used buffers.

Like rust-vmm's virtio-queue, a `DeviceQueue` holds indices and addresses
only; the `GuestMemory` is passed into every call, so a new memory table
(vhost-user SET_MEM_TABLE) never leaves a queue holding stale mappings.

Nothing read from the ring is trusted. Whatever the driver wrote, `pop()`
returns a chain whose every segment lies inside guest memory, or raises
`QueueBroken` and marks the queue broken; it never loops forever and never
touches memory outside the regions.

Typical device loop (the re-check after enabling closes the race where the
driver adds a buffer between our last pop and the enable, sees notifications
still disabled, and never kicks):

    while True:
        queue.disable_notifications(mem)
        while (chain := queue.pop(mem)) is not None:
            ...
            queue.push(mem, chain.head, written)
        if not queue.enable_notifications(mem):   # False: still empty
            break
    if queue.needs_notification(mem):
        signal_call_eventfd()
"""
from __future__ import annotations

from array import array

from .memory import GuestMemory, GuestMemoryError
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

__all__ = ["DeviceQueue", "DescriptorChain", "QueueBroken", "MAX_CHAIN_BYTES"]

# used.len is a u32, so a chain must be describable in 32 bits (the spec
# forbids chains longer than 2**32 bytes; we also refuse exactly 2**32).
MAX_CHAIN_BYTES = 0xFFFF_FFFF

_unpack_desc = DESC_STRUCT.unpack_from

# Slots of DeviceQueue.state; -1 in the last two means "not known yet".
STATE_NEXT_AVAIL, STATE_USED_IDX, STATE_SIGNALLED_USED = 0, 1, 2


class DescriptorChain:
    """One buffer popped from the available ring.

    `readable` and `writable` are lists of (gpa, len) segments, in chain
    order, each already checked to lie wholly inside guest memory (empty
    descriptors are dropped). `head` is what goes back in the used ring."""

    __slots__ = ("head", "readable", "writable", "readable_len", "writable_len", "desc_count", "indirect")

    def __init__(
        self,
        head: int,
        readable: list[tuple[int, int]],
        writable: list[tuple[int, int]],
        readable_len: int,
        writable_len: int,
        desc_count: int,
        indirect: bool,
    ) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = readable_len
        self.writable_len = writable_len
        self.desc_count = desc_count  # descriptors walked (the indirect pointer included)
        self.indirect = indirect

    def __repr__(self) -> str:
        return (
            f"DescriptorChain(head={self.head}, readable={self.readable}, writable={self.writable}, "
            f"descs={self.desc_count}{', indirect' if self.indirect else ''})"
        )

    def read(self, mem: GuestMemory) -> bytes:
        """All device-readable bytes, concatenated."""
        try:
            if len(self.readable) == 1:
                gpa, n = self.readable[0]
                return mem.read(gpa, n)
            return b"".join([mem.read(gpa, n) for gpa, n in self.readable])
        except GuestMemoryError as e:
            raise QueueBroken(f"chain {self.head}: readable buffer no longer in guest memory: {e}") from None

    def read_into(self, mem: GuestMemory, out, offset: int = 0) -> int:
        """Copy readable bytes, starting `offset` bytes into them, into `out`.

        Returns the number of bytes copied: min(len(out), readable_len - offset)."""
        out = memoryview(out).cast("B")
        pos = 0
        try:
            for gpa, pos, take in _pieces(self.readable, self.readable_len, offset, len(out)):
                mem.read_into(gpa, out[pos : pos + take])
                pos += take
        except GuestMemoryError as e:
            raise QueueBroken(f"chain {self.head}: readable buffer no longer in guest memory: {e}") from None
        return pos

    def write(self, mem: GuestMemory, data, offset: int = 0) -> int:
        """Scatter `data` into the writable segments, starting `offset` bytes in.

        Never writes past the chain's capacity; returns the bytes written,
        which is less than len(data) when the chain is too small."""
        data = memoryview(data).cast("B")
        pos = 0
        try:
            for gpa, pos, take in _pieces(self.writable, self.writable_len, offset, len(data)):
                mem.write(gpa, data[pos : pos + take])
                pos += take
        except GuestMemoryError as e:
            raise QueueBroken(f"chain {self.head}: writable buffer no longer in guest memory: {e}") from None
        return pos


def _pieces(segments, capacity: int, offset: int, size: int):
    """Walk (gpa, len) segments from byte `offset` for at most `size` bytes.

    Yields (gpa, position in the caller's buffer, byte count) for each piece;
    the walk that both gathering (read) and scattering (write) need."""
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    want = min(size, max(0, capacity - offset))
    pos = 0
    for gpa, n in segments:
        if pos >= want:
            break
        if offset >= n:
            offset -= n
            continue
        take = min(n - offset, want - pos)
        yield gpa + offset, pos, take
        pos += take
        offset = 0


class DeviceQueue:
    """Device-side state of one split virtqueue.

    `next_avail` is the index of the next available-ring entry to pop (what
    vhost-user GET_VRING_BASE returns and SET_VRING_BASE sets). `used_idx`
    None means "read the used ring's idx from memory at first use", which is
    how a reconnecting backend picks up where the previous one stopped.
    """

    def __init__(
        self,
        size: int,
        desc_gpa: int,
        avail_gpa: int,
        used_gpa: int,
        *,
        event_idx: bool = False,
        indirect: bool = True,
        next_avail: int = 0,
        used_idx: int | None = None,
    ) -> None:
        check_queue_size(size)
        for name, gpa, align in (("descriptor table", desc_gpa, 16), ("available ring", avail_gpa, 2), ("used ring", used_gpa, 4)):
            if not isinstance(gpa, int) or gpa < 0 or gpa % align:
                raise ValueError(f"{name} address {gpa!r} is not a {align}-aligned guest address")
        if not 0 <= next_avail <= 0xFFFF:
            raise ValueError(f"next_avail {next_avail} is not a 16-bit index")
        if used_idx is not None and not 0 <= used_idx <= 0xFFFF:
            raise ValueError(f"used_idx {used_idx} is not a 16-bit index")
        self.size = size
        self.desc_gpa = desc_gpa
        self.avail_gpa = avail_gpa
        self.used_gpa = used_gpa
        self.event_idx = event_idx
        self.indirect = indirect
        self.broken: str | None = None  # why the queue stopped, once it has
        self._mask = size - 1
        self._desc_bytes = DESC_SIZE * size
        self._avail_bytes = avail_ring_bytes(size, event_idx)
        self._used_bytes = used_ring_bytes(size, event_idx)
        self._used_event_word = 2 + size  # u16 index of used_event in the avail ring
        self._avail_event_word = 2 + 4 * size  # u16 index of avail_event in the used ring
        # The indices live in one small array of C ints that the C kernels
        # (nicdev.virtio.device_burst) read and write too, so either data path
        # can run the next call: next_avail, used_idx, and the used idx at the
        # last notification decision.
        self.state = array("i", (next_avail, -1 if used_idx is None else used_idx, -1))

    @classmethod
    def from_layout(cls, layout, **kwargs) -> "DeviceQueue":
        """A queue over the areas of a `SplitRingLayout`."""
        return cls(layout.queue_size, layout.desc, layout.avail, layout.used, **kwargs)

    def __repr__(self) -> str:
        state = f"broken: {self.broken}" if self.broken else f"next_avail={self.next_avail} used_idx={self.used_idx}"
        return f"DeviceQueue(size={self.size}, desc={self.desc_gpa:#x}, avail={self.avail_gpa:#x}, used={self.used_gpa:#x}, {state})"

    # -- state --------------------------------------------------------------
    @property
    def next_avail(self) -> int:
        """Index of the next available entry to pop (GET_VRING_BASE)."""
        return self.state[STATE_NEXT_AVAIL]

    @property
    def used_idx(self) -> int | None:
        """Our used idx, or None if not yet read from memory."""
        used_idx = self.state[STATE_USED_IDX]
        return None if used_idx < 0 else used_idx

    def mark_broken(self, reason: str) -> None:
        """Stop using the queue; every later data-path call raises QueueBroken."""
        if self.broken is None:
            self.broken = reason

    def _fail(self, reason: str) -> QueueBroken:
        self.mark_broken(reason)
        return QueueBroken(reason)

    def _check_usable(self) -> None:
        if self.broken is not None:
            raise QueueBroken(self.broken)

    def _avail(self, mem: GuestMemory) -> memoryview:
        try:
            return mem.view(self.avail_gpa, self._avail_bytes).cast("H")
        except GuestMemoryError as e:
            raise self._fail(f"available ring at {self.avail_gpa:#x} is not in guest memory: {e}") from None

    def _used(self, mem: GuestMemory) -> memoryview:
        try:
            return mem.view(self.used_gpa, self._used_bytes)
        except GuestMemoryError as e:
            raise self._fail(f"used ring at {self.used_gpa:#x} is not in guest memory: {e}") from None

    def _pending(self, avail: memoryview) -> int:
        next_avail = self.state[STATE_NEXT_AVAIL]
        pending = (avail[1] - next_avail) & 0xFFFF
        if pending > self.size:
            raise self._fail(
                f"available idx {avail[1]} is {pending} entries ahead of {next_avail}, more than the queue size {self.size}"
            )
        return pending

    # -- available side -----------------------------------------------------
    def avail_count(self, mem: GuestMemory) -> int:
        """Entries the driver has made available that we have not popped."""
        self._check_usable()
        return self._pending(self._avail(mem))

    def pop(self, mem: GuestMemory, descs: list | None = None) -> DescriptorChain | None:
        """The next available descriptor chain, or None if there is none.

        `descs` (a list, for a trace): each descriptor walked is appended as
        [addr, len, flags], the indirect pointer and then its table's.
        Raises QueueBroken (and marks the queue broken) if the ring or the
        chain breaks the rules."""
        self._check_usable()
        avail = self._avail(mem)
        if not self._pending(avail):
            return None
        state = self.state
        head = avail[2 + (state[STATE_NEXT_AVAIL] & self._mask)]
        try:
            chain = self._walk(mem, head, descs)
        except QueueBroken as e:
            self.mark_broken(e.reason)
            raise
        state[STATE_NEXT_AVAIL] = (state[STATE_NEXT_AVAIL] + 1) & 0xFFFF
        return chain

    def _walk(self, mem: GuestMemory, head: int, descs: list | None = None) -> DescriptorChain:
        """Follow a chain, copying each descriptor once, trusting nothing."""
        size = self.size
        if head >= size:
            raise QueueBroken(f"available entry {self.next_avail} names descriptor {head}, queue size is {size}")
        try:
            table = mem.view(self.desc_gpa, self._desc_bytes)
        except GuestMemoryError as e:
            raise QueueBroken(f"descriptor table at {self.desc_gpa:#x} is not in guest memory: {e}") from None
        check = mem.check
        readable: list[tuple[int, int]] = []
        writable: list[tuple[int, int]] = []
        readable_len = writable_len = 0
        entries = size  # descriptors in the table being walked
        steps = 0  # descriptors walked in that table: more than `entries` means a loop
        walked = 0
        indirect = False
        seen_write = False
        idx = head
        while True:
            steps += 1
            if steps > entries:
                where = "indirect table" if indirect else "chain"
                raise QueueBroken(f"chain {head}: {where} longer than {entries} descriptors (a loop?)")
            addr, length, flags, nxt = _unpack_desc(table, idx * DESC_SIZE)
            walked += 1
            if descs is not None:
                descs.append([addr, length, flags])
            if flags & VRING_DESC_F_INDIRECT:
                if indirect:
                    raise QueueBroken(f"chain {head}: indirect descriptor inside an indirect table")
                if not self.indirect:
                    raise QueueBroken(f"chain {head}: indirect descriptor but INDIRECT_DESC was not negotiated")
                if flags & VRING_DESC_F_NEXT:
                    raise QueueBroken(f"chain {head}: descriptor {idx} has both INDIRECT and NEXT")
                if length == 0 or length % DESC_SIZE or length > DESC_SIZE * size:
                    raise QueueBroken(
                        f"chain {head}: indirect table length {length} is not a multiple of {DESC_SIZE} from {DESC_SIZE} to {DESC_SIZE * size}"
                    )
                try:
                    # One copy of the whole table: the driver cannot change it
                    # under us and it may straddle adjacent regions.
                    table = mem.read(addr, length)
                except GuestMemoryError as e:
                    raise QueueBroken(f"chain {head}: indirect table {addr:#x}+{length} is not in guest memory: {e}") from None
                indirect = True
                entries = length // DESC_SIZE
                steps = 0
                idx = 0
                continue
            if flags & VRING_DESC_F_WRITE:
                seen_write = True
                if length:
                    try:
                        check(addr, length)
                    except GuestMemoryError as e:
                        raise QueueBroken(f"chain {head}: buffer {addr:#x}+{length} is not in guest memory: {e}") from None
                    writable.append((addr, length))
                    writable_len += length
            else:
                if seen_write:
                    raise QueueBroken(f"chain {head}: device-readable descriptor after a device-writable one")
                if length:
                    try:
                        check(addr, length)
                    except GuestMemoryError as e:
                        raise QueueBroken(f"chain {head}: buffer {addr:#x}+{length} is not in guest memory: {e}") from None
                    readable.append((addr, length))
                    readable_len += length
            if readable_len + writable_len > MAX_CHAIN_BYTES:
                raise QueueBroken(f"chain {head}: total length {readable_len + writable_len} does not fit in 32 bits")
            if not flags & VRING_DESC_F_NEXT:
                break
            if nxt >= entries:
                raise QueueBroken(f"chain {head}: descriptor {idx} points to {nxt}, outside a table of {entries}")
            idx = nxt
        return DescriptorChain(head, readable, writable, readable_len, writable_len, walked, indirect)

    # -- used side ----------------------------------------------------------
    def _current_used(self, used: memoryview) -> int:
        state = self.state
        if state[STATE_USED_IDX] < 0:
            state[STATE_USED_IDX] = used.cast("H")[1]
        return state[STATE_USED_IDX]

    def push(self, mem: GuestMemory, head: int, written_len: int) -> None:
        """Return chain `head` to the driver with `written_len` bytes written."""
        self.push_many(mem, ((head, written_len),))

    def push_many(self, mem: GuestMemory, items) -> None:
        """Return several chains and publish them with one used idx store.

        The elements are written before the idx, so the driver never sees an
        idx covering an element that is not there yet (x86 keeps stores in
        program order)."""
        self._check_usable()
        items = list(items)
        size = self.size
        for head, written in items:
            if not 0 <= head < size:
                raise ValueError(f"head {head} is not a descriptor index of a queue of size {size}")
            if not 0 <= written <= 0xFFFF_FFFF:
                raise ValueError(f"written length {written} does not fit in a u32")
        if not items:
            return
        used = self._used(mem)
        idx = self._current_used(used)
        mask = self._mask
        pack = USED_ELEM_STRUCT.pack_into
        for head, written in items:
            pack(used, 4 + 8 * (idx & mask), head, written)
            idx = (idx + 1) & 0xFFFF
        used.cast("H")[1] = idx
        self.state[STATE_USED_IDX] = idx

    # -- notifications ------------------------------------------------------
    def needs_notification(self, mem: GuestMemory) -> bool:
        """Should we signal the driver (the call eventfd) for what we pushed?

        With EVENT_IDX: only if the used idx passed the driver's used_event
        since our last decision (the first decision always says yes, as a
        reconnected device cannot know what was signalled before). Without:
        unless the driver set VRING_AVAIL_F_NO_INTERRUPT."""
        self._check_usable()
        avail = self._avail(mem)
        if not self.event_idx:
            return not avail[0] & VRING_AVAIL_F_NO_INTERRUPT
        memory_barrier()  # our used idx store must be visible before we read used_event
        new = self._current_used(self._used(mem))
        old = self.state[STATE_SIGNALLED_USED]
        self.state[STATE_SIGNALLED_USED] = new
        if old < 0:
            return True
        return vring_need_event(avail[self._used_event_word], new, old)

    def enable_notifications(self, mem: GuestMemory) -> bool:
        """Ask the driver to kick us for new buffers.

        Returns True if buffers are already pending: then the caller must keep
        popping, because the driver may have added them before it could see
        the enable, and will not kick for them."""
        self._check_usable()
        used = self._used(mem).cast("H")
        if self.event_idx:
            used[self._avail_event_word] = self.state[STATE_NEXT_AVAIL]
        else:
            used[0] &= ~VRING_USED_F_NO_NOTIFY & 0xFFFF
        memory_barrier()  # the enable must be visible before we re-read avail idx
        return self._pending(self._avail(mem)) > 0

    def disable_notifications(self, mem: GuestMemory) -> None:
        """Tell the driver kicks are not needed while we are busy polling.

        Without EVENT_IDX this sets VRING_USED_F_NO_NOTIFY. With EVENT_IDX
        (where the spec wants used.flags left at 0) avail_event stays where
        `enable_notifications` put it, so the driver kicks at most once more,
        for the entry it names; kicks are hints either way."""
        self._check_usable()
        if not self.event_idx:
            used = self._used(mem).cast("H")
            used[0] |= VRING_USED_F_NO_NOTIFY

    def stop_notifications(self, mem: GuestMemory) -> None:
        """Turn the driver's kicks off until `enable_notifications`, for a
        device that polls the ring meanwhile.

        Without EVENT_IDX this is `disable_notifications`. With EVENT_IDX,
        avail_event is put half the 16-bit index space away from the next
        entry we pop. The driver kicks only when a batch it published covers
        avail_event, and its batches lie within a ring's size of our
        position. One behind the next entry was not far enough: a device
        that popped part of a batch, then moved the mark, between the
        driver's publish and its read of avail_event, put the mark inside
        the batch and got a kick. Polling moves the mark on as it goes;
        kicks are hints either way."""
        self._check_usable()
        used = self._used(mem).cast("H")
        if self.event_idx:
            used[self._avail_event_word] = (self.next_avail + 0x8000) & 0xFFFF
        else:
            used[0] |= VRING_USED_F_NO_NOTIFY
