"""One of the driver's rings as plain data, for a monitor: indexes, flags, what is in flight.

The rings run on the C kernels or their Python reference, which keep their
own copies of the indexes; what the device sees is in the ring memory the
driver shares with it. So the snapshot reads that memory (as
`stack.drivers.ring_trace` does): the avail and used indexes and flags, and
with EVENT_IDX the two event words; only `last_used` (how far the driver has
reaped) comes from the ring object. Read only: nothing here writes the ring.
"""
from __future__ import annotations

from nicdev.virtio.memory import GuestMemory
from nicdev.virtio.ring import USED_ELEM_SIZE

__all__ = ["ring_state"]


def _u16(mem: GuestMemory, gpa: int) -> int:
    return int.from_bytes(mem.read(gpa, 2), "little")


def ring_state(name: str, mem: GuestMemory, queue, ring, counters, direction: str) -> dict:
    """A dict for one ring: `name`, `size`, `avail_idx` and `used_idx` (as
    published in ring memory), `last_used` (the driver's reap point),
    `in_flight` (buffers the device holds: avail minus reaped), `used_pending`
    (used by the device, not yet reaped), the flags and event words, and the
    ring's counters from the driver's `counters` by `direction` ("rx"/"tx"):
    frames, bytes, kicks, interrupts (device notifications) and drops."""
    size = queue.size
    avail_idx = _u16(mem, queue.avail_gpa + 2)
    used_idx = _u16(mem, queue.used_gpa + 2)
    last_used = ring.last_used
    state = {
        "name": name,
        "size": size,
        "avail_idx": avail_idx,
        "used_idx": used_idx,
        "last_used": last_used,
        "in_flight": (avail_idx - last_used) & 0xFFFF,
        "used_pending": (used_idx - last_used) & 0xFFFF,
        "avail_flags": _u16(mem, queue.avail_gpa),
        "used_flags": _u16(mem, queue.used_gpa),
        "event_idx": bool(queue.event_idx),
        "used_event": _u16(mem, queue.avail_gpa + 4 + 2 * size) if queue.event_idx else None,
        "avail_event": _u16(mem, queue.used_gpa + 4 + USED_ELEM_SIZE * size) if queue.event_idx else None,
    }
    prefix = direction + "_"
    drops = {k[len(prefix) + 5:]: v for k, v in counters.items() if k.startswith(prefix + "drop_") and v}
    state.update(frames=counters.get(prefix + "frames", 0), bytes=counters.get(prefix + "bytes", 0),
                 kicks=counters.get(prefix + "kicks", 0), interrupts=counters.get(prefix + "interrupts", 0),
                 drops=sum(drops.values()), drop_reasons=drops)
    return state
