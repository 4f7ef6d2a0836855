"""An optional trace of a driver's rings: what was added, reaped and kicked.

A `DriverEvents` handed to a ring (`driver_burst.TxRing`/`RxRing`, their C
twins, or a `DriverQueue` itself as `queue.events`) collects one record per
event, `(kind, id, len, extra)`, oldest first:

  TX_ADD    a TX buffer was added: its head, its length (virtio_net_hdr and
            frame), and how many descriptors it takes
  USED      a used entry was reaped: its id and length (clamped to the buffer)
  RX_POST   a receive buffer was posted: its head and length
  RX_USED   a receive buffer was consumed: its id, the length written, and
            the num_buffers of its header (0 for a continuation buffer of a
            mergeable frame or one too short for a header)
  KICK      a burst was published and the device wants a kick: the avail idx
  NO_KICK   ...the device said it needs none (EVENT_IDX, NO_NOTIFY)

The C kernels fill the same records into a C array (`csrc/driver_burst.h`,
`struct mnet_drv_events`) only when a ring has one: without a trace, each
event site costs one NULL test. Both paths give identical records (the
differential tests). Records past `capacity` are counted in `lost`, not
kept, on both paths. One `DriverEvents` serves the rings of one data path.
"""
from __future__ import annotations

__all__ = ["DriverEvents"]


class DriverEvents:
    """Records of a driver's ring events; see the module doc."""

    TX_ADD, USED, RX_POST, RX_USED, KICK, NO_KICK = 1, 2, 3, 4, 5, 6
    NAMES = {1: "TX_ADD", 2: "USED", 3: "RX_POST", 4: "RX_USED", 5: "KICK", 6: "NO_KICK"}

    def __init__(self, capacity: int = 4096) -> None:
        if not 0 < capacity < 1 << 32:
            raise ValueError(f"an event buffer holds 1 to 2**32 - 1 records, not {capacity}")
        self.capacity = capacity
        self._records: list[tuple[int, int, int, int]] = []
        self._lost = 0
        self._c = None          # the C table, once a C ring was given this trace

    def add(self, kind: int, ident: int, length: int, extra: int = 0) -> None:
        """One record (the Python rings' way in)."""
        if self._c is not None:
            raise ValueError("this DriverEvents traces C rings: give the Python rings their own")
        if len(self._records) >= self.capacity:
            self._lost += 1
            return
        self._records.append((kind, ident, length, extra))

    def c_table(self, ffi):
        """The C `struct mnet_drv_events *` (made once) for the C rings."""
        if self._records:
            raise ValueError("this DriverEvents traces Python rings: give the C rings their own")
        if self._c is None:
            entries = ffi.new("struct mnet_drv_event[]", self.capacity)
            self._c = (ffi.new("struct mnet_drv_events *", {"capacity": self.capacity, "events": entries}), entries)
        return self._c[0]

    @property
    def lost(self) -> int:
        """Records not kept since the last `records()`: the buffer was full."""
        return self._lost if self._c is None else self._c[0].lost

    def records(self) -> list[tuple[int, int, int, int]]:
        """The records so far, oldest first; the buffer starts again (and `lost` at 0)."""
        if self._c is None:
            out, self._records, self._lost = self._records, [], 0
            return out
        table, entries = self._c
        out = [(e.kind, e.id, e.len, e.extra) for e in entries[0:table.count]]
        table.count = table.lost = 0
        return out
