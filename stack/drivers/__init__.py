"""The stack's NIC layer: the only part of the stack that imports nicdev.

`Nic` (`nic.py`) is the interface the stack's core talks to, with the offload
vocabulary it shares with the device (`FrameMeta`, from nicdev.virtio).
`VirtioNetNic` (`virtio_driver.py`) is the stack's own virtio-net driver: the
driver half of the split ring plus a vhost-user front-end, so the stack plugs
into any vhost-user-net back-end (a port of our switch, DPDK's net_vhost) the
way a QEMU guest does; see docs/stack-driver.md. `LoopbackNicPair`
(`loopback.py`) wires two stacks back to back in one process, impaired if
asked with the project's one impairment model (`Impairment`, from
nicdev.virtio).
"""
from nicdev.virtio.impairment import Impairment, LinkImpairer
from stack.drivers.loopback import LoopbackNic, LoopbackNicPair
from stack.drivers.nic import DATA_VALID, GSO_TCPV4, NO_RX_META, FrameMeta, Nic, NicOffloads, TxFrames, TxItem
from stack.drivers.virtio_driver import VirtioNetNic

__all__ = [
    "DATA_VALID",
    "GSO_TCPV4",
    "NO_RX_META",
    "FrameMeta",
    "Impairment",
    "LinkImpairer",
    "LoopbackNic",
    "LoopbackNicPair",
    "Nic",
    "NicOffloads",
    "TxFrames",
    "TxItem",
    "VirtioNetNic",
]
