"""The driver half driven against the device half over shared GuestMemory."""
import struct

import pytest

from nicdev.virtio.device_queue import DeviceQueue
from nicdev.virtio.driver_queue import DriverQueue, QueueBroken, QueueFull
from nicdev.virtio.memory import GuestMemory, GuestMemoryError, MemoryRegion
from nicdev.virtio.ring import (
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    SplitRingLayout,
    unpack_descriptor,
)

RING_BASE = 0x1000


class Pair:
    """A driver queue and a device queue on the same ring."""

    def __init__(self, mem, size=8, base=RING_BASE, event_idx=False, start_idx=0):
        self.mem = mem
        self.lay = SplitRingLayout(size, base)
        self.drv = DriverQueue.from_layout(self.lay, event_idx=event_idx)
        self.drv.init(mem, start_idx=start_idx)
        self.dev = DeviceQueue.from_layout(self.lay, event_idx=event_idx, next_avail=start_idx)

    def avail_event(self):
        return self.mem.read_u16(self.lay.used + 4 + 8 * self.lay.queue_size)

    def used_event(self):
        return self.mem.read_u16(self.lay.avail + 4 + 2 * self.lay.queue_size)


def flat_memory(size=0x40000):
    return GuestMemory([MemoryRegion(0, size, bytearray(size))])


def gap_memory():
    """Rings and buffers in two regions with a hole between them."""
    return GuestMemory(
        [MemoryRegion(0, 0x10000, bytearray(0x10000)), MemoryRegion(0x20000, 0x20000, bytearray(0x20000))]
    )


@pytest.fixture
def mem():
    return flat_memory()


@pytest.fixture
def pair(mem):
    return Pair(mem)


def test_init_zeroes_the_rings(mem):
    lay = SplitRingLayout(8, RING_BASE)
    mem.write(lay.base, b"\xff" * lay.total_size)
    drv = DriverQueue.from_layout(lay, event_idx=True)
    drv.init(mem)
    assert mem.read(lay.desc, 16 * 8) == bytes(16 * 8)
    assert mem.read(lay.avail, 6 + 2 * 8) == bytes(6 + 2 * 8)
    assert mem.read(lay.used, 6 + 8 * 8) == bytes(6 + 8 * 8)
    assert drv.num_free == 8
    assert drv.in_flight == 0


def test_tx_round_trip(mem):
    pair = Pair(mem, size=16)
    frames = [bytes([i]) * (60 + i) for i in range(5)]
    for i, frame in enumerate(frames):
        gpa = 0x10000 + 0x800 * i
        mem.write(gpa, b"H" * 12)
        mem.write(gpa + 12, frame)
        pair.drv.add(mem, [(gpa, 12), (gpa + 12, len(frame))], [], token=("tx", i))
    assert pair.drv.num_free == 16 - 10
    assert pair.dev.pop(mem) is None  # nothing published yet
    assert pair.drv.publish(mem) == 5
    assert pair.drv.publish(mem) == 0
    got = []
    while (chain := pair.dev.pop(mem)) is not None:
        assert chain.writable == []
        got.append(chain.read(mem)[12:])
        pair.dev.push(mem, chain.head, 0)
    assert got == frames
    assert pair.drv.pending_used(mem) == 5
    assert pair.drv.reap(mem) == [(("tx", i), 0) for i in range(5)]
    assert pair.drv.num_free == 16
    assert pair.drv.reap(mem) == []


def test_rx_round_trip(pair, mem):
    for i in range(4):
        pair.drv.add(mem, [], [(0x10000 + 0x1000 * i, 2048)], token=i)
    pair.drv.publish(mem)
    payloads = [b"frame-%d" % i * (i + 1) for i in range(4)]
    for payload in payloads:
        chain = pair.dev.pop(mem)
        assert chain.readable == []
        n = chain.write(mem, payload)
        pair.dev.push(mem, chain.head, n)
    done = pair.drv.reap(mem)
    assert [(tok, n) for tok, n in done] == [(i, len(p)) for i, p in enumerate(payloads)]
    for (tok, n), payload in zip(done, payloads):
        assert mem.read(0x10000 + 0x1000 * tok, n) == payload


def test_descriptors_are_chained_in_order(pair, mem):
    head = pair.drv.add(mem, [(0x10000, 1), (0x10010, 2)], [(0x10020, 3)], token=None)
    d0 = unpack_descriptor(mem.read(pair.lay.desc + 16 * head, 16))
    d1 = unpack_descriptor(mem.read(pair.lay.desc + 16 * d0.next, 16))
    d2 = unpack_descriptor(mem.read(pair.lay.desc + 16 * d1.next, 16))
    assert (d0.addr, d0.len, d0.flags) == (0x10000, 1, VRING_DESC_F_NEXT)
    assert (d1.addr, d1.len, d1.flags) == (0x10010, 2, VRING_DESC_F_NEXT)
    assert (d2.addr, d2.len, d2.flags) == (0x10020, 3, VRING_DESC_F_WRITE)


def test_queue_full_and_descriptors_come_back(pair, mem):
    pair.drv.add(mem, [(0x10000, 1)] * 5, [], token="a")
    with pytest.raises(QueueFull):
        pair.drv.add(mem, [(0x10000, 1)] * 4, [], token="b")
    pair.drv.add(mem, [(0x10000, 1)] * 3, [], token="c")
    assert pair.drv.num_free == 0
    with pytest.raises(QueueFull):
        pair.drv.add(mem, [(0x10000, 1)], [], token="d")
    pair.drv.publish(mem)
    first = pair.dev.pop(mem)
    assert first.desc_count == 5
    pair.dev.push(mem, first.head, 0)
    assert pair.drv.reap(mem) == [("a", 0)]
    assert pair.drv.num_free == 5
    pair.drv.add(mem, [(0x10000, 1)] * 5, [], token="e")
    pair.drv.publish(mem)
    assert [pair.dev.pop(mem).desc_count for _ in range(2)] == [3, 5]


def test_buffers_completed_out_of_order(pair, mem):
    for i in range(4):
        pair.drv.add(mem, [(0x10000 + i, 1)], [(0x11000 + 0x100 * i, 16)], token=i)
    pair.drv.publish(mem)
    chains = [pair.dev.pop(mem) for _ in range(4)]
    pair.dev.push_many(mem, [(chains[i].head, i) for i in (2, 0, 3, 1)])
    assert pair.drv.reap(mem) == [(2, 2), (0, 0), (3, 3), (1, 1)]
    assert pair.drv.num_free == 8


def test_bad_segments_are_the_callers_fault(pair, mem):
    with pytest.raises(ValueError):
        pair.drv.add(mem, [], [], token=None)
    with pytest.raises(ValueError):
        pair.drv.add(mem, [(-1, 4)], [], token=None)
    with pytest.raises(ValueError):
        pair.drv.add(mem, [(0, 1 << 32)], [], token=None)
    with pytest.raises(ValueError):
        pair.drv.add(mem, [(0, 0x8000_0000)], [(0, 0x8000_0000)], token=None)
    with pytest.raises(ValueError):
        pair.drv.add_indirect(mem, 0x20000, [(0, 1)] * 9, [], token=None)
    with pytest.raises(ValueError):
        pair.drv.add_indirect(mem, 0x20000, [], [], token=None)
    assert pair.drv.num_free == 8


def test_rings_outside_memory_are_the_callers_fault(mem):
    drv = DriverQueue(8, 0x3FFC0, 0x1000, 0x2000)
    with pytest.raises(GuestMemoryError):
        drv.init(mem)


@pytest.mark.parametrize("args", [(5, 0, 0x100, 0x200), (8, 8, 0x100, 0x200), (8, 0, 0x101, 0x200), (8, 0, 0x100, 0x202)])
def test_driver_constructor_refuses_bad_geometry(args):
    with pytest.raises(ValueError):
        DriverQueue(*args)


def test_init_refuses_a_bad_start_index(pair, mem):
    with pytest.raises(ValueError):
        pair.drv.init(mem, start_idx=65536)


# -- indirect ---------------------------------------------------------------
def test_indirect_round_trip(pair, mem):
    mem.write(0x10000, b"header....")
    mem.write(0x10100, b"payload")
    head = pair.drv.add_indirect(mem, 0x20000, [(0x10000, 10), (0x10100, 7)], [(0x10200, 32), (0x10300, 32)], token="ind")
    assert pair.drv.num_free == 7
    ring_desc = unpack_descriptor(mem.read(pair.lay.desc + 16 * head, 16))
    assert (ring_desc.addr, ring_desc.len, ring_desc.flags) == (0x20000, 64, VRING_DESC_F_INDIRECT)
    pair.drv.publish(mem)
    chain = pair.dev.pop(mem)
    assert chain.indirect
    assert chain.read(mem) == b"header....payload"
    assert chain.writable == [(0x10200, 32), (0x10300, 32)]
    n = chain.write(mem, b"r" * 40)
    pair.dev.push(mem, chain.head, n)
    assert pair.drv.reap(mem) == [("ind", 40)]
    assert mem.read(0x10200, 32) + mem.read(0x10300, 8) == b"r" * 40
    assert pair.drv.num_free == 8


def test_many_indirect_buffers_fill_the_ring(pair, mem):
    for i in range(8):
        pair.drv.add_indirect(mem, 0x20000 + 0x100 * i, [(0x10000, 1)] * 8, [], token=i)
    with pytest.raises(QueueFull):
        pair.drv.add_indirect(mem, 0x30000, [(0x10000, 1)], [], token=8)
    pair.drv.publish(mem)
    chains = [pair.dev.pop(mem) for _ in range(8)]
    assert all(c.readable_len == 8 and c.desc_count == 9 for c in chains)


# -- wrap-around --------------------------------------------------------------
@pytest.mark.parametrize("event_idx", [False, True])
def test_traffic_across_the_16_bit_wrap(mem, event_idx):
    pair = Pair(mem, size=8, start_idx=65530, event_idx=event_idx)
    sent = received = 0
    while received < 40:
        while pair.drv.num_free and sent < 40:
            gpa = 0x10000 + 0x100 * (sent % 8)
            mem.write(gpa, struct.pack("<I", sent))
            pair.drv.add(mem, [(gpa, 4)], [(gpa + 0x80, 4)], token=sent)
            sent += 1
        pair.drv.publish(mem)
        while (chain := pair.dev.pop(mem)) is not None:
            (value,) = struct.unpack("<I", chain.read(mem))
            pair.dev.push(mem, chain.head, chain.write(mem, struct.pack("<I", value * 3)))
        for token, written in pair.drv.reap(mem):
            assert token == received
            assert written == 4
            gpa = 0x10000 + 0x100 * (token % 8)
            assert struct.unpack("<I", mem.read(gpa + 0x80, 4))[0] == token * 3
            received += 1
    assert pair.drv.avail_idx == pair.dev.next_avail == (65530 + 40) & 0xFFFF == 34
    assert pair.drv.last_used == pair.dev.used_idx == 34


def test_traffic_in_two_regions_with_a_gap():
    mem = gap_memory()
    pair = Pair(mem, size=16, base=0x21000)
    bufs = [0x100, 0x8000, 0x20100, 0x3FF00]  # both regions, up to the last bytes of the second
    for i, gpa in enumerate(bufs):
        mem.write(gpa, bytes([i + 1]) * 0x100)
        pair.drv.add(mem, [(gpa, 0x100)], [], token=gpa)
    pair.drv.publish(mem)
    while (chain := pair.dev.pop(mem)) is not None:
        assert chain.read(mem) == bytes([bufs.index(chain.readable[0][0]) + 1]) * 0x100
        pair.dev.push(mem, chain.head, 0)
    assert [tok for tok, _ in pair.drv.reap(mem)] == bufs


# -- kicks (available buffer notifications) ---------------------------------
def test_kick_follows_no_notify_without_event_idx(pair, mem):
    assert not pair.drv.should_kick(mem)  # nothing published
    pair.drv.add(mem, [(0x10000, 1)], [], token=0)
    pair.drv.publish(mem)
    assert pair.drv.should_kick(mem)
    assert not pair.drv.should_kick(mem)  # nothing new since
    pair.dev.disable_notifications(mem)
    pair.drv.add(mem, [(0x10000, 1)], [], token=1)
    pair.drv.publish(mem)
    assert not pair.drv.should_kick(mem)
    assert pair.dev.enable_notifications(mem) is True  # 2 pending: keep popping
    pair.drv.add(mem, [(0x10000, 1)], [], token=2)
    pair.drv.publish(mem)
    assert pair.drv.should_kick(mem)


def test_kick_follows_avail_event(mem):
    pair = Pair(mem, event_idx=True)
    drv, dev = pair.drv, pair.dev

    def offer(n):
        for _ in range(n):
            drv.add(mem, [(0x10000, 1)], [], token=None)
        drv.publish(mem)

    # avail_event starts at 0: the first buffer (entry 0) needs a kick
    offer(1)
    assert drv.should_kick(mem)
    # the device is busy and has not moved avail_event: no kicks
    offer(2)
    assert not drv.should_kick(mem)
    for _ in range(3):
        dev.pop(mem)
    assert dev.enable_notifications(mem) is False
    assert pair.avail_event() == 3
    offer(1)  # entry 3 written
    assert drv.should_kick(mem)
    offer(1)  # entry 4: avail_event still 3
    assert not drv.should_kick(mem)
    # a burst that covers the event kicks once
    dev.pop(mem)
    dev.pop(mem)
    dev.enable_notifications(mem)
    assert pair.avail_event() == 5
    offer(2)
    assert drv.avail_idx == 7
    assert drv.should_kick(mem)


@pytest.mark.parametrize("event_idx", [False, True])
def test_stop_notifications_turns_kicks_off_until_enabled(mem, event_idx):
    # A polling device: kicks off even right after an enable (with EVENT_IDX,
    # where disable_notifications leaves avail_event naming the next entry).
    pair = Pair(mem, event_idx=event_idx, start_idx=0xFFFE)     # across the 16-bit wrap
    drv, dev = pair.drv, pair.dev
    assert dev.enable_notifications(mem) is False
    dev.stop_notifications(mem)
    for token in range(5):
        drv.add(mem, [(0x10000, 1)], [], token=token)
        drv.publish(mem)
        assert not drv.should_kick(mem)
        assert dev.pop(mem) is not None
        dev.stop_notifications(mem)
    assert dev.enable_notifications(mem) is False
    drv.add(mem, [(0x10000, 1)], [], token=5)
    drv.publish(mem)
    assert drv.should_kick(mem)


@pytest.mark.parametrize("start_idx", [0, 0x7FFE, 0xFFFE])
def test_polling_device_that_pops_mid_batch_is_not_kicked(mem, start_idx):
    # The driver publishes a batch and only then reads avail_event; a polling
    # device can pop part of the batch and refresh its "kicks off" mark in
    # between. The mark must not land inside the batch the driver is about
    # to check (one behind the next entry did: a kick per such race).
    pair = Pair(mem, event_idx=True, start_idx=start_idx)
    drv, dev = pair.drv, pair.dev
    dev.stop_notifications(mem)

    def take():
        chain = dev.pop(mem)
        assert chain is not None
        dev.push(mem, chain.head, 0)

    for round_ in range(6):                 # 18 entries through an 8-entry ring
        for token in range(3):
            drv.add(mem, [(0x10000, 1)], [], token=token)
        drv.publish(mem)
        take()
        take()
        dev.stop_notifications(mem)
        assert not drv.should_kick(mem), f"round {round_}: avail_event {pair.avail_event():#x}"
        take()
        assert len(drv.reap(mem)) == 3
    assert dev.enable_notifications(mem) is False
    drv.add(mem, [(0x10000, 1)], [], token=9)
    drv.publish(mem)
    assert drv.should_kick(mem)


def test_kick_race_is_closed_by_the_recheck(mem):
    # The driver publishes after the device's last pop but before its enable;
    # the driver sees the stale avail_event and does not kick; the device's
    # enable_notifications re-check must find the buffer.
    pair = Pair(mem, event_idx=True)
    drv, dev = pair.drv, pair.dev
    drv.add(mem, [(0x10000, 1)], [], token=0)
    drv.publish(mem)
    assert drv.should_kick(mem)
    dev.pop(mem)
    drv.add(mem, [(0x10000, 1)], [], token=1)
    drv.publish(mem)
    assert not drv.should_kick(mem)  # avail_event is still 0
    assert dev.enable_notifications(mem) is True
    assert dev.pop(mem) is not None


# -- interrupts (used buffer notifications) ----------------------------------
def test_interrupts_follow_no_interrupt_without_event_idx(pair, mem):
    drv, dev = pair.drv, pair.dev
    for i in range(3):
        drv.add(mem, [(0x10000, 1)], [], token=i)
    drv.publish(mem)
    drv.disable_interrupts(mem)
    assert mem.read_u16(pair.lay.avail) == VRING_AVAIL_F_NO_INTERRUPT
    dev.push(mem, dev.pop(mem).head, 0)
    assert not dev.needs_notification(mem)
    assert drv.enable_interrupts(mem) is True  # one already used: reap it
    assert mem.read_u16(pair.lay.avail) == 0
    assert drv.reap(mem) == [(0, 0)]
    assert drv.enable_interrupts(mem) is False
    dev.push(mem, dev.pop(mem).head, 0)
    assert dev.needs_notification(mem)


def test_interrupts_follow_used_event(mem):
    pair = Pair(mem, event_idx=True)
    drv, dev = pair.drv, pair.dev
    for i in range(6):
        drv.add(mem, [(0x10000, 1)], [], token=i)
    drv.publish(mem)

    def complete(n):
        dev.push_many(mem, [(dev.pop(mem).head, 0) for _ in range(n)])
        return dev.needs_notification(mem)

    assert drv.enable_interrupts(mem) is False
    assert pair.used_event() == 0
    assert complete(1)  # entry 0 = used_event
    assert not complete(1)  # entry 1: the driver has not re-armed
    assert [t for t, _ in drv.reap(mem)] == [0, 1]
    assert drv.enable_interrupts(mem) is False
    assert pair.used_event() == 2
    assert complete(2)  # entries 2 and 3 cover used_event 2
    drv.disable_interrupts(mem)
    assert pair.used_event() == 1  # one behind what was reaped (2)
    assert mem.read_u16(pair.lay.avail) == 0  # flags stay 0 with EVENT_IDX
    assert not complete(2)
    assert drv.enable_interrupts(mem) is True  # four used, two reaped so far
    assert len(drv.reap(mem)) == 4


# -- reconnect ----------------------------------------------------------------
@pytest.mark.parametrize("event_idx", [False, True])
def test_reconnect_continues_from_next_avail_and_the_used_idx_in_memory(mem, event_idx):
    pair = Pair(mem, size=8, event_idx=event_idx)
    drv = pair.drv
    for i in range(6):
        drv.add(mem, [(0x10000 + i, 1)], [], token=i)
    drv.publish(mem)
    old = pair.dev
    for _ in range(4):
        old.push(mem, old.pop(mem).head, 0)
    assert [t for t, _ in drv.reap(mem)] == [0, 1, 2, 3]
    base = old.next_avail  # vhost-user GET_VRING_BASE
    assert base == 4
    # a new backend process: only the base survives, the used idx is in memory
    new = DeviceQueue.from_layout(pair.lay, event_idx=event_idx, next_avail=base)
    for i in range(6, 10):
        drv.add(mem, [(0x10000 + i, 1)], [], token=i)
    drv.publish(mem)
    got = []
    while (chain := new.pop(mem)) is not None:
        got.append(chain.readable[0][0] - 0x10000)
        new.push(mem, chain.head, 0)
    assert got == [4, 5, 6, 7, 8, 9]
    assert new.used_idx == 10
    assert [t for t, _ in drv.reap(mem)] == [4, 5, 6, 7, 8, 9]
    assert drv.num_free == 8


def test_reconnect_with_a_buffer_lost_in_flight(mem):
    # The old backend popped entry 2 and died before using it. The new one
    # starts after it, appends after the used idx it finds, and the driver
    # still matches tokens by head (the lost buffer just stays in flight).
    pair = Pair(mem, size=8)
    drv = pair.drv
    for i in range(4):
        drv.add(mem, [(0x10000 + i, 1)], [], token=i)
    drv.publish(mem)
    old = pair.dev
    c0, c1, _lost = old.pop(mem), old.pop(mem), old.pop(mem)
    old.push_many(mem, [(c0.head, 0), (c1.head, 0)])
    new = DeviceQueue.from_layout(pair.lay, next_avail=old.next_avail)
    chain = new.pop(mem)
    new.push(mem, chain.head, 0)
    assert new.used_idx == 3
    assert drv.reap(mem) == [(0, 0), (1, 0), (3, 0)]
    assert drv.in_flight == 1


# -- a misbehaving device ---------------------------------------------------
def used_entry(pair, slot, head, length):
    pair.mem.write(pair.lay.used + 4 + 8 * slot, struct.pack("<II", head, length))


def test_used_id_not_in_flight(pair, mem):
    pair.drv.add(mem, [(0x10000, 1)], [], token=0)
    pair.drv.publish(mem)
    used_entry(pair, 0, 5, 0)
    mem.write_u16(pair.lay.used + 2, 1)
    with pytest.raises(QueueBroken, match="descriptor 5"):
        pair.drv.reap(mem)
    assert pair.drv.broken
    for call in (pair.drv.reap, pair.drv.publish, pair.drv.should_kick, pair.drv.pending_used, pair.drv.enable_interrupts):
        with pytest.raises(QueueBroken):
            call(mem)
    with pytest.raises(QueueBroken):
        pair.drv.add(mem, [(0x10000, 1)], [], token=1)


def test_used_id_out_of_range(pair, mem):
    pair.drv.add(mem, [(0x10000, 1)], [], token=0)
    pair.drv.publish(mem)
    used_entry(pair, 0, 0xFFFF_FFFF, 0)
    mem.write_u16(pair.lay.used + 2, 1)
    with pytest.raises(QueueBroken, match="not a buffer in flight"):
        pair.drv.reap(mem)


def test_used_id_returned_twice(pair, mem):
    head = pair.drv.add(mem, [(0x10000, 1)], [], token=0)
    pair.drv.add(mem, [(0x10000, 1)], [], token=1)
    pair.drv.publish(mem)
    used_entry(pair, 0, head, 0)
    used_entry(pair, 1, head, 0)
    mem.write_u16(pair.lay.used + 2, 2)
    with pytest.raises(QueueBroken):
        pair.drv.reap(mem)


def test_used_idx_ahead_of_what_was_published(pair, mem):
    pair.drv.add(mem, [(0x10000, 1)], [], token=0)
    pair.drv.add(mem, [(0x10000, 1)], [], token=1)
    pair.drv.publish(mem)
    mem.write_u16(pair.lay.used + 2, 3)
    with pytest.raises(QueueBroken, match="only 2 buffers published"):
        pair.drv.pending_used(mem)


def test_used_len_above_capacity_is_clamped_and_counted(pair, mem):
    pair.drv.add(mem, [(0x10000, 8)], [(0x10100, 16)], token="rx")
    pair.drv.publish(mem)
    chain = pair.dev.pop(mem)
    pair.dev.push(mem, chain.head, 1000)
    assert pair.drv.reap(mem) == [("rx", 16)]
    assert pair.drv.len_clamped == 1
