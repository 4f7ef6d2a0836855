"""The device half against rings written by hand, good and hostile."""
import mmap
import os
import struct

import pytest

from nicdev.virtio.device_burst import TxKernel
from nicdev.virtio.device_queue import DeviceQueue, QueueBroken
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.ring import (
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
    SplitRingLayout,
    pack_descriptor,
)

from support.datapaths import DATAPATHS

NEXT, WRITE, INDIRECT = VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT
RING_BASE = 0x1000
BUF = 0x8000  # buffers from here on


class RawRing:
    """Writes a split ring the way a (possibly hostile) driver would."""

    def __init__(self, mem, size=8, base=RING_BASE, start_idx=0):
        self.mem = mem
        self.lay = SplitRingLayout(size, base)
        self.size = size
        mem.write(self.lay.base, bytes(self.lay.total_size))
        self.avail_idx = start_idx
        mem.write_u16(self.lay.avail + 2, start_idx)
        mem.write_u16(self.lay.used + 2, start_idx)

    def desc(self, i, addr, length, flags=0, nxt=0):
        self.mem.write(self.lay.desc + 16 * i, pack_descriptor(addr, length, flags, nxt))

    def offer(self, *heads, publish=True):
        for h in heads:
            self.mem.write_u16(self.lay.avail + 4 + 2 * (self.avail_idx % self.size), h)
            self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        if publish:
            self.mem.write_u16(self.lay.avail + 2, self.avail_idx)

    def device(self, **kw):
        return DeviceQueue.from_layout(self.lay, **kw)

    def used_idx(self):
        return self.mem.read_u16(self.lay.used + 2)

    def used_elem(self, slot):
        return struct.unpack("<II", self.mem.read(self.lay.used + 4 + 8 * slot, 8))

    def set_used_event(self, value):
        self.mem.write_u16(self.lay.avail + 4 + 2 * self.size, value)

    def avail_event(self):
        return self.mem.read_u16(self.lay.used + 4 + 8 * self.size)


def flat_memory(size=0x10000):
    return GuestMemory([MemoryRegion(0, size, bytearray(size))])


def gap_memory():
    """Two regions with a hole between them: [0, 64K) and [128K, 192K)."""
    return GuestMemory(
        [MemoryRegion(0, 0x10000, bytearray(0x10000)), MemoryRegion(0x20000, 0x10000, bytearray(0x10000))]
    )


def adjacent_memory():
    """Two regions that touch at 64K, each with its own buffer."""
    return GuestMemory(
        [MemoryRegion(0, 0x10000, bytearray(0x10000)), MemoryRegion(0x10000, 0x10000, bytearray(0x10000))]
    )


@pytest.fixture
def mem():
    return flat_memory()


@pytest.fixture
def ring(mem):
    return RawRing(mem)


# -- well-formed chains -----------------------------------------------------
def test_empty_queue_pops_nothing(ring, mem):
    q = ring.device()
    assert q.avail_count(mem) == 0
    assert q.pop(mem) is None
    assert q.next_avail == 0


def test_pop_read_write_push(ring, mem):
    mem.write(BUF, b"hello ")
    mem.write(BUF + 0x100, b"world")
    ring.desc(0, BUF, 6, NEXT, 3)
    ring.desc(3, BUF + 0x100, 5, NEXT, 5)
    ring.desc(5, BUF + 0x200, 4, WRITE | NEXT, 6)
    ring.desc(6, BUF + 0x300, 8, WRITE)
    ring.offer(0)
    q = ring.device()
    assert q.avail_count(mem) == 1
    chain = q.pop(mem)
    assert chain.head == 0
    assert chain.readable == [(BUF, 6), (BUF + 0x100, 5)]
    assert chain.writable == [(BUF + 0x200, 4), (BUF + 0x300, 8)]
    assert (chain.readable_len, chain.writable_len, chain.desc_count, chain.indirect) == (11, 12, 4, False)
    assert chain.read(mem) == b"hello world"
    assert chain.write(mem, b"0123456789") == 10
    assert mem.read(BUF + 0x200, 4) == b"0123"
    assert mem.read(BUF + 0x300, 6) == b"456789"
    assert q.next_avail == 1
    assert q.pop(mem) is None
    q.push(mem, chain.head, 10)
    assert ring.used_idx() == 1
    assert ring.used_elem(0) == (0, 10)
    assert q.used_idx == 1


def test_read_into_and_write_with_offsets(ring, mem):
    mem.write(BUF, b"abc")
    mem.write(BUF + 0x10, b"defgh")
    ring.desc(0, BUF, 3, NEXT, 1)
    ring.desc(1, BUF + 0x10, 5, NEXT, 2)
    ring.desc(2, BUF + 0x100, 3, WRITE | NEXT, 3)
    ring.desc(3, BUF + 0x200, 3, WRITE)
    ring.offer(0)
    chain = ring.device().pop(mem)
    out = bytearray(4)
    assert chain.read_into(mem, out, offset=2) == 4
    assert out == b"cdef"
    out = bytearray(10)
    assert chain.read_into(mem, out, offset=5) == 3
    assert out[:3] == b"fgh"
    assert chain.read_into(mem, bytearray(4), offset=8) == 0
    # writable capacity is 6: offset 2 leaves room for 4 of the 5 bytes
    assert chain.write(mem, b"VWXYZ", offset=2) == 4
    assert mem.read(BUF + 0x100, 3) == b"\0\0V"
    assert mem.read(BUF + 0x200, 3) == b"WXY"
    assert chain.write(mem, b"more", offset=6) == 0
    with pytest.raises(ValueError):
        chain.write(mem, b"x", offset=-1)
    with pytest.raises(ValueError):
        chain.read_into(mem, bytearray(1), offset=-1)


def test_write_never_exceeds_capacity(ring, mem):
    mem.write(BUF + 8, b"\xee" * 8)
    ring.desc(0, BUF, 8, WRITE)
    ring.offer(0)
    chain = ring.device().pop(mem)
    assert chain.write(mem, b"\x11" * 100) == 8
    assert mem.read(BUF + 8, 8) == b"\xee" * 8


def test_zero_length_descriptors_are_dropped(ring, mem):
    ring.desc(0, 0xDEAD_0000_0000, 0, NEXT, 1)  # address nowhere, but no bytes
    ring.desc(1, BUF, 4, NEXT, 2)
    ring.desc(2, BUF + 0x10, 0, WRITE | NEXT, 3)
    ring.desc(3, BUF + 0x20, 4, WRITE)
    ring.offer(0)
    chain = ring.device().pop(mem)
    assert chain.readable == [(BUF, 4)]
    assert chain.writable == [(BUF + 0x20, 4)]
    assert chain.desc_count == 4


def test_several_entries_pop_in_ring_order(ring, mem):
    for i in range(4):
        ring.desc(i, BUF + 0x100 * i, 10 + i)
    ring.offer(2, 0, 3, 1)
    q = ring.device()
    assert q.avail_count(mem) == 4
    heads = [q.pop(mem).head for _ in range(4)]
    assert heads == [2, 0, 3, 1]
    q.push_many(mem, [(2, 0), (0, 0), (3, 7), (1, 0)])
    assert ring.used_idx() == 4
    assert [ring.used_elem(i)[0] for i in range(4)] == [2, 0, 3, 1]
    assert ring.used_elem(2) == (3, 7)


def test_unpublished_entries_are_invisible(ring, mem):
    ring.desc(0, BUF, 4)
    ring.offer(0, publish=False)
    assert ring.device().pop(mem) is None


def test_indices_wrap_at_65536(mem):
    ring = RawRing(mem, size=4, start_idx=65534)
    q = ring.device(next_avail=65534)
    for i in range(4):
        ring.desc(i, BUF + 0x10 * i, 1)
    ring.offer(0, 1, 2, 3)
    assert ring.avail_idx == 2
    assert q.avail_count(mem) == 4
    heads = []
    while (chain := q.pop(mem)) is not None:
        heads.append(chain.head)
        q.push(mem, chain.head, 0)
    assert heads == [0, 1, 2, 3]
    assert q.next_avail == 2
    assert ring.used_idx() == 2
    # slots are idx % size: 65534 -> 2, 65535 -> 3, 0 -> 0, 1 -> 1
    assert [ring.used_elem(s)[0] for s in (2, 3, 0, 1)] == [0, 1, 2, 3]


def test_used_idx_is_read_from_memory_when_not_given(mem):
    ring = RawRing(mem, start_idx=500)
    ring.desc(0, BUF, 1)
    ring.offer(0)
    q = ring.device(next_avail=500)
    assert q.used_idx is None
    q.push(mem, q.pop(mem).head, 1)
    assert q.used_idx == 501
    assert ring.used_idx() == 501


def test_explicit_used_idx_wins_over_memory(ring, mem):
    ring.desc(0, BUF, 1)
    ring.offer(0)
    q = ring.device(used_idx=7)
    q.push(mem, q.pop(mem).head, 1)
    assert ring.used_idx() == 8
    assert ring.used_elem(7 % 8) == (0, 1)


def test_push_rejects_bad_arguments(ring, mem):
    q = ring.device()
    with pytest.raises(ValueError):
        q.push(mem, 8, 0)
    with pytest.raises(ValueError):
        q.push(mem, -1, 0)
    with pytest.raises(ValueError):
        q.push(mem, 0, 1 << 32)
    with pytest.raises(ValueError):
        q.push_many(mem, [(0, 0), (9, 0)])
    assert ring.used_idx() == 0  # nothing published by the refused calls
    q.push_many(mem, [])
    assert ring.used_idx() == 0


def test_adjacent_regions_hold_one_buffer_across_the_seam():
    mem = adjacent_memory()
    ring = RawRing(mem)
    seam = 0x10000
    mem.write(seam - 3, b"abcdef")
    ring.desc(0, seam - 3, 6, NEXT, 1)
    ring.desc(1, seam - 2, 4, WRITE)
    ring.offer(0)
    chain = ring.device().pop(mem)
    assert chain.read(mem) == b"abcdef"
    assert chain.write(mem, b"WXYZ") == 4
    assert mem.read(seam - 3, 6) == b"aWXYZf"


def test_indirect_table_straddling_adjacent_regions_is_followed():
    mem = adjacent_memory()
    ring = RawRing(mem)
    table = 0x10000 - 16
    mem.write(table, pack_descriptor(BUF, 4, NEXT, 1) + pack_descriptor(BUF + 0x10, 4, WRITE))
    ring.desc(0, table, 32, INDIRECT)
    ring.offer(0)
    chain = ring.device().pop(mem)
    assert chain.readable == [(BUF, 4)]
    assert chain.writable == [(BUF + 0x10, 4)]


# -- indirect descriptors ---------------------------------------------------
def test_indirect_chain(ring, mem):
    table = 0x4000
    mem.write(BUF, b"indirect!")
    mem.write(
        table,
        pack_descriptor(BUF, 4, NEXT, 2)
        + pack_descriptor(0, 0, 0, 0)  # unused entry
        + pack_descriptor(BUF + 4, 5, NEXT, 3)
        + pack_descriptor(BUF + 0x100, 16, WRITE),
    )
    ring.desc(5, table, 64, INDIRECT | WRITE)  # WRITE on the pointer must be ignored
    ring.offer(5)
    chain = ring.device().pop(mem)
    assert chain.head == 5
    assert chain.indirect
    assert chain.read(mem) == b"indirect!"
    assert chain.writable == [(BUF + 0x100, 16)]
    assert chain.desc_count == 4  # the pointer plus three table entries


def test_direct_descriptors_then_an_indirect_one(ring, mem):
    table = 0x4000
    mem.write(table, pack_descriptor(BUF + 0x10, 2, NEXT, 1) + pack_descriptor(BUF + 0x20, 3, WRITE))
    ring.desc(0, BUF, 1, NEXT, 1)
    ring.desc(1, table, 32, INDIRECT)
    ring.offer(0)
    chain = ring.device().pop(mem)
    assert chain.readable == [(BUF, 1), (BUF + 0x10, 2)]
    assert chain.writable == [(BUF + 0x20, 3)]


def test_indirect_table_of_queue_size_entries_is_accepted(ring, mem):
    table = 0x4000
    descs = [pack_descriptor(BUF + i, 1, NEXT, i + 1) for i in range(7)] + [pack_descriptor(BUF + 7, 1)]
    mem.write(table, b"".join(descs))
    ring.desc(0, table, 16 * 8, INDIRECT)
    ring.offer(0)
    assert ring.device().pop(mem).readable_len == 8


# -- notifications ----------------------------------------------------------
def test_notification_flags_without_event_idx(ring, mem):
    ring.desc(0, BUF, 1)
    ring.desc(1, BUF, 1)
    ring.offer(0, 1)
    q = ring.device()
    q.push(mem, q.pop(mem).head, 0)
    assert q.needs_notification(mem)
    mem.write_u16(ring.lay.avail, VRING_AVAIL_F_NO_INTERRUPT)
    assert not q.needs_notification(mem)
    q.disable_notifications(mem)
    assert mem.read_u16(ring.lay.used) == VRING_USED_F_NO_NOTIFY
    assert q.enable_notifications(mem) is True  # head 1 is still pending
    assert mem.read_u16(ring.lay.used) == 0
    q.pop(mem)
    assert q.enable_notifications(mem) is False


def test_used_event_decides_notification(ring, mem):
    for i in range(8):
        ring.desc(i, BUF, 1)
    ring.offer(*range(8))
    q = ring.device(event_idx=True)
    ring.set_used_event(2)  # "signal me when entry 2 is used"

    def use(n):
        q.push_many(mem, [(q.pop(mem).head, 0) for _ in range(n)])

    use(1)  # used idx 0 -> 1
    assert q.needs_notification(mem)  # first decision after (re)start is always yes
    use(1)  # 1 -> 2: entry 1 written, event is 2
    assert not q.needs_notification(mem)
    use(1)  # 2 -> 3: entry 2 written
    assert q.needs_notification(mem)
    use(2)  # 3 -> 5
    assert not q.needs_notification(mem)  # driver did not move used_event
    ring.set_used_event(6)
    use(3)  # 5 -> 8 covers entry 6
    assert q.needs_notification(mem)
    assert not q.needs_notification(mem)  # nothing new since


def test_avail_event_written_on_enable(ring, mem):
    for i in range(3):
        ring.desc(i, BUF, 1)
    q = ring.device(event_idx=True)
    assert q.enable_notifications(mem) is False
    assert ring.avail_event() == 0
    ring.offer(0, 1)
    q.disable_notifications(mem)
    assert mem.read_u16(ring.lay.used) == 0  # flags stay 0 with EVENT_IDX
    q.pop(mem)
    q.pop(mem)
    assert ring.avail_event() == 0  # popping does not move it
    assert q.enable_notifications(mem) is False
    assert ring.avail_event() == 2
    ring.offer(2)
    assert q.enable_notifications(mem) is True


# -- hostile rings ----------------------------------------------------------
@pytest.fixture(params=DATAPATHS)
def pop(request):
    """Pop a chain the Python way (DeviceQueue.pop) or the C way (one chain
    through the TX burst kernel): hostile rings must break both alike."""
    if request.param == "python":
        return lambda q, mem: q.pop(mem)
    kernel = TxKernel()
    kernel.configure(12, 1514, 1514, False)

    def pop_in_c(q, mem):
        n, error = kernel.run(q, mem, 1, True)
        if error is not None:
            raise error
        return n
    return pop_in_c


def broken(q, mem, match, pop):
    with pytest.raises(QueueBroken, match=match) as exc:
        pop(q, mem)
    assert q.broken == exc.value.reason
    # the queue stays broken for every data-path call
    for call in (q.pop, q.avail_count, q.needs_notification, q.enable_notifications, q.disable_notifications):
        with pytest.raises(QueueBroken):
            call(mem)
    with pytest.raises(QueueBroken):
        q.push(mem, 0, 0)
    return exc.value


def test_self_loop(ring, mem, pop):
    ring.desc(0, BUF, 1, NEXT, 0)
    ring.offer(0)
    broken(ring.device(), mem, "loop", pop)


def test_long_loop(ring, mem, pop):
    for i in range(8):
        ring.desc(i, BUF, 1, NEXT, (i + 1) % 8)
    ring.offer(3)
    broken(ring.device(), mem, "longer than 8", pop)


def test_chain_of_exactly_queue_size_is_fine(ring, mem):
    for i in range(7):
        ring.desc(i, BUF, 1, NEXT, i + 1)
    ring.desc(7, BUF, 1)
    ring.offer(0)
    assert ring.device().pop(mem).desc_count == 8


def test_head_out_of_range(ring, mem, pop):
    ring.offer(8)
    broken(ring.device(), mem, "names descriptor 8", pop)


def test_next_out_of_range(ring, mem, pop):
    ring.desc(0, BUF, 1, NEXT, 8)
    ring.offer(0)
    broken(ring.device(), mem, "points to 8", pop)


def test_address_outside_memory(ring, mem, pop):
    ring.desc(0, 0x10000, 1)
    ring.offer(0)
    broken(ring.device(), mem, "not in guest memory", pop)


def test_buffer_running_off_the_end_of_memory(ring, mem, pop):
    ring.desc(0, 0xFFF0, 0x20, WRITE)
    ring.offer(0)
    broken(ring.device(), mem, "not in guest memory", pop)


def test_address_wrapping_64_bits(ring, mem, pop):
    ring.desc(0, (1 << 64) - 8, 16)
    ring.offer(0)
    broken(ring.device(), mem, "not in guest memory", pop)


def test_address_in_the_gap_between_regions(pop):
    mem = gap_memory()
    ring = RawRing(mem)
    ring.desc(0, 0x18000, 4)
    ring.offer(0)
    broken(ring.device(), mem, "not in guest memory", pop)


def test_buffer_running_into_the_gap(pop):
    mem = gap_memory()
    ring = RawRing(mem)
    ring.desc(0, BUF, 4, NEXT, 1)
    ring.desc(1, 0xFFFC, 8, WRITE)  # last 4 bytes of region 0, then the hole
    ring.offer(0)
    broken(ring.device(), mem, "0xfffc", pop)


def test_buffers_in_the_second_region_are_fine():
    mem = gap_memory()
    ring = RawRing(mem)
    mem.write(0x2FFF0, b"x" * 16)
    ring.desc(0, 0x2FFF0, 16)
    ring.offer(0)
    assert ring.device().pop(mem).read(mem) == b"x" * 16


def test_ring_in_the_second_region():
    mem = gap_memory()
    ring = RawRing(mem, base=0x21000)
    ring.desc(0, 0x100, 4)
    ring.offer(0)
    q = ring.device()
    chain = q.pop(mem)
    q.push(mem, chain.head, 0)
    assert mem.read_u16(ring.lay.used + 2) == 1


def test_rings_outside_memory(mem):
    q = DeviceQueue(8, 0x20000, 0x1000, 0x2000)
    mem.write_u16(0x1002, 1)
    with pytest.raises(QueueBroken, match="descriptor table"):
        q.pop(mem)
    q = DeviceQueue(8, 0x1000, 0xFFF0, 0x2000)
    with pytest.raises(QueueBroken, match="available ring"):
        q.avail_count(mem)
    q = DeviceQueue(8, 0x1000, 0x2000, 0xFFF0)
    with pytest.raises(QueueBroken, match="used ring"):
        q.push(mem, 0, 0)
    assert q.broken


def test_ring_straddling_two_regions_is_refused():
    mem = adjacent_memory()
    q = DeviceQueue(8, 0x1000, 0xFFF8, 0x2000)  # avail ring crosses the seam
    with pytest.raises(QueueBroken, match="crosses a region boundary"):
        q.avail_count(mem)


def test_avail_idx_running_ahead_by_more_than_size(ring, mem):
    mem.write_u16(ring.lay.avail + 2, 9)
    q = ring.device()
    with pytest.raises(QueueBroken, match="9 entries ahead"):
        q.avail_count(mem)
    assert q.broken


def test_avail_idx_going_backwards_is_running_ahead(mem, pop):
    ring = RawRing(mem, start_idx=10)
    mem.write_u16(ring.lay.avail + 2, 9)  # 65535 entries "ahead" of 10
    broken(ring.device(next_avail=10), mem, "ahead", pop)


def test_total_length_overflow(pop):
    # A sparse 3 GiB memfd: checking addresses touches none of its pages.
    fd = os.memfd_create("virtio-test")
    try:
        os.ftruncate(fd, 3 << 30)
        buf = mmap.mmap(fd, 3 << 30)
    finally:
        os.close(fd)
    # The mapping is dropped with its last view (tracebacks kept by pytest.raises hold some).
    mem = GuestMemory([MemoryRegion(0, 3 << 30, buf)])
    ring = RawRing(mem)
    ring.desc(0, 0x10000, 0x8000_0000, NEXT, 1)
    ring.desc(1, 0x10000, 0x8000_0000, WRITE)  # 2**32 in total
    ring.offer(0)
    broken(ring.device(), mem, "32 bits", pop)
    ring = RawRing(mem, base=0x2000)
    ring.desc(0, 0x10000, 0x8000_0000, NEXT, 1)
    ring.desc(1, 0x10000, 0x7FFF_FFFF, WRITE)  # one byte less: fine
    ring.offer(0)
    chain = ring.device().pop(mem)
    assert chain.readable_len + chain.writable_len == 0xFFFF_FFFF


def test_readable_after_writable(ring, mem, pop):
    ring.desc(0, BUF, 4, WRITE | NEXT, 1)
    ring.desc(1, BUF + 0x10, 4)
    ring.offer(0)
    broken(ring.device(), mem, "readable descriptor after a device-writable", pop)


def test_readable_after_empty_writable(ring, mem, pop):
    ring.desc(0, BUF, 0, WRITE | NEXT, 1)
    ring.desc(1, BUF + 0x10, 4)
    ring.offer(0)
    broken(ring.device(), mem, "readable descriptor after", pop)


def test_readable_after_writable_across_an_indirect_table(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(BUF, 4))
    ring.desc(0, BUF + 0x10, 4, WRITE | NEXT, 1)
    ring.desc(1, 0x4000, 16, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "readable descriptor after", pop)


def test_nested_indirect(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(0x4100, 16, INDIRECT))
    mem.write(0x4100, pack_descriptor(BUF, 4))
    ring.desc(0, 0x4000, 16, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "inside an indirect table", pop)


def test_indirect_with_next(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(BUF, 4))
    ring.desc(0, 0x4000, 16, INDIRECT | NEXT, 1)
    ring.desc(1, BUF, 4)
    ring.offer(0)
    broken(ring.device(), mem, "both INDIRECT and NEXT", pop)


def test_indirect_not_negotiated(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(BUF, 4))
    ring.desc(0, 0x4000, 16, INDIRECT)
    ring.offer(0)
    broken(ring.device(indirect=False), mem, "not negotiated", pop)


@pytest.mark.parametrize("length", [0, 8, 17, 16 * 9])
def test_bad_indirect_table_length(ring, mem, length, pop):
    ring.desc(0, 0x4000, length, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "indirect table length", pop)


def test_indirect_table_outside_memory(ring, mem, pop):
    ring.desc(0, 0xFFF0, 32, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "indirect table", pop)


def test_indirect_table_in_the_gap(pop):
    mem = gap_memory()
    ring = RawRing(mem)
    ring.desc(0, 0x1FFF0, 16, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "indirect table", pop)


def test_indirect_next_out_of_table(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(BUF, 4, NEXT, 2) + pack_descriptor(BUF, 4))
    ring.desc(0, 0x4000, 32, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "outside a table of 2", pop)


def test_indirect_loop(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(BUF, 4, NEXT, 1) + pack_descriptor(BUF, 4, NEXT, 0))
    ring.desc(0, 0x4000, 32, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "indirect table longer than 2", pop)


def test_indirect_buffer_outside_memory(ring, mem, pop):
    mem.write(0x4000, pack_descriptor(0x7_0000_0000, 4))
    ring.desc(0, 0x4000, 16, INDIRECT)
    ring.offer(0)
    broken(ring.device(), mem, "not in guest memory", pop)


def test_a_broken_queue_can_be_marked_by_its_device(ring, mem, pop):
    ring.desc(0, BUF, 4)
    ring.offer(0)
    q = ring.device()
    q.mark_broken("TX chain without a virtio-net header")
    with pytest.raises(QueueBroken, match="without a virtio-net header"):
        pop(q, mem)
    q.mark_broken("a second reason")
    assert q.broken == "TX chain without a virtio-net header"


def test_chain_io_after_memory_went_away_raises_queue_broken(ring, mem, pop):
    ring.desc(0, 0x9000, 4, NEXT, 1)
    ring.desc(1, 0x9100, 4, WRITE)
    ring.offer(0)
    chain = ring.device().pop(mem)
    smaller = GuestMemory([MemoryRegion(0, 0x8000, bytearray(0x8000))])
    with pytest.raises(QueueBroken):
        chain.read(smaller)
    with pytest.raises(QueueBroken):
        chain.read_into(smaller, bytearray(4))
    with pytest.raises(QueueBroken):
        chain.write(smaller, b"abcd")


@pytest.mark.parametrize(
    "args",
    [
        (6, 0x1000, 0x2000, 0x3000),  # size not a power of two
        (8, 0x1008, 0x2000, 0x3000),  # descriptor table not 16-aligned
        (8, 0x1000, 0x2001, 0x3000),  # avail ring not 2-aligned
        (8, 0x1000, 0x2000, 0x3002),  # used ring not 4-aligned
        (8, -16, 0x2000, 0x3000),
    ],
)
def test_constructor_refuses_bad_geometry(args):
    with pytest.raises(ValueError):
        DeviceQueue(*args)


def test_constructor_refuses_bad_indices():
    with pytest.raises(ValueError):
        DeviceQueue(8, 0, 0x100, 0x200, next_avail=65536)
    with pytest.raises(ValueError):
        DeviceQueue(8, 0, 0x100, 0x200, used_idx=-1)
