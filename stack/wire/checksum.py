"""The IPv4 pseudo-header sum that UDP and TCP checksums start from.

The Internet checksum itself (`ones_complement_sum`, `fold`,
`internet_checksum`, `verify`) is `nicdev.virtio.checksum`, the project's one
implementation and the one module outside `stack.wire` that it imports.
"""

from __future__ import annotations

from ipaddress import IPv4Address

__all__ = ["pseudo_header_sum_v4"]


def pseudo_header_sum_v4(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo-header used by UDP and TCP checksums.

    ``length`` is the transport header plus payload length in bytes.
    """
    s = int(src)
    d = int(dst)
    return (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + protocol + length
