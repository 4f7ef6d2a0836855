"""Split rings as a hostile driver writes them, for property tests of the
device half (the Python queue and the C kernels alike), and a GuestMemory
that checks every access it is asked for."""
import struct

from hypothesis import strategies as st

from nicdev.virtio.device_queue import DeviceQueue
from nicdev.virtio.memory import GuestMemory, GuestMemoryError, MemoryRegion
from nicdev.virtio.ring import DESC_SIZE, SplitRingLayout, pack_descriptor

RING_BASE = 0x1000
TABLE_GPA = 0x6000  # where hostile indirect tables are put
REGIONS = {
    "flat": [(0, 0x10000)],
    "gap": [(0, 0x10000), (0x20000, 0x8000)],
    "adjacent": [(0, 0x10000), (0x10000, 0x8000)],
}


class RecordingMemory(GuestMemory):
    """GuestMemory that logs every access and checks it independently.

    Each entry is (operation, gpa, length, succeeded). An access that
    succeeds must lie inside the regions by the test's own arithmetic, not
    only by GuestMemory's."""

    def __init__(self, spans):
        super().__init__([MemoryRegion(gpa, size, bytearray(size)) for gpa, size in spans])
        self.spans = spans
        self.log = []

    def inside(self, gpa, length):
        """[gpa, gpa+length) covered by regions (adjacent ones may be chained)."""
        end = gpa + length
        while gpa < end:
            for start, size in self.spans:
                if start <= gpa < start + size:
                    gpa = start + size
                    break
            else:
                return False
        return True

    def _call(self, op, gpa, length, fn, *args):
        try:
            result = fn(gpa, *args)
        except GuestMemoryError:
            self.log.append((op, gpa, length, False))
            raise
        assert self.inside(gpa, length), f"{op} {gpa:#x}+{length} succeeded outside the regions"
        self.log.append((op, gpa, length, True))
        return result

    def read(self, gpa, length):
        return self._call("read", gpa, length, super().read, length)

    def read_into(self, gpa, out):
        return self._call("read", gpa, len(out), super().read_into, out)

    def write(self, gpa, data):
        return self._call("write", gpa, len(memoryview(data).cast("B")), super().write, data)

    def view(self, gpa, length):
        return self._call("view", gpa, length, super().view, length)

    def check(self, gpa, length):
        return self._call("check", gpa, length, super().check, length)

    def read_u16(self, gpa):
        return self._call("read", gpa, 2, super().read_u16)

    def write_u16(self, gpa, value):
        return self._call("write", gpa, 2, super().write_u16, value)

    def snapshot(self):
        return [bytes(r.view) for r in self.regions]


# -- strategies ---------------------------------------------------------------
def mostly(good, bad, odds=8):
    """`good` about odds times in odds+1, else `bad`: hostile enough to hit
    every check, tame enough that many chains get through."""
    return st.integers(0, odds).flatmap(lambda k: bad if k == 0 else good)


def addresses(size):
    """Buffer addresses: good ones, edges, holes, the ring itself, nonsense."""
    return mostly(
        st.integers(0x8000, 0xF000),
        st.one_of(
            st.sampled_from([0, 0xFFF0, 0xFFFF, 0x10000, 0x17FF8, 0x18000, 0x1FFF8, 0x20000, 0x27FF0, 0x28000]),
            st.just(TABLE_GPA),
            st.integers(RING_BASE, RING_BASE + 0x200),
            st.integers(0, (1 << 64) - 1),
            st.integers((1 << 64) - 0x100, (1 << 64) - 1),
        ),
    )


def lengths(size):
    return mostly(
        st.integers(0, 0x200),
        st.one_of(
            st.sampled_from([16, 32, 16 * size, 16 * size + 16, 0x8000, 0xFFFF_FFFF, 0x8000_0000]),
            st.integers(0, 0xFFFF_FFFF),
        ),
    )


def flags():
    # none, NEXT, WRITE, NEXT|WRITE, sometimes INDIRECT, rarely anything
    return mostly(st.sampled_from([0, 1, 1, 2, 3, 3, 4]), st.integers(0, 0xFFFF))


def nexts(size):
    return mostly(st.integers(0, size - 1), st.one_of(st.integers(0, size + 1), st.integers(0, 0xFFFF)))


@st.composite
def descriptors(draw, size):
    if draw(st.integers(0, 5)) == 0:  # a well-formed pointer to the table at TABLE_GPA
        return pack_descriptor(TABLE_GPA, 16 * draw(st.integers(1, size)), 4, 0)
    return pack_descriptor(draw(addresses(size)), draw(lengths(size)), draw(flags()), draw(nexts(size)))


@st.composite
def descriptor_tables(draw, size, count):
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(min_size=DESC_SIZE * count, max_size=DESC_SIZE * count))
    return b"".join(draw(descriptors(size)) for _ in range(count))


@st.composite
def hostile_rings(draw):
    size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    regions = draw(st.sampled_from(sorted(REGIONS)))
    next_avail = draw(st.one_of(st.just(0), st.integers(0, 0xFFFF), st.just(0xFFFF)))
    ahead = draw(mostly(st.integers(1, size), st.integers(0, 0xFFFF), odds=4))
    head = mostly(st.integers(0, size - 1), st.one_of(st.integers(0, size), st.integers(0, 0xFFFF)))
    heads = draw(st.lists(head, min_size=size, max_size=size))
    return dict(
        size=size,
        regions=regions,
        desc=draw(descriptor_tables(size, size)),
        table=draw(descriptor_tables(size, size + 1)),
        next_avail=next_avail,
        avail_idx=(next_avail + ahead) & 0xFFFF,
        avail_flags=draw(st.integers(0, 0xFFFF)),
        heads=heads,
        event_idx=draw(st.booleans()),
        indirect=draw(st.sampled_from([True, True, False])),
        payload=draw(st.binary(min_size=0, max_size=600)),
    )


def build(ring):
    mem = RecordingMemory(REGIONS[ring["regions"]])
    size = ring["size"]
    lay = SplitRingLayout(size, RING_BASE)
    mem.write(lay.desc, ring["desc"])
    mem.write(TABLE_GPA, ring["table"])
    mem.write(lay.avail, struct.pack(f"<HH{size}H", ring["avail_flags"], ring["avail_idx"], *ring["heads"]))
    mem.write(0x8000, bytes(range(256)) * 32)  # recognisable buffer contents
    queue = DeviceQueue.from_layout(
        lay, event_idx=ring["event_idx"], indirect=ring["indirect"], next_avail=ring["next_avail"]
    )
    mem.log.clear()
    return mem, lay, queue
