"""The vhost-user front-end: what QEMU (or DPDK's virtio-user) does for a guest.

`VhostUserFrontend(path)` connects to a vhost-user-net back-end, allocates
the "guest" memory it shares with it (one memfd, one region: the rings of
every queue and a buffer pool), lays the split rings out in it and runs the
set-up sequence QEMU runs when a guest driver sets DRIVER_OK:

    GET_FEATURES
    GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES   (if bit 30 is offered)
    GET_QUEUE_NUM                                   (more than one queue pair)
    SET_OWNER
    SET_FEATURES                                    (VERSION_1 required)
    NET_SET_MTU                                     (an MTU given, NET_MTU offered)
    SET_MEM_TABLE                                   (the memfd)
    per ring: SET_VRING_CALL, SET_VRING_ERR, SET_VRING_NUM, SET_VRING_BASE,
              SET_VRING_ADDR, SET_VRING_KICK
    per ring: SET_VRING_ENABLE 1                    (if bit 30 was negotiated)

With REPLY_ACK negotiated every request that has no reply of its own goes
out with NEED_REPLY, so a refusal is seen at the request that caused it.
`close()` stops the rings (SET_VRING_ENABLE 0, GET_VRING_BASE) and hangs up.

Addresses: the region's guest-physical address *is* its virtual address in
this process (the mmap's real address), as DPDK's virtio-user does, so the
SET_MEM_TABLE uva, the SET_VRING_ADDR addresses and the descriptors' gpas all
agree; a back-end needs nothing more than that consistency.

The data path is not here: `queues` are plain `DriverQueue`s over `mem`, and
`kick(i)` / `call_fd(i)` are the notifications. The network card on top is
stack.drivers.virtio_driver.

Errors: `BackendUnavailable` (nobody listens on the path), `IncompatibleBackend`
(no VERSION_1, too few queues), `BackendError` (a refusal, a malformed or
missing reply, the connection closed); each names the request it happened at.
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os
import socket
from dataclasses import dataclass

from nicdev.virtio.driver_queue import DriverQueue
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, describe, has, mask,
)
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.ring import SplitRingLayout, check_queue_size
from nicdev.virtio.trace import DRIVER, Tracer

from .connection import Connection, ConnectionClosed
from .messages import (
    MemoryRegionDesc, MemoryTable, Message, ProtocolError, VringAddr, VringFile, VringState, encode_payload,
    request_name,
)
from .protocol import F_PROTOCOL_FEATURES, FLAG_NEED_REPLY, VERSION, ProtocolFeature, Request, protocol_feature_names

__all__ = [
    "VhostUserFrontend", "FrontendRing", "BackendError", "BackendUnavailable", "IncompatibleBackend",
    "OPTIONAL_FEATURES", "REQUIRED_FEATURES", "GSO_FEATURES",
]

log = logging.getLogger(__name__)

# Virtio features the front-end accepts when offered (the caller may narrow
# them); VERSION_1 is required. Bit 30 is added whenever it is offered.
REQUIRED_FEATURES = mask(VIRTIO_F_VERSION_1)
OPTIONAL_FEATURES = mask(
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC,
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
)
# Segmentation offloads: accepted only when the caller asks for them (a
# driver that sets them must send and take GSO frames; the stack's does).
GSO_FEATURES = mask(VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_GUEST_TSO4)
_BIT30 = 1 << F_PROTOCOL_FEATURES

# Protocol features we use. STATUS is left out on purpose: a back-end that
# has it negotiated (DPDK) waits for SET_STATUS(DRIVER_OK), which a
# front-end without a device status has no reason to send.
_WANTED_PROTOCOL = mask(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ, ProtocolFeature.NET_MTU)

# Requests answered with a payload of their own (never sent with NEED_REPLY).
_HAS_REPLY = {Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.GET_QUEUE_NUM,
              Request.GET_VRING_BASE, Request.GET_STATUS}

_PAGE = mmap.PAGESIZE
_EVENTFD_ONE = (1).to_bytes(8, "little")


class BackendError(Exception):
    """The back-end failed us: refused a request, broke the protocol or went away.

    `request` names the message it happened at (None if at none in
    particular), `reason` says what happened."""

    def __init__(self, reason: str, request: str | None = None) -> None:
        super().__init__(f"{request}: {reason}" if request else reason)
        self.reason = reason
        self.request = request


class BackendUnavailable(BackendError):
    """Nobody is listening on the socket path (or it cannot be reached)."""


class IncompatibleBackend(BackendError):
    """The back-end lacks something this front-end needs (VERSION_1, queues)."""


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _ring_direction(index: int) -> str:
    """Even rings receive, odd ones transmit (one queue pair per two rings)."""
    return "tx" if index % 2 else "rx"


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


@dataclass
class FrontendRing:
    """One virtqueue as the front-end set it up: where it is and its eventfds."""

    index: int
    layout: SplitRingLayout
    queue: DriverQueue
    kick_fd: int
    call_fd: int
    err_fd: int
    base: int | None = None        # the avail idx GET_VRING_BASE returned at shutdown


class VhostUserFrontend:
    """A connected, negotiated vhost-user-net front-end with its rings set up.

    `queue_size`: entries per ring (a power of two). `num_queue_pairs`:
    RX/TX pairs (rings 2i and 2i+1); more than one needs the MQ protocol
    feature. `pool_size`: bytes of buffer memory after the rings (default 2
    KiB per ring entry). `features`: the optional virtio features to accept
    (default `OPTIONAL_FEATURES`; `GSO_FEATURES` may be added). `mtu`: told to the back-end with
    NET_SET_MTU when it offers VIRTIO_NET_F_MTU and the NET_MTU protocol
    feature. `timeout`: seconds to wait for a connection or a reply.
    `tracer`: a `nicdev.virtio.trace.Tracer` (side "driver") that gets a
    `vhost_msg` record per message sent, the negotiated features and the
    rings' start, enable, disable and stop.

    After construction: `features` and `protocol_features` (negotiated),
    `mem` (a GuestMemory over the region), `rings` (FrontendRing, by ring
    index), `pool_gpa`/`pool_size`/`pool` (a writable memoryview of the pool).
    """

    def __init__(
        self,
        socket_path: str,
        *,
        queue_size: int = 256,
        num_queue_pairs: int = 1,
        pool_size: int | None = None,
        features: int = OPTIONAL_FEATURES,
        mtu: int | None = None,
        timeout: float = 5.0,
        name: str | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        check_queue_size(queue_size)
        if not 1 <= num_queue_pairs <= 128:
            raise ValueError(f"num_queue_pairs must be 1..128, not {num_queue_pairs}")
        if pool_size is None:
            pool_size = 2 * num_queue_pairs * queue_size * 2048
        if pool_size < 0:
            raise ValueError(f"negative pool size {pool_size}")
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        self.socket_path = socket_path
        self.name = name or os.path.basename(socket_path)
        self.queue_size = queue_size
        self.num_queue_pairs = num_queue_pairs
        self.mtu = mtu
        self.timeout = timeout
        self.offered_features = 0
        self.features = 0
        self.offered_protocol_features = 0
        self.protocol_features = 0
        self.rings: list[FrontendRing] = []
        self.closed = False
        self.tracer = tracer if tracer is not None else Tracer(self.name, DRIVER)
        self._conn: Connection | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self.pool: memoryview | None = None
        self.mem: GuestMemory | None = None
        try:
            self._allocate(pool_size)
            self._connect()
            self._negotiate(features)
            self._set_up_rings()
        except BaseException:
            self._teardown()
            raise

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected"
        return f"VhostUserFrontend({self.socket_path!r}, {state}, features {'+'.join(describe(self.features))})"

    # -- memory --------------------------------------------------------------
    def _allocate(self, pool_size: int) -> None:
        stride = _align(SplitRingLayout(self.queue_size).total_size, _PAGE)
        nrings = 2 * self.num_queue_pairs
        rings_bytes = stride * nrings
        self.size = _align(rings_bytes + max(pool_size, 1), _PAGE)
        self._fd = os.memfd_create(f"multios-{self.name}", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, self.size)
        self._map = mmap.mmap(self._fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        # The mapping's real address: gpa == uva == this. The temporary ctypes
        # object holds a buffer export only for the duration of the call.
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        view = memoryview(self._map)
        self.mem = GuestMemory([MemoryRegion(self.base, self.size, view, self.base)])
        self._view = view
        self._layouts = [SplitRingLayout(self.queue_size, self.base + i * stride) for i in range(nrings)]
        self.pool_gpa = self.base + rings_bytes
        self.pool_size = self.size - rings_bytes
        self.pool = view[rings_bytes:]

    @property
    def memory_fd(self) -> int:
        """The memfd shared with the back-end."""
        return self._fd

    # -- messages --------------------------------------------------------------
    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise BackendUnavailable(f"no vhost-user backend listening on {self.socket_path} ({e.strerror})") from None
        except OSError as e:
            sock.close()
            raise BackendUnavailable(f"cannot connect to vhost-user backend at {self.socket_path}: "
                                     f"{e.strerror or e}") from None
        self._conn = Connection(sock)

    @property
    def reply_ack(self) -> bool:
        return has(self.protocol_features, ProtocolFeature.REPLY_ACK)

    def request(self, request: Request, payload=None, fds=(), *, ack: bool | None = None):
        """Send one request; return its reply's payload, if it has one.

        Requests without a reply of their own go out with NEED_REPLY when
        REPLY_ACK is negotiated (`ack` overrides); a nonzero status raises
        BackendError. So do a closed connection, a timeout and a bad reply."""
        name = request_name(request)
        conn = self._conn
        if conn is None:
            raise BackendError("not connected", name)
        explicit = request in _HAS_REPLY
        if ack is None:
            ack = self.reply_ack
        want_ack = ack and not explicit
        msg = Message(request, VERSION | (FLAG_NEED_REPLY if want_ack else 0), payload, list(fds))
        log.debug("%s: -> %s", self.name, msg)
        if self.tracer.on:
            index = getattr(payload, "index", None)         # a ring message names its ring
            self.tracer.emit("vhost_msg", index, None if index is None else _ring_direction(index), request=name,
                             size=len(encode_payload(payload)), fds=len(msg.fds))
        try:
            conn.send(msg)
            if not (explicit or want_ack):
                return None
            reply = self._read_reply(conn)
        except ConnectionClosed as e:
            raise BackendError(f"the back-end closed the connection ({e.reason})", name) from None
        except ProtocolError as e:
            raise BackendError(f"bad reply: {e.reason}", name) from None
        except TimeoutError:
            raise BackendError(f"no reply within {self.timeout:g} s", name) from None
        except OSError as e:
            raise BackendError(f"connection failed: {e.strerror or e}", name) from None
        for fd in reply.fds:        # no reply we wait for carries fds
            os.close(fd)
        if reply.request != request or not reply.is_reply:
            raise BackendError(f"expected its reply, got {reply}", name)
        log.debug("%s: <- %s", self.name, reply)
        if want_ack:
            if reply.payload != 0:
                raise BackendError(f"the back-end refused it (REPLY_ACK status {reply.payload})", name)
            return None
        return reply.payload

    def _read_reply(self, conn: Connection) -> Message:
        while True:
            msg = conn.read_message()
            if msg is not None:
                return msg

    # -- the set-up sequence -------------------------------------------------------
    def _negotiate(self, wanted: int) -> None:
        offered = self.request(Request.GET_FEATURES)
        self.offered_features = offered
        if not has(offered, VIRTIO_F_VERSION_1):
            raise IncompatibleBackend(
                f"the back-end does not offer VIRTIO_F_VERSION_1 (offered: {'+'.join(describe(offered)) or 'nothing'}); "
                "this driver speaks virtio 1.x only", "GET_FEATURES")
        features = offered & (REQUIRED_FEATURES | (wanted & (OPTIONAL_FEATURES | GSO_FEATURES)))
        if has(offered, F_PROTOCOL_FEATURES):
            features |= _BIT30
            self.offered_protocol_features = self.request(Request.GET_PROTOCOL_FEATURES)
            self.protocol_features = self.offered_protocol_features & _WANTED_PROTOCOL
            self.request(Request.SET_PROTOCOL_FEATURES, self.protocol_features, ack=False)
            self.tracer.emit("features", value=self.protocol_features, protocol=True)
        if self.num_queue_pairs > 1:
            if not has(self.protocol_features, ProtocolFeature.MQ):
                raise IncompatibleBackend(f"{self.num_queue_pairs} queue pairs need the MQ protocol feature, "
                                          "which the back-end does not offer", "GET_PROTOCOL_FEATURES")
            available = self.request(Request.GET_QUEUE_NUM)
            if available < self.num_queue_pairs:
                raise IncompatibleBackend(f"the back-end has {available} queue pair(s), "
                                          f"{self.num_queue_pairs} wanted", "GET_QUEUE_NUM")
        self.request(Request.SET_OWNER)
        send_mtu = (self.mtu is not None and has(offered, VIRTIO_NET_F_MTU)
                    and has(self.protocol_features, ProtocolFeature.NET_MTU))
        if send_mtu:
            features |= 1 << VIRTIO_NET_F_MTU
        self.request(Request.SET_FEATURES, features)
        self.features = features
        self.tracer.emit("features", value=features, protocol=False)
        if send_mtu:
            self.request(Request.NET_SET_MTU, self.mtu)
        log.info("%s: negotiated %s; protocol %s", self.name, "+".join(describe(features)),
                 "+".join(protocol_feature_names(self.protocol_features)) or "none")

    def _set_up_rings(self) -> None:
        table = MemoryTable([MemoryRegionDesc(self.base, self.size, self.base, 0)])
        self.request(Request.SET_MEM_TABLE, table, [self._fd])
        event_idx = has(self.features, VIRTIO_F_RING_EVENT_IDX)
        for index, layout in enumerate(self._layouts):
            queue = DriverQueue.from_layout(layout, event_idx=event_idx)
            queue.init(self.mem)
            ring = FrontendRing(index, layout, queue, _eventfd(), _eventfd(), _eventfd())
            self.rings.append(ring)
            self.request(Request.SET_VRING_CALL, VringFile(index), [ring.call_fd])
            self.request(Request.SET_VRING_ERR, VringFile(index), [ring.err_fd])
            self.request(Request.SET_VRING_NUM, VringState(index, self.queue_size))
            self.request(Request.SET_VRING_BASE, VringState(index, 0))
            self.request(Request.SET_VRING_ADDR, VringAddr(index, 0, layout.desc, layout.used, layout.avail, 0))
            self.request(Request.SET_VRING_KICK, VringFile(index), [ring.kick_fd])
            self._trace_ring(index, "start")
        if has(self.features, F_PROTOCOL_FEATURES):
            for ring in self.rings:
                self.request(Request.SET_VRING_ENABLE, VringState(ring.index, 1))
                self._trace_ring(ring.index, "enable")
        # Set up: from now on the socket is only watched for the back-end hanging up.
        self._conn.sock.setblocking(False)

    # -- running -------------------------------------------------------------
    def kick(self, index: int) -> None:
        """Notify the back-end that ring `index` has new buffers."""
        os.write(self.rings[index].kick_fd, _EVENTFD_ONE)

    def connection_fileno(self) -> int:
        """The socket's fd (readable when the back-end hangs up or writes)."""
        if self._conn is None:
            return -1
        return self._conn.fileno()

    def check_connection(self) -> str | None:
        """Read whatever the back-end sent since set-up, without blocking.

        Returns None while the connection is fine, else why it is not (closed,
        reset, garbage). The back-end has no reason to write to us, so a
        message that does come is logged and ignored."""
        conn = self._conn
        if conn is None:
            return "not connected"
        try:
            while (msg := conn.read_message()) is not None:
                for fd in msg.fds:
                    os.close(fd)
                log.warning("%s: unexpected message from the back-end: %s", self.name, msg)
        except ConnectionClosed as e:
            return f"the back-end closed the connection ({e.reason})"
        except ProtocolError as e:
            return f"the back-end sent garbage: {e.reason}"
        except OSError as e:
            return f"the connection failed: {e.strerror or e}"
        return None

    def close(self, *, stop_rings: bool = True) -> None:
        """Stop the rings (SET_VRING_ENABLE 0, GET_VRING_BASE), hang up, free memory.

        With `stop_rings=False`, or when the back-end is already gone, just
        hang up. Never raises for a back-end that misbehaves on the way out."""
        if self.closed:
            return
        if stop_rings and self._conn is not None and self.rings:
            try:
                self._conn.sock.settimeout(self.timeout)
                self._stop_rings()
            except (BackendError, OSError) as e:
                log.debug("%s: stopping the rings failed: %s", self.name, e)
        self._teardown()

    def _stop_rings(self) -> None:
        enable = has(self.features, F_PROTOCOL_FEATURES)
        for ring in self.rings:
            if enable:
                self.request(Request.SET_VRING_ENABLE, VringState(ring.index, 0))
                self._trace_ring(ring.index, "disable")
            state = self.request(Request.GET_VRING_BASE, VringState(ring.index, 0))
            ring.base = state.num
            self._trace_ring(ring.index, "stop")

    def _trace_ring(self, index: int, state: str) -> None:
        self.tracer.emit("ring", index, _ring_direction(index), state=state)

    def _teardown(self) -> None:
        self.closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for ring in self.rings:
            for fd in (ring.kick_fd, ring.call_fd, ring.err_fd):
                os.close(fd)
        if self.mem is not None:
            self.mem.release()
            self.mem = None
        if self.pool is not None:
            self.pool.release()
            self.pool = None
        if getattr(self, "_view", None) is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # A caller still holds a view of the pool; the mapping goes
                # away with the last view.
                log.debug("%s: memory still referenced; unmapped later", self.name)
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "VhostUserFrontend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
