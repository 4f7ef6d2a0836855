"""vhost-user protocol constants and wire structures (QEMU docs/interop/vhost-user.rst).

Everything here is plain data: request ids, header flags, protocol feature
bits and the `struct` layouts of the payloads. The spec says "machine native
byte order"; every host we run on is little-endian x86-64/arm64, and both
peers share the machine, so the layouts use native order with standard sizes
and no padding ("=").
"""
from __future__ import annotations

import enum
import struct

__all__ = [
    "Request", "BackendRequest", "ProtocolFeature",
    "VERSION", "VERSION_MASK", "FLAG_REPLY", "FLAG_NEED_REPLY", "KNOWN_FLAGS",
    "F_PROTOCOL_FEATURES", "VRING_IDX_MASK", "VRING_NOFD", "VRING_F_LOG",
    "MAX_REGIONS", "MAX_PAYLOAD", "HEADER", "HEADER_SIZE", "U64", "VRING_STATE",
    "VRING_ADDR", "MEMORY_HEADER", "MEMORY_REGION", "SINGLE_MEMORY_REGION", "LOG",
    "CONFIG_HEADER", "protocol_feature_names",
]


class Request(enum.IntEnum):
    """Front-end -> back-end requests (ids from the spec)."""

    NONE = 0
    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21     # SET_SLAVE_REQ_FD in older texts
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class BackendRequest(enum.IntEnum):
    """Back-end -> front-end requests, sent on the SET_BACKEND_REQ_FD channel."""

    NONE = 0
    IOTLB_MSG = 1
    CONFIG_CHANGE_MSG = 2
    VRING_HOST_NOTIFIER_MSG = 3
    VRING_CALL = 4
    VRING_ERR = 5


class ProtocolFeature(enum.IntEnum):
    """Bit numbers of the protocol features (GET/SET_PROTOCOL_FEATURES)."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    NET_MTU = 4
    BACKEND_REQ = 5             # SLAVE_REQ in older texts
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16


def protocol_feature_names(bits: int) -> list[str]:
    """Names of the protocol feature bits set in `bits` (unknown bits as 'bitN')."""
    names = []
    for n in range(64):
        if bits >> n & 1:
            try:
                names.append(ProtocolFeature(n).name)
            except ValueError:
                names.append(f"bit{n}")
    return names


# -- header flags ---------------------------------------------------------
VERSION = 0x1
VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
KNOWN_FLAGS = VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY

# Virtio feature bit 30, reused by vhost-user: "I speak protocol features".
F_PROTOCOL_FEATURES = 30

# SET_VRING_KICK/CALL/ERR u64: bits 0-7 ring index, bit 8 "no fd in this message".
VRING_IDX_MASK = 0xFF
VRING_NOFD = 0x100

# SET_VRING_ADDR flags: log used-ring writes (live migration).
VRING_F_LOG = 0x1

MAX_REGIONS = 8
# No message we accept comes near this; a bigger size field is garbage or an
# attempt to make us buffer a lot before we notice.
MAX_PAYLOAD = 4096

# -- wire layouts -----------------------------------------------------------
HEADER = struct.Struct("=III")                  # request, flags, size
HEADER_SIZE = HEADER.size                       # 12
U64 = struct.Struct("=Q")
VRING_STATE = struct.Struct("=II")              # index, num
VRING_ADDR = struct.Struct("=IIQQQQ")           # index, flags, desc, used, avail, log
MEMORY_HEADER = struct.Struct("=II")            # nregions, padding
MEMORY_REGION = struct.Struct("=QQQQ")          # gpa, size, uva, mmap_offset
SINGLE_MEMORY_REGION = struct.Struct("=QQQQQ")  # padding, gpa, size, uva, mmap_offset
LOG = struct.Struct("=QQ")                      # size, offset
CONFIG_HEADER = struct.Struct("=III")           # offset, size, flags (+ size bytes)
