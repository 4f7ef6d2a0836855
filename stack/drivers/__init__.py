"""NIC drivers for the MultiOS stack.

`VirtioNetNic` is the stack's own virtio-net driver: the driver half of the
split ring plus a vhost-user front-end, so the stack plugs into any
vhost-user-net back-end (a port of our switch, DPDK's net_vhost) the way a
QEMU guest does. See docs/stack-driver.md.
"""
from stack.drivers.virtio_net import VirtioNetNic

__all__ = ["VirtioNetNic"]
