"""Virtio feature bits: the generic ones and those of the network device.

Constants are bit *numbers*, as the spec lists them; `mask(*bits)` turns them
into a feature word and `describe(word)` back into names (for logs, traces
and the CLI). A guest shows its negotiated word in
/sys/bus/virtio/devices/*/features, character i being bit i.
"""
from __future__ import annotations

__all__ = [
    "VIRTIO_NET_F_CSUM",
    "VIRTIO_NET_F_GUEST_CSUM",
    "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS",
    "VIRTIO_NET_F_MTU",
    "VIRTIO_NET_F_MAC",
    "VIRTIO_NET_F_GSO",
    "VIRTIO_NET_F_GUEST_TSO4",
    "VIRTIO_NET_F_GUEST_TSO6",
    "VIRTIO_NET_F_GUEST_ECN",
    "VIRTIO_NET_F_GUEST_UFO",
    "VIRTIO_NET_F_HOST_TSO4",
    "VIRTIO_NET_F_HOST_TSO6",
    "VIRTIO_NET_F_HOST_ECN",
    "VIRTIO_NET_F_HOST_UFO",
    "VIRTIO_NET_F_MRG_RXBUF",
    "VIRTIO_NET_F_STATUS",
    "VIRTIO_NET_F_CTRL_VQ",
    "VIRTIO_NET_F_CTRL_RX",
    "VIRTIO_NET_F_CTRL_VLAN",
    "VIRTIO_NET_F_CTRL_RX_EXTRA",
    "VIRTIO_NET_F_GUEST_ANNOUNCE",
    "VIRTIO_NET_F_MQ",
    "VIRTIO_NET_F_CTRL_MAC_ADDR",
    "VIRTIO_NET_F_HASH_REPORT",
    "VIRTIO_NET_F_RSS",
    "VIRTIO_NET_F_SPEED_DUPLEX",
    "VIRTIO_F_NOTIFY_ON_EMPTY",
    "VIRTIO_F_ANY_LAYOUT",
    "VIRTIO_F_RING_INDIRECT_DESC",
    "VIRTIO_F_RING_EVENT_IDX",
    "VIRTIO_F_VERSION_1",
    "VIRTIO_F_ACCESS_PLATFORM",
    "VIRTIO_F_RING_PACKED",
    "VIRTIO_F_IN_ORDER",
    "VIRTIO_F_ORDER_PLATFORM",
    "VIRTIO_F_SR_IOV",
    "VIRTIO_F_NOTIFICATION_DATA",
    "VIRTIO_F_RING_RESET",
    "FEATURE_NAMES",
    "mask",
    "has",
    "describe",
]

# -- virtio-net device bits (0-23 and 50-63) ----------------------------------
VIRTIO_NET_F_CSUM = 0  # device handles packets with partial checksum (TX offload)
VIRTIO_NET_F_GUEST_CSUM = 1  # driver handles packets with partial checksum (RX)
VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_GSO = 6  # legacy only
VIRTIO_NET_F_GUEST_TSO4 = 7
VIRTIO_NET_F_GUEST_TSO6 = 8
VIRTIO_NET_F_GUEST_ECN = 9
VIRTIO_NET_F_GUEST_UFO = 10
VIRTIO_NET_F_HOST_TSO4 = 11
VIRTIO_NET_F_HOST_TSO6 = 12
VIRTIO_NET_F_HOST_ECN = 13
VIRTIO_NET_F_HOST_UFO = 14
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_F_CTRL_VQ = 17
VIRTIO_NET_F_CTRL_RX = 18
VIRTIO_NET_F_CTRL_VLAN = 19
VIRTIO_NET_F_CTRL_RX_EXTRA = 20
VIRTIO_NET_F_GUEST_ANNOUNCE = 21
VIRTIO_NET_F_MQ = 22
VIRTIO_NET_F_CTRL_MAC_ADDR = 23
VIRTIO_NET_F_HASH_REPORT = 57  # makes the header 20 bytes; see net_hdr
VIRTIO_NET_F_RSS = 60
VIRTIO_NET_F_SPEED_DUPLEX = 63

# -- device-independent bits (24-41) ------------------------------------------
VIRTIO_F_NOTIFY_ON_EMPTY = 24  # legacy
VIRTIO_F_ANY_LAYOUT = 27  # legacy; implied by VERSION_1
VIRTIO_F_RING_INDIRECT_DESC = 28
VIRTIO_F_RING_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34
VIRTIO_F_IN_ORDER = 35
VIRTIO_F_ORDER_PLATFORM = 36
VIRTIO_F_SR_IOV = 37
VIRTIO_F_NOTIFICATION_DATA = 38
VIRTIO_F_RING_RESET = 40

# Bit number -> short name; built from the constants above so the two agree.
FEATURE_NAMES: dict[int, str] = {
    value: name.removeprefix("VIRTIO_NET_F_").removeprefix("VIRTIO_F_")
    for name, value in list(globals().items())
    if name.startswith(("VIRTIO_NET_F_", "VIRTIO_F_")) and isinstance(value, int)
}
# Bit 30 is not virtio's: vhost-user borrows it in GET/SET_FEATURES.
FEATURE_NAMES[30] = "VHOST_USER_PROTOCOL_FEATURES"


def mask(*bits: int) -> int:
    """The feature word with the given bit numbers set."""
    word = 0
    for bit in bits:
        if not 0 <= bit < 64:
            raise ValueError(f"feature bit {bit} is not in 0..63")
        word |= 1 << bit
    return word


def has(features: int, bit: int) -> bool:
    """Is feature bit number `bit` set in the word `features`?"""
    return bool(features >> bit & 1)


def describe(features: int) -> list[str]:
    """Names of the bits set in a feature word, lowest first ("bitN" if unknown)."""
    if not 0 <= features < 1 << 64:
        raise ValueError(f"feature word {features!r} is not a u64")
    return [FEATURE_NAMES.get(bit, f"bit{bit}") for bit in range(64) if features >> bit & 1]
