"""Guest memory: guest-physical addresses to bytes, with bounds checked.

A virtio device never trusts an address it reads from a ring. Every access
goes through `GuestMemory`, which refuses anything not wholly inside the
regions it was given. Regions come from a vhost-user SET_MEM_TABLE (mmap'd
fds) or, in tests and in the stack's own driver, from a bytearray or a memfd.

Each region also knows the frontend's *virtual* address (`uva`) for it:
SET_VRING_ADDR carries frontend virtual addresses while descriptors carry
guest-physical ones, so both translations live here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["GuestMemoryError", "MemoryRegion", "GuestMemory"]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GuestMemoryError(Exception):
    """An address or length that falls outside the guest's memory regions."""


@dataclass
class MemoryRegion:
    """One contiguous range of guest memory.

    `buf` is anything that gives a writable buffer of exactly `size` bytes
    (an mmap, a bytearray). `uva` is the frontend's virtual address of the
    region's first byte (0 when nobody translates virtual addresses).
    """

    gpa: int
    size: int
    buf: object
    uva: int = 0
    view: memoryview = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.gpa < 0 or self.size <= 0:
            raise ValueError(f"bad region gpa={self.gpa:#x} size={self.size:#x}")
        view = memoryview(self.buf).cast("B")
        if len(view) < self.size:
            raise ValueError(f"region buffer is {len(view)} bytes, region says {self.size}")
        self.view = view[: self.size]

    @property
    def end(self) -> int:
        return self.gpa + self.size

    def release(self) -> None:
        self.view.release()


class GuestMemory:
    """A set of non-overlapping regions, addressed by guest-physical address."""

    def __init__(self, regions: list[MemoryRegion] | tuple = ()) -> None:
        ordered = sorted(regions, key=lambda r: r.gpa)
        for a, b in zip(ordered, ordered[1:]):
            if b.gpa < a.end:
                raise ValueError(f"memory regions overlap: [{a.gpa:#x},{a.end:#x}) and [{b.gpa:#x},{b.end:#x})")
        for a, b in _pairs_by(ordered, key=lambda r: r.uva):
            if a.uva and b.uva and b.uva < a.uva + a.size:
                raise ValueError(f"memory regions overlap in virtual addresses at {b.uva:#x}")
        self.regions: list[MemoryRegion] = ordered
        self._last: MemoryRegion | None = ordered[0] if ordered else None

    # -- lookup ---------------------------------------------------------
    def _region(self, gpa: int) -> MemoryRegion:
        for r in self.regions:
            if r.gpa <= gpa < r.end:
                return r
        raise GuestMemoryError(f"address {gpa:#x} is outside guest memory")

    def check(self, gpa: int, length: int) -> None:
        """Raise GuestMemoryError unless [gpa, gpa+length) is all mapped."""
        for _ in self._spans(gpa, length):
            pass

    def _spans(self, gpa: int, length: int):
        """Yield (region view, offset, count) covering [gpa, gpa+length).

        A range may cross from one region into an adjacent one."""
        if length < 0 or gpa < 0:
            raise GuestMemoryError(f"bad range {gpa:#x}+{length}")
        if gpa + length > 1 << 64:
            raise GuestMemoryError(f"range {gpa:#x}+{length} overflows 64 bits")
        # Fast path: nearly every access lies inside one region, and usually
        # the same region as the last one (one big guest RAM region).
        r = self._last
        if r is not None and r.gpa <= gpa and gpa + length <= r.gpa + r.size:
            return [(r.view, gpa - r.gpa, length)] if length else []
        spans = []
        while length > 0:
            r = self._region(gpa)
            self._last = r
            off = gpa - r.gpa
            n = min(length, r.size - off)
            spans.append((r.view, off, n))
            gpa += n
            length -= n
        return spans

    # -- bytes ----------------------------------------------------------
    def read(self, gpa: int, length: int) -> bytes:
        spans = self._spans(gpa, length)
        if len(spans) == 1:
            view, off, n = spans[0]
            return bytes(view[off : off + n])
        return b"".join(bytes(v[o : o + n]) for v, o, n in spans)

    def read_into(self, gpa: int, out: memoryview) -> None:
        pos = 0
        for view, off, n in self._spans(gpa, len(out)):
            out[pos : pos + n] = view[off : off + n]
            pos += n

    def write(self, gpa: int, data) -> None:
        data = memoryview(data).cast("B")
        pos = 0
        for view, off, n in self._spans(gpa, len(data)):
            view[off : off + n] = data[pos : pos + n]
            pos += n

    def view(self, gpa: int, length: int) -> memoryview:
        """A zero-copy view; the range must lie inside one region."""
        spans = self._spans(gpa, length)
        if len(spans) != 1:
            if not spans:
                return memoryview(b"")
            raise GuestMemoryError(f"range {gpa:#x}+{length} crosses a region boundary")
        view, off, n = spans[0]
        return view[off : off + n]

    # -- little-endian integers (virtio 1.x is little-endian) -------------
    def read_u16(self, gpa: int) -> int:
        r = self._region(gpa)
        off = gpa - r.gpa
        if off + 2 > r.size:
            return _U16.unpack(self.read(gpa, 2))[0]
        return _U16.unpack_from(r.view, off)[0]

    def write_u16(self, gpa: int, value: int) -> None:
        r = self._region(gpa)
        off = gpa - r.gpa
        if off + 2 > r.size:
            self.write(gpa, _U16.pack(value))
        else:
            _U16.pack_into(r.view, off, value)

    def read_u32(self, gpa: int) -> int:
        return _U32.unpack(self.read(gpa, 4))[0]

    def write_u32(self, gpa: int, value: int) -> None:
        self.write(gpa, _U32.pack(value))

    def read_u64(self, gpa: int) -> int:
        return _U64.unpack(self.read(gpa, 8))[0]

    def write_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, _U64.pack(value))

    # -- address translation --------------------------------------------
    def uva_to_gpa(self, uva: int, length: int = 1) -> int:
        """Translate a frontend virtual address (SET_VRING_ADDR) to a GPA."""
        for r in self.regions:
            if r.uva <= uva and uva + length <= r.uva + r.size:
                return r.gpa + (uva - r.uva)
        raise GuestMemoryError(f"virtual address {uva:#x}+{length} is in no region")

    def release(self) -> None:
        # The C kernels' table of these regions (kernels.mem_table) holds their
        # buffers: it lets go first, or an mmap region could not be closed.
        table = self.__dict__.pop("_c_table", None)
        if table is not None:
            table.release()
        for r in self.regions:
            r.release()
        self.regions = []
        self._last = None


def _pairs_by(items, key):
    ordered = sorted(items, key=key)
    return zip(ordered, ordered[1:])
