"""The driver's TX and RX rings on the selected data path.

`MNET_DATAPATH` (nicdev.virtio.kernels) picks the C kernels
(`driver_burst_c`) or the Python reference (`driver_burst`); both take the
same arguments and give the same results.
"""
from __future__ import annotations

from . import kernels
from .driver_burst import RxRing, TxRing
from .driver_events import DriverEvents
from .driver_queue import DriverQueue
from .memory import GuestMemory

__all__ = ["tx_ring", "rx_ring"]


def tx_ring(queue: DriverQueue, mem: GuestMemory, *args, c: bool | None = None, events: DriverEvents | None = None):
    """A `TxRing` (arguments as its) on the selected data path; `c` overrides the selection."""
    if kernels.use_c() if c is None else c:
        from .driver_burst_c import CTxRing
        return CTxRing(queue, mem, *args, events=events)
    return TxRing(queue, mem, *args, events=events)


def rx_ring(queue: DriverQueue, mem: GuestMemory, *args, c: bool | None = None, events: DriverEvents | None = None):
    """An `RxRing` (arguments as its) on the selected data path; `c` overrides the selection."""
    if kernels.use_c() if c is None else c:
        from .driver_burst_c import CRxRing
        return CRxRing(queue, mem, *args, events=events)
    return RxRing(queue, mem, *args, events=events)
