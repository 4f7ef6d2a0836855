"""vhost-user messages: parse and encode, both directions, with typed payloads.

A message is a 12-byte header (request, flags, size), `size` bytes of payload
and, for a few requests, file descriptors passed beside it (SCM_RIGHTS). The
same code serves the back-end (parse requests, encode replies) and a
front-end (encode requests, parse replies), so the two stay symmetric.

Payloads are typed where we understand them:

    u64 payloads                       int
    vring state (index, num)           VringState
    vring address                      VringAddr
    KICK/CALL/ERR u64 (index, NOFD)    VringFile
    memory table (<= 8 regions)        MemoryTable of MemoryRegionDesc
    single memory region               SingleMemoryRegion
    log area                           LogArea
    device config space               ConfigSpace
    SEND_RARP's MAC                    RarpMac
    anything else                      bytes

Nothing from the wire is trusted: `parse` raises `ProtocolError` (with a
`reason`) for short or oversized messages, a size field that disagrees with
the payload, unknown requests, the wrong number of fds, and memory tables that
are too long, overlap or have empty regions. `parse` never closes fds; the
caller owns them (and closes them when it rejects the message).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .protocol import (
    CONFIG_HEADER, FLAG_NEED_REPLY, FLAG_REPLY, HEADER, HEADER_SIZE, KNOWN_FLAGS, LOG, MAX_PAYLOAD,
    MAX_REGIONS, MEMORY_HEADER, MEMORY_REGION, SINGLE_MEMORY_REGION, U64, VERSION, VERSION_MASK,
    VRING_ADDR, VRING_IDX_MASK, VRING_NOFD, VRING_STATE, BackendRequest, Request,
)

__all__ = [
    "ProtocolError", "VringState", "VringAddr", "VringFile", "MemoryRegionDesc", "MemoryTable",
    "SingleMemoryRegion", "LogArea", "ConfigSpace", "RarpMac", "Message", "Header",
    "parse_header", "parse", "encode_payload", "FRONTEND", "BACKEND",
]

_U64_LIMIT = 1 << 64

# Which request-id space a message belongs to: the main socket carries
# front-end requests (and their replies); the SET_BACKEND_REQ_FD socket
# carries back-end requests (and their replies).
FRONTEND = "frontend"
BACKEND = "backend"


class ProtocolError(Exception):
    """A malformed or unacceptable message; the connection should be closed.

    `reason` is one line saying what was wrong, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- typed payloads --------------------------------------------------------
@dataclass(frozen=True)
class VringState:
    """index + num: SET_VRING_NUM/BASE/ENABLE/ENDIAN, GET_VRING_BASE (both ways), VRING_KICK."""

    index: int
    num: int

    SIZE = VRING_STATE.size

    def pack(self) -> bytes:
        return VRING_STATE.pack(self.index, self.num)

    @classmethod
    def unpack(cls, data: bytes) -> "VringState":
        _expect_size(data, cls.SIZE, "vring state")
        return cls(*VRING_STATE.unpack(data))


@dataclass(frozen=True)
class VringAddr:
    """SET_VRING_ADDR: the front-end's *virtual* addresses of the three ring parts."""

    index: int
    flags: int
    desc_uva: int
    used_uva: int
    avail_uva: int
    log: int = 0

    SIZE = VRING_ADDR.size

    def pack(self) -> bytes:
        return VRING_ADDR.pack(self.index, self.flags, self.desc_uva, self.used_uva, self.avail_uva, self.log)

    @classmethod
    def unpack(cls, data: bytes) -> "VringAddr":
        _expect_size(data, cls.SIZE, "vring address")
        return cls(*VRING_ADDR.unpack(data))


@dataclass(frozen=True)
class VringFile:
    """SET_VRING_KICK/CALL/ERR: ring index and whether the message carries no fd.

    On the wire a u64: bits 0-7 index, bit 8 NOFD. Higher bits are reserved
    and ignored on parse (peers leave them zero)."""

    index: int
    no_fd: bool = False

    SIZE = U64.size

    def pack(self) -> bytes:
        if not 0 <= self.index <= VRING_IDX_MASK:
            raise ProtocolError(f"vring index {self.index} does not fit in 8 bits")
        return U64.pack(self.index | (VRING_NOFD if self.no_fd else 0))

    @classmethod
    def unpack(cls, data: bytes) -> "VringFile":
        _expect_size(data, cls.SIZE, "vring file")
        (value,) = U64.unpack(data)
        return cls(value & VRING_IDX_MASK, bool(value & VRING_NOFD))


class MemoryRegionDesc(NamedTuple):
    """One region of a memory table, as the front-end describes it."""

    gpa: int
    size: int
    uva: int
    mmap_offset: int

    def pack(self) -> bytes:
        return MEMORY_REGION.pack(*self)


def _check_regions(regions) -> None:
    for r in regions:
        if r.size == 0:
            raise ProtocolError(f"memory region at gpa {r.gpa:#x} has size 0")
        for what, base in (("gpa", r.gpa), ("uva", r.uva), ("mmap_offset", r.mmap_offset)):
            if base + r.size > _U64_LIMIT:
                raise ProtocolError(f"memory region {what} {base:#x} + size {r.size:#x} overflows 64 bits")
    for key in ("gpa", "uva"):
        ordered = sorted(regions, key=lambda r: getattr(r, key))
        for a, b in zip(ordered, ordered[1:]):
            if getattr(b, key) < getattr(a, key) + a.size:
                raise ProtocolError(
                    f"memory regions overlap in {key}: {getattr(a, key):#x}+{a.size:#x} and {getattr(b, key):#x}")


@dataclass(frozen=True)
class MemoryTable:
    """SET_MEM_TABLE: up to 8 regions, one fd per region in the same order."""

    regions: tuple[MemoryRegionDesc, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(MemoryRegionDesc(*r) for r in self.regions))

    def pack(self) -> bytes:
        if len(self.regions) > MAX_REGIONS:
            raise ProtocolError(f"{len(self.regions)} memory regions, at most {MAX_REGIONS} allowed")
        _check_regions(self.regions)
        return MEMORY_HEADER.pack(len(self.regions), 0) + b"".join(r.pack() for r in self.regions)

    @classmethod
    def unpack(cls, data: bytes) -> "MemoryTable":
        if len(data) < MEMORY_HEADER.size:
            raise ProtocolError(f"memory table payload is {len(data)} bytes, shorter than its 8-byte header")
        count, _padding = MEMORY_HEADER.unpack_from(data)
        if count > MAX_REGIONS:
            raise ProtocolError(f"memory table has {count} regions, at most {MAX_REGIONS} allowed")
        exact = MEMORY_HEADER.size + count * MEMORY_REGION.size
        full = MEMORY_HEADER.size + MAX_REGIONS * MEMORY_REGION.size
        # QEMU and DPDK send only the used regions; a sender that copies the
        # whole C struct sends all 8 slots. Both are well-formed.
        if len(data) not in (exact, full):
            raise ProtocolError(f"memory table with {count} regions has payload size {len(data)}, expected {exact}")
        regions = tuple(MemoryRegionDesc(*MEMORY_REGION.unpack_from(data, MEMORY_HEADER.size + i * MEMORY_REGION.size))
                        for i in range(count))
        _check_regions(regions)
        return cls(regions)


@dataclass(frozen=True)
class SingleMemoryRegion:
    """ADD_MEM_REG / REM_MEM_REG: one region after 8 bytes of padding."""

    region: MemoryRegionDesc

    SIZE = SINGLE_MEMORY_REGION.size

    def pack(self) -> bytes:
        return SINGLE_MEMORY_REGION.pack(0, *self.region)

    @classmethod
    def unpack(cls, data: bytes) -> "SingleMemoryRegion":
        _expect_size(data, cls.SIZE, "single memory region")
        region = MemoryRegionDesc(*SINGLE_MEMORY_REGION.unpack(data)[1:])
        _check_regions([region])
        return cls(region)


@dataclass(frozen=True)
class LogArea:
    """SET_LOG_BASE: size and offset of the dirty log in the passed fd."""

    size: int
    offset: int

    SIZE = LOG.size

    def pack(self) -> bytes:
        return LOG.pack(self.size, self.offset)

    @classmethod
    def unpack(cls, data: bytes) -> "LogArea":
        _expect_size(data, cls.SIZE, "log area")
        return cls(*LOG.unpack(data))


@dataclass(frozen=True)
class ConfigSpace:
    """GET_CONFIG / SET_CONFIG: a window of the device's config space."""

    offset: int
    flags: int
    data: bytes

    def pack(self) -> bytes:
        return CONFIG_HEADER.pack(self.offset, len(self.data), self.flags) + bytes(self.data)

    @classmethod
    def unpack(cls, data: bytes) -> "ConfigSpace":
        if len(data) < CONFIG_HEADER.size:
            raise ProtocolError(f"config payload is {len(data)} bytes, shorter than its 12-byte header")
        offset, size, flags = CONFIG_HEADER.unpack_from(data)
        if CONFIG_HEADER.size + size != len(data):
            raise ProtocolError(f"config payload says {size} bytes of data but carries {len(data) - CONFIG_HEADER.size}")
        return cls(offset, flags, bytes(data[CONFIG_HEADER.size:]))


@dataclass(frozen=True)
class RarpMac:
    """SEND_RARP: the guest's MAC in the first 6 bytes of a u64."""

    mac: bytes

    SIZE = U64.size

    def __post_init__(self) -> None:
        if len(self.mac) != 6:
            raise ProtocolError(f"a MAC address has 6 bytes, not {len(self.mac)}")

    def pack(self) -> bytes:
        return bytes(self.mac) + b"\0\0"

    @classmethod
    def unpack(cls, data: bytes) -> "RarpMac":
        _expect_size(data, cls.SIZE, "RARP MAC")
        return cls(bytes(data[:6]))


def _expect_size(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise ProtocolError(f"{what} payload must be {size} bytes, got {len(data)}")


# -- what each request carries ----------------------------------------------
# Payload kinds: None (empty), int (u64), a payload class, or bytes (opaque).
# fd rules: how many fds may come with the message.
_NO_FDS, _ONE_FD, _OPT_FD, _PER_REGION, _UNLESS_NOFD = "none", "one", "optional", "per-region", "unless-nofd"


class _Spec(NamedTuple):
    request: Any            # payload kind of the request
    reply: Any              # payload kind of the reply (int = u64, also the REPLY_ACK status)
    fds: str = _NO_FDS      # fd rule for the request
    reply_fds: str = _NO_FDS


_FRONTEND_SPECS: dict[int, _Spec] = {
    Request.GET_FEATURES: _Spec(None, int),
    Request.SET_FEATURES: _Spec(int, int),
    Request.SET_OWNER: _Spec(None, int),
    Request.RESET_OWNER: _Spec(None, int),
    Request.SET_MEM_TABLE: _Spec(MemoryTable, int, _PER_REGION),
    Request.SET_LOG_BASE: _Spec(LogArea, int, _OPT_FD),
    Request.SET_LOG_FD: _Spec(None, int, _ONE_FD),
    Request.SET_VRING_NUM: _Spec(VringState, int),
    Request.SET_VRING_ADDR: _Spec(VringAddr, int),
    Request.SET_VRING_BASE: _Spec(VringState, int),
    Request.GET_VRING_BASE: _Spec(VringState, VringState),
    Request.SET_VRING_KICK: _Spec(VringFile, int, _UNLESS_NOFD),
    Request.SET_VRING_CALL: _Spec(VringFile, int, _UNLESS_NOFD),
    Request.SET_VRING_ERR: _Spec(VringFile, int, _UNLESS_NOFD),
    Request.GET_PROTOCOL_FEATURES: _Spec(None, int),
    Request.SET_PROTOCOL_FEATURES: _Spec(int, int),
    Request.GET_QUEUE_NUM: _Spec(None, int),
    Request.SET_VRING_ENABLE: _Spec(VringState, int),
    Request.SEND_RARP: _Spec(RarpMac, int),
    Request.NET_SET_MTU: _Spec(int, int),
    Request.SET_BACKEND_REQ_FD: _Spec(None, int, _ONE_FD),
    Request.IOTLB_MSG: _Spec(bytes, int),
    Request.SET_VRING_ENDIAN: _Spec(VringState, int),
    Request.GET_CONFIG: _Spec(ConfigSpace, ConfigSpace),
    Request.SET_CONFIG: _Spec(ConfigSpace, int),
    Request.CREATE_CRYPTO_SESSION: _Spec(bytes, bytes),
    Request.CLOSE_CRYPTO_SESSION: _Spec(int, int),
    Request.POSTCOPY_ADVISE: _Spec(None, None, _NO_FDS, _ONE_FD),
    Request.POSTCOPY_LISTEN: _Spec(None, int),
    Request.POSTCOPY_END: _Spec(None, int),
    Request.GET_INFLIGHT_FD: _Spec(bytes, bytes, _NO_FDS, _ONE_FD),
    Request.SET_INFLIGHT_FD: _Spec(bytes, int, _ONE_FD),
    Request.GPU_SET_SOCKET: _Spec(None, int, _ONE_FD),
    Request.RESET_DEVICE: _Spec(None, int),
    Request.VRING_KICK: _Spec(VringState, int),
    Request.GET_MAX_MEM_SLOTS: _Spec(None, int),
    Request.ADD_MEM_REG: _Spec(SingleMemoryRegion, int, _ONE_FD),
    # The spec allows one stray fd here "for compatibility"; it must be closed unused.
    Request.REM_MEM_REG: _Spec(SingleMemoryRegion, int, _OPT_FD),
    Request.SET_STATUS: _Spec(int, int),
    Request.GET_STATUS: _Spec(None, int),
}

_BACKEND_SPECS: dict[int, _Spec] = {
    BackendRequest.IOTLB_MSG: _Spec(bytes, int),
    BackendRequest.CONFIG_CHANGE_MSG: _Spec(None, int),
    BackendRequest.VRING_HOST_NOTIFIER_MSG: _Spec(bytes, int, _OPT_FD),
    BackendRequest.VRING_CALL: _Spec(VringState, int),
    BackendRequest.VRING_ERR: _Spec(VringState, int),
}


def _spec_for(request: int, channel: str) -> _Spec:
    specs = _FRONTEND_SPECS if channel == FRONTEND else _BACKEND_SPECS
    spec = specs.get(request)
    if spec is None:
        raise ProtocolError(f"unknown {channel} request id {request}")
    return spec


def request_name(request: int, channel: str = FRONTEND) -> str:
    """The spec's name of a request id (or 'request N')."""
    enum_cls = Request if channel == FRONTEND else BackendRequest
    try:
        return enum_cls(request).name
    except ValueError:
        return f"request {request}"


# -- payload codecs -----------------------------------------------------------
def _decode(kind, data: bytes, what: str):
    if kind is None:
        if data:
            raise ProtocolError(f"{what} carries no payload, but size is {len(data)}")
        return None
    if kind is int:
        _expect_size(data, U64.size, what)
        return U64.unpack(data)[0]
    if kind is bytes:
        return bytes(data)
    return kind.unpack(data)


def encode_payload(payload) -> bytes:
    """The payload bytes of a typed payload (None, int, payload object or bytes)."""
    if payload is None:
        return b""
    if isinstance(payload, bool):
        raise TypeError("a bool is not a vhost-user payload")
    if isinstance(payload, int):
        if not 0 <= payload < _U64_LIMIT:
            raise ProtocolError(f"u64 payload {payload} out of range")
        return U64.pack(payload)
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return payload.pack()


def _check_fds(rule: str, payload, nfds: int, what: str) -> None:
    if rule == _NO_FDS:
        expected = (0,)
    elif rule == _ONE_FD:
        expected = (1,)
    elif rule == _OPT_FD:
        expected = (0, 1)
    elif rule == _PER_REGION:
        expected = (len(payload.regions),)
    else:  # _UNLESS_NOFD
        expected = (0,) if payload.no_fd else (1,)
    if nfds not in expected:
        want = " or ".join(str(n) for n in expected)
        raise ProtocolError(f"{what} came with {nfds} file descriptors, expected {want}")


# -- messages ---------------------------------------------------------------
class Header(NamedTuple):
    request: int
    flags: int
    size: int


def parse_header(data: bytes) -> Header:
    """Decode and check the 12-byte header (not the payload)."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"short header: {len(data)} bytes, a header has {HEADER_SIZE}")
    request, flags, size = HEADER.unpack_from(data)
    if flags & VERSION_MASK != VERSION:
        raise ProtocolError(f"unsupported protocol version {flags & VERSION_MASK} (flags {flags:#x})")
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(f"unknown flag bits {flags & ~KNOWN_FLAGS:#x} in header")
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"payload size {size} is larger than the {MAX_PAYLOAD}-byte limit")
    return Header(request, flags, size)


@dataclass
class Message:
    """One vhost-user message: request id, header flags, typed payload, fds.

    `channel` says which id space `request` is from (FRONTEND: the main socket;
    BACKEND: the back-end request channel). A reply has FLAG_REPLY set and the
    payload kind of the request's reply."""

    request: int
    flags: int = VERSION
    payload: Any = None
    fds: list[int] = field(default_factory=list)
    channel: str = FRONTEND

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    @property
    def name(self) -> str:
        return request_name(self.request, self.channel)

    def reply(self, payload) -> "Message":
        """A reply to this request carrying `payload` (flags: version + REPLY only)."""
        return Message(self.request, VERSION | FLAG_REPLY, payload, [], self.channel)

    def encode(self) -> bytes:
        """Header + payload bytes (the fds travel separately); checks the fd count."""
        if self.flags & VERSION_MASK != VERSION or self.flags & ~KNOWN_FLAGS:
            raise ProtocolError(f"cannot encode flags {self.flags:#x}")
        spec = _spec_for(self.request, self.channel)
        kind = spec.reply if self.is_reply else spec.request
        if kind not in (None, int, bytes) and not isinstance(self.payload, kind):
            raise TypeError(f"{self.name} {'reply' if self.is_reply else 'request'} needs a "
                            f"{kind.__name__} payload, not {type(self.payload).__name__}")
        body = encode_payload(self.payload)
        if kind is None and body:
            raise TypeError(f"{self.name} carries no payload")
        if kind is int and len(body) != U64.size:
            raise TypeError(f"{self.name} carries a u64 payload")
        if len(body) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(body)} bytes is over the {MAX_PAYLOAD}-byte limit")
        _check_fds(spec.reply_fds if self.is_reply else spec.fds, self.payload, len(self.fds), self.name)
        return HEADER.pack(self.request, self.flags, len(body)) + body

    def __str__(self) -> str:
        kind = "reply" if self.is_reply else ("request(need_reply)" if self.need_reply else "request")
        payload = f"{self.payload:#x}" if isinstance(self.payload, int) else repr(self.payload)
        fds = f" fds={self.fds}" if self.fds else ""
        return f"{self.name} {kind} {payload}{fds}"


def parse(data: bytes, fds=(), *, channel: str = FRONTEND) -> Message:
    """Decode one whole message (header + payload) that arrived with `fds`.

    Raises ProtocolError when anything is off; the fds are not closed here."""
    header = parse_header(data)
    payload = memoryview(data)[HEADER_SIZE:]
    if header.size != len(payload):
        raise ProtocolError(f"header says {header.size} payload bytes, message has {len(payload)}")
    spec = _spec_for(header.request, channel)
    is_reply = bool(header.flags & FLAG_REPLY)
    name = request_name(header.request, channel)
    kind = spec.reply if is_reply else spec.request
    value = _decode(kind, bytes(payload), name)
    _check_fds(spec.reply_fds if is_reply else spec.fds, value, len(fds), name)
    return Message(header.request, header.flags, value, list(fds), channel)
