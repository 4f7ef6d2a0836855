"""Virtio building blocks: guest memory, the split virtqueue (both halves),
feature bits and virtio_net_hdr. Knows nothing of vhost-user or networking.

    mem = GuestMemory([MemoryRegion(gpa, size, buf)])
    dev = DeviceQueue(size, desc_gpa, avail_gpa, used_gpa, event_idx=True)
    chain = dev.pop(mem)            # DescriptorChain | None, or QueueBroken
    dev.push(mem, chain.head, chain.write(mem, data))
"""
from .device_queue import MAX_CHAIN_BYTES, DescriptorChain, DeviceQueue
from .driver_queue import DriverQueue, QueueFull
from .features import describe, has, mask
from .memory import GuestMemory, GuestMemoryError, MemoryRegion
from .net_hdr import NetHdr, NetHdrError, header_size
from .ring import (
    MAX_QUEUE_SIZE,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
    Descriptor,
    QueueBroken,
    SplitRingLayout,
    check_queue_size,
    vring_need_event,
)

__all__ = [
    "GuestMemory",
    "GuestMemoryError",
    "MemoryRegion",
    "SplitRingLayout",
    "Descriptor",
    "DeviceQueue",
    "DescriptorChain",
    "DriverQueue",
    "QueueBroken",
    "QueueFull",
    "NetHdr",
    "NetHdrError",
    "header_size",
    "describe",
    "has",
    "mask",
    "check_queue_size",
    "vring_need_event",
    "MAX_QUEUE_SIZE",
    "MAX_CHAIN_BYTES",
    "VRING_DESC_F_NEXT",
    "VRING_DESC_F_WRITE",
    "VRING_DESC_F_INDIRECT",
    "VRING_AVAIL_F_NO_INTERRUPT",
    "VRING_USED_F_NO_NOTIFY",
]
