"""Split-ring layout, descriptor packing and the EVENT_IDX arithmetic."""
import pytest

from nicdev.virtio.ring import (
    MAX_QUEUE_SIZE,
    Descriptor,
    SplitRingLayout,
    avail_ring_bytes,
    check_queue_size,
    pack_descriptor,
    unpack_descriptor,
    used_ring_bytes,
    vring_need_event,
)


def test_layout_of_a_256_entry_ring_at_an_aligned_base():
    lay = SplitRingLayout(256, 0x1000)
    assert lay.desc == 0x1000
    assert lay.avail == 0x1000 + 16 * 256
    # avail ring is 6 + 2*256 = 518 bytes; the used ring is rounded up to 4
    assert lay.used == 0x2000 + 520
    assert lay.end == lay.used + 6 + 8 * 256
    assert lay.total_size == lay.end - 0x1000


def test_layout_aligns_each_part():
    lay = SplitRingLayout(1, 0x1003)
    assert lay.desc == 0x1010
    assert lay.avail == 0x1020
    assert lay.avail % 2 == 0
    assert lay.used == 0x1028  # 0x1020 + 8 bytes of avail ring, already 4-aligned
    assert lay.used % 4 == 0
    assert lay.total_size == lay.end - 0x1003


def test_layout_sizes_match_the_spec_table():
    for size in (1, 2, 64, 256, 1024, MAX_QUEUE_SIZE):
        assert avail_ring_bytes(size) == 6 + 2 * size
        assert used_ring_bytes(size) == 6 + 8 * size
        assert avail_ring_bytes(size, event_idx=False) == 4 + 2 * size
        assert used_ring_bytes(size, event_idx=False) == 4 + 8 * size


@pytest.mark.parametrize("size", [0, -1, 3, 100, 65536, MAX_QUEUE_SIZE * 2, 1.0, "8"])
def test_bad_queue_sizes_are_refused(size):
    with pytest.raises(ValueError):
        check_queue_size(size)
    with pytest.raises(ValueError):
        SplitRingLayout(size)


def test_negative_base_is_refused():
    with pytest.raises(ValueError):
        SplitRingLayout(8, -16)


@pytest.mark.parametrize("size", [1, 2, 4, 256, MAX_QUEUE_SIZE])
def test_good_queue_sizes_pass(size):
    assert check_queue_size(size) == size


def test_descriptor_is_16_little_endian_bytes():
    raw = pack_descriptor(0x1122334455667788, 0x99AABBCC, 3, 0x0102)
    assert raw == bytes.fromhex("8877665544332211" "ccbbaa99" "0300" "0201")
    assert unpack_descriptor(raw) == Descriptor(0x1122334455667788, 0x99AABBCC, 3, 0x0102)
    assert unpack_descriptor(b"\0" * 16 + raw, 16).next == 0x0102


@pytest.mark.parametrize(
    "event, new, old, expected",
    [
        (0, 1, 0, True),  # the spec's example: used_event 0 -> notify after the first buffer
        (0, 2, 1, False),  # already past the event
        (1, 1, 0, False),  # event not reached yet (entry 1 not written)
        (1, 2, 0, True),  # a burst that covers the event
        (5, 10, 5, True),  # event equal to old: the first new entry is the event
        (4, 10, 5, False),  # event just before old
        (9, 10, 5, True),  # event is the last new entry
        (10, 10, 5, False),  # event is the next entry, not written yet
        (65535, 0, 65534, True),  # wrap: entry 65535 written, idx wrapped to 0
        (65535, 2, 65530, True),
        (0, 2, 65530, True),
        (3, 2, 65530, False),
        (7, 7, 7, False),  # nothing new, never notify
    ],
)
def test_vring_need_event(event, new, old, expected):
    assert vring_need_event(event, new, old) is expected


def test_vring_need_event_equals_the_definition_over_a_window():
    # Brute force against "event is among the entries old..new-1, modulo 2**16".
    for old in (0, 1, 100, 65530, 65535):
        for count in range(0, 9):
            new = (old + count) & 0xFFFF
            written = {(old + i) & 0xFFFF for i in range(count)}
            for event in range(old - 3, old + 12):
                event &= 0xFFFF
                assert vring_need_event(event, new, old) is (event in written), (event, new, old)

