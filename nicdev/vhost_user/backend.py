"""The vhost-user back-end as a state machine: messages in, replies out.

`VhostUserBackend.handle(message)` is the one dispatcher. It looks the request
up in one handler table `{request: (handler, accepts_fds)}`, checks what the
parser could not (ring index in range, fds where none belong), runs the
handler and returns the replies to send: the explicit reply of a GET_*
request, or the REPLY_ACK u64 status when the front-end set NEED_REPLY and
REPLY_ACK was negotiated (0 = done, 1 = refused).

Two kinds of failure, kept apart on purpose:

- `ProtocolError` (from messages.py): the message is malformed or not
  something this back-end speaks. The I/O layer logs the reason and closes
  the connection.
- `RequestFailed`: a well-formed request we cannot honour (a queue size that
  is not a power of two, a memory region we cannot map, an MTU out of range).
  The state is left as it was, the failure is logged and, if asked, NACKed.

The back-end owns what the front-end hands over: the mapped memory and the
kick/call/err eventfds. It tells the device what happens through a
`BackendDevice` (features set, memory table changed, ring started/stopped,
enable changed, RARP, MTU, status). The device runs the rings; the back-end
builds each `DeviceQueue` when a ring starts.

Ring life (spec "Ring states"): a ring *starts* once it has a size, addresses,
a memory table and a kick (SET_VRING_KICK, the usual last message), and
*stops* on GET_VRING_BASE. Separately it is *enabled* or not: with feature
bit 30 (VHOST_USER_F_PROTOCOL_FEATURES) negotiated, rings are disabled until
SET_VRING_ENABLE 1; without it they are enabled as soon as they start.

Tracing (`tracer`, a `nicdev.virtio.trace.Tracer`, while it is on): every
message handled (`vhost_msg`, with how it ended), the features and protocol
features the front-end set (`features`), and each ring's start, stop,
enable, disable and the reset when the front-end goes (`ring`). Ring
directions follow virtio-net's numbering: even rings receive, odd ones
transmit.
"""
from __future__ import annotations

import logging
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

from nicdev.virtio.device_queue import DeviceQueue
from nicdev.virtio.memory import GuestMemory, GuestMemoryError, MemoryRegion
from nicdev.virtio.ring import QueueBroken, avail_ring_bytes, check_queue_size, used_ring_bytes
from nicdev.virtio.trace import Tracer

from .messages import (
    FRONTEND, MemoryRegionDesc, MemoryTable, Message, ProtocolError, RarpMac, VringAddr, VringFile, VringState,
    encode_payload,
)
from .protocol import F_PROTOCOL_FEATURES, ProtocolFeature, Request, protocol_feature_names

__all__ = ["VhostUserBackend", "BackendDevice", "Vring", "RequestFailed", "MappedRegion", "map_region",
           "VIRTIO_F_RING_INDIRECT_DESC", "VIRTIO_F_RING_EVENT_IDX"]

log = logging.getLogger(__name__)

# Ring feature bits the back-end itself acts on (see nicdev.virtio.features
# for the full list); kept here so the back-end does not depend on net bits.
VIRTIO_F_RING_INDIRECT_DESC = 28
VIRTIO_F_RING_EVENT_IDX = 29
_PROTOCOL_FEATURES_BIT = 1 << F_PROTOCOL_FEATURES
_EVENTFD_ONE = struct.pack("=Q", 1)


class RequestFailed(Exception):
    """A well-formed request the back-end refuses or cannot carry out."""


# -- memory ----------------------------------------------------------------
@dataclass
class MappedRegion:
    """One mmap'd region of a memory table, and the `MemoryRegion` over it."""

    desc: MemoryRegionDesc
    mapping: mmap.mmap
    view: memoryview
    region: MemoryRegion

    def close(self) -> None:
        self.region.release()
        self.view.release()
        try:
            self.mapping.close()
        except BufferError:
            # Someone still holds a view into it; the mapping goes away when
            # the last view is collected.
            log.debug("mapping of region at gpa %#x still referenced; unmapped later", self.desc.gpa)


def map_region(fd: int, desc: MemoryRegionDesc) -> MappedRegion:
    """mmap `fd` shared, read/write, and describe the region inside it.

    The region starts `mmap_offset` bytes into the file, so we map
    size + mmap_offset bytes from 0 (mmap offsets must be page-aligned, region
    offsets need not be) and view the part from mmap_offset. Raises OSError or
    ValueError if the fd cannot be mapped that far."""
    length = desc.size + desc.mmap_offset
    blksize = os.fstat(fd).st_blksize
    if blksize > mmap.PAGESIZE and length % blksize:
        # hugetlbfs fds map in whole huge pages
        length += blksize - length % blksize
    mapping = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    view = memoryview(mapping)[desc.mmap_offset: desc.mmap_offset + desc.size]
    try:
        region = MemoryRegion(desc.gpa, desc.size, view, desc.uva)
    except ValueError:
        view.release()
        mapping.close()
        raise
    return MappedRegion(desc, mapping, view, region)


# -- rings -------------------------------------------------------------------
@dataclass
class Vring:
    """The back-end's view of one virtqueue: configuration, fds, and the
    running `DeviceQueue` while the ring is started."""

    index: int
    num: int = 0
    addr: VringAddr | None = None
    base: int = 0                   # next avail idx to start from
    kick_set: bool = False          # SET_VRING_KICK seen (with an fd, or NOFD: poll)
    kick_fd: int | None = None
    call_fd: int | None = None      # None: the front-end polls, nothing to signal
    err_fd: int | None = None
    enable_requested: bool = False  # last SET_VRING_ENABLE
    enabled: bool = False           # effective: enable_requested, or True without bit 30
    queue: DeviceQueue | None = None
    broken: str | None = None
    calls: int = 0                  # call eventfd signals sent
    call_errors: int = 0

    @property
    def started(self) -> bool:
        return self.queue is not None

    @property
    def polling(self) -> bool:
        """Started without a kick fd: the device must poll the ring."""
        return self.kick_set and self.kick_fd is None

    def mark_broken(self, reason: str) -> None:
        """Stop using this ring until the front-end sets it up again.

        The caller logs (it knows which port this is)."""
        if self.broken is None:
            self.broken = reason
        if self.queue is not None:
            self.queue.mark_broken(reason)

    def signal_call(self) -> bool:
        """Tell the driver we used buffers (write the call eventfd)."""
        if self.call_fd is None:
            return False
        try:
            os.write(self.call_fd, _EVENTFD_ONE)
        except BlockingIOError:
            pass  # counter saturated: the driver has a signal pending anyway
        except OSError as e:
            self.call_errors += 1
            log.debug("vring %d: call fd write failed: %s", self.index, e)
            return False
        self.calls += 1
        return True

    def signal_error(self) -> None:
        """Tell the front-end this ring failed (the err eventfd), if it gave one."""
        if self.err_fd is not None:
            try:
                os.write(self.err_fd, _EVENTFD_ONE)
            except OSError:
                pass

    def close_fds(self) -> None:
        for name in ("kick_fd", "call_fd", "err_fd"):
            _close(getattr(self, name))
            setattr(self, name, None)
        self.kick_set = False


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# -- the device interface -------------------------------------------------
class BackendDevice:
    """What the back-end tells the device. Override what you need.

    Calls happen synchronously inside `VhostUserBackend.handle()`."""

    def features_set(self, features: int) -> None:
        """The front-end acked these virtio features (SET_FEATURES)."""

    def mem_table_changed(self, mem: GuestMemory | None) -> None:
        """New guest memory (None: gone). Called before rings restart on it."""

    def ring_started(self, ring: Vring) -> None:
        """`ring.queue` is ready: watch `ring.kick_fd` (or poll if None)."""

    def ring_stopping(self, ring: Vring) -> int:
        """The ring is about to stop: stop watching its kick fd.

        Return how many of the most recently popped chains were not used
        (and not pushed): the back-end gives them back by rewinding the saved
        avail index, so the driver's buffers are not lost."""
        return 0

    def ring_enable_changed(self, ring: Vring) -> None:
        """`ring.enabled` changed."""

    def send_rarp(self, mac: bytes) -> None:
        """SEND_RARP: announce `mac` (after a migration)."""

    def set_mtu(self, mtu: int) -> None:
        """NET_SET_MTU; raise RequestFailed if `mtu` is not acceptable."""
        raise RequestFailed("this device does not take an MTU")

    def status_set(self, status: int) -> None:
        """SET_STATUS: the virtio device status byte the driver wrote."""

    def reset(self) -> None:
        """The front-end went away: forget everything about it."""


# -- the back-end --------------------------------------------------------------
Handler = Callable[[Message], object]


@dataclass
class BackendCounters:
    messages: int = 0
    nacks: int = 0
    by_request: dict = field(default_factory=dict)


class VhostUserBackend:
    """A sans-IO vhost-user back-end.

    `device_features`: virtio feature bits offered by GET_FEATURES (bit 30 is
    added: we always speak protocol features). `protocol_features`: protocol
    feature bits offered; requests gated by a protocol feature are only
    accepted if it is offered. `num_queues`: number of vrings. `queue_num`:
    the GET_QUEUE_NUM answer (for net: queue pairs; default num_queues // 2 or 1).
    """

    def __init__(
        self,
        device_features: int,
        protocol_features: int,
        num_queues: int,
        *,
        device: BackendDevice | None = None,
        queue_num: int | None = None,
        name: str = "vhost-user",
        mapper: Callable[[int, MemoryRegionDesc], MappedRegion] = map_region,
        tracer: Tracer | None = None,
    ) -> None:
        if not 1 <= num_queues <= 256:
            raise ValueError(f"num_queues must be 1..256, not {num_queues}")
        self.name = name
        self.device = device if device is not None else BackendDevice()
        self.offered_features = device_features | _PROTOCOL_FEATURES_BIT
        self.offered_protocol_features = protocol_features
        self.num_queues = num_queues
        self.queue_num = queue_num if queue_num is not None else max(1, num_queues // 2)
        self._mapper = mapper
        self.tracer = tracer
        self.counters = BackendCounters()
        self._handlers: dict[int, tuple[Handler, bool]] = self._build_handlers()
        self._reset_state()

    # -- state -------------------------------------------------------------
    def _reset_state(self) -> None:
        self.acked_features = 0
        self.acked_protocol_features = 0
        self.features_set = False
        self.owner = False
        self.status = 0
        self.mem: GuestMemory | None = None
        self._mapped: list[MappedRegion] = []
        self.rings = [Vring(i) for i in range(self.num_queues)]

    def reset(self, reason: str | None = None) -> None:
        """The connection is gone (`reason`: why, for the trace): stop every
        ring, close every fd, unmap memory."""
        if self.tracer is not None and self.tracer.on:
            self.tracer.emit("ring", None, None, state="reset", reason=reason)
        for ring in self.rings:
            self._stop_ring(ring)
            ring.close_fds()
        self._release_mem(self.mem)
        self._unmap(self._mapped)
        self._reset_state()
        self.device.reset()

    def close(self) -> None:
        self.reset()

    def has_protocol_feature(self, bit: int) -> bool:
        return bool(self.acked_protocol_features >> bit & 1)

    @property
    def protocol_features_negotiated(self) -> bool:
        return bool(self.acked_features & _PROTOCOL_FEATURES_BIT)

    def describe(self) -> str:
        """One line: negotiated features and ring states."""
        rings = ", ".join(
            f"{r.index}:{'broken' if r.broken else ('running' if r.started and r.enabled else 'started' if r.started else 'stopped')}"
            for r in self.rings)
        return (f"features {self.acked_features:#x}, protocol "
                f"{'+'.join(protocol_feature_names(self.acked_protocol_features)) or 'none'}, rings {rings}")

    # -- the dispatcher ------------------------------------------------------
    def _build_handlers(self) -> dict[int, tuple[Handler, bool]]:
        table: dict[int, tuple[Handler, bool]] = {
            Request.GET_FEATURES: (self._get_features, False),
            Request.SET_FEATURES: (self._set_features, False),
            Request.GET_PROTOCOL_FEATURES: (self._get_protocol_features, False),
            Request.SET_PROTOCOL_FEATURES: (self._set_protocol_features, False),
            Request.SET_OWNER: (self._set_owner, False),
            Request.RESET_OWNER: (self._reset_owner, False),
            Request.SET_MEM_TABLE: (self._set_mem_table, True),
            Request.SET_VRING_NUM: (self._set_vring_num, False),
            Request.SET_VRING_ADDR: (self._set_vring_addr, False),
            Request.SET_VRING_BASE: (self._set_vring_base, False),
            Request.GET_VRING_BASE: (self._get_vring_base, False),
            Request.SET_VRING_KICK: (self._set_vring_kick, True),
            Request.SET_VRING_CALL: (self._set_vring_call, True),
            Request.SET_VRING_ERR: (self._set_vring_err, True),
            Request.SET_VRING_ENABLE: (self._set_vring_enable, False),
        }
        # Requests that exist only with a protocol feature are accepted only
        # if we offer that feature.
        gated = {
            ProtocolFeature.MQ: {Request.GET_QUEUE_NUM: (self._get_queue_num, False)},
            ProtocolFeature.RARP: {Request.SEND_RARP: (self._send_rarp, False)},
            ProtocolFeature.NET_MTU: {Request.NET_SET_MTU: (self._net_set_mtu, False)},
            ProtocolFeature.STATUS: {Request.SET_STATUS: (self._set_status, False),
                                     Request.GET_STATUS: (self._get_status, False)},
        }
        for bit, entries in gated.items():
            if self.offered_protocol_features >> bit & 1:
                table.update(entries)
        return table

    def handle(self, msg: Message) -> list[Message]:
        """Process one request; return the replies to send (maybe none).

        Raises ProtocolError for malformed or unsupported requests. Fds the
        handler did not keep are closed before returning or raising."""
        traced = self.tracer is not None and self.tracer.on
        if traced:
            fds, nacks = len(msg.fds), self.counters.nacks
        try:
            replies = self._dispatch(msg)
        except ProtocolError as e:
            if traced:
                self._trace_message(msg, fds, f"error: {e}")
            raise
        else:
            if traced:
                self._trace_message(msg, fds, "refused" if self.counters.nacks != nacks else "ok")
            return replies
        finally:
            for fd in msg.fds:
                _close(fd)
            msg.fds = []

    def _dispatch(self, msg: Message) -> list[Message]:
        if msg.channel != FRONTEND or msg.is_reply:
            raise ProtocolError(f"expected a front-end request, got {msg.name} "
                                f"{'reply' if msg.is_reply else msg.channel + ' request'}")
        entry = self._handlers.get(msg.request)
        if entry is None:
            raise ProtocolError(f"{msg.name} is not supported by this back-end")
        handler, accepts_fds = entry
        if msg.fds and not accepts_fds:
            raise ProtocolError(f"{msg.name} came with {len(msg.fds)} file descriptors, takes none")
        index = getattr(msg.payload, "index", None)
        if index is not None and not 0 <= index < self.num_queues:
            raise ProtocolError(f"{msg.name}: vring index {index} out of range (device has {self.num_queues} rings)")
        self.counters.messages += 1
        self.counters.by_request[msg.name] = self.counters.by_request.get(msg.name, 0) + 1
        log.debug("%s: <- %s", self.name, msg)
        status = 0
        try:
            reply_payload = handler(msg)
        except RequestFailed as e:
            self.counters.nacks += 1
            log.warning("%s: %s refused: %s", self.name, msg.name, e)
            reply_payload, status = None, 1
        if reply_payload is not None:
            reply = msg.reply(reply_payload)
        elif msg.need_reply and self.has_protocol_feature(ProtocolFeature.REPLY_ACK):
            reply = msg.reply(status)
        else:
            return []
        log.debug("%s: -> %s", self.name, reply)
        return [reply]

    # -- tracing -----------------------------------------------------------
    def _trace_message(self, msg: Message, fds: int, result: str) -> None:
        try:
            size = len(encode_payload(msg.payload))
        except (ProtocolError, TypeError, AttributeError):
            size = None
        index = getattr(msg.payload, "index", None)
        self.tracer.emit("vhost_msg", index, _direction(index), request=msg.name, size=size, fds=fds,
                         payload=_payload_text(msg.payload), result=result)

    def _trace_ring(self, ring: Vring | None, state: str) -> None:
        if self.tracer is not None and self.tracer.on:
            index = None if ring is None else ring.index
            self.tracer.emit("ring", index, _direction(index), state=state)

    def _trace_features(self, value: int, protocol: bool) -> None:
        if self.tracer is not None and self.tracer.on:
            self.tracer.emit("features", None, None, value=value, protocol=protocol)

    # -- features ----------------------------------------------------------
    def _get_features(self, msg: Message) -> int:
        return self.offered_features

    def _set_features(self, msg: Message) -> None:
        features = msg.payload
        extra = features & ~self.offered_features
        if extra:
            raise RequestFailed(f"front-end acked features {extra:#x} that were not offered")
        old = self.acked_features
        self.acked_features = features
        self.features_set = True
        self._trace_features(features, False)
        for ring in self.rings:
            self._update_enabled(ring)
        self.device.features_set(features)
        ring_bits = 1 << VIRTIO_F_RING_EVENT_IDX | 1 << VIRTIO_F_RING_INDIRECT_DESC
        if (old ^ features) & ring_bits:
            for ring in self.rings:  # the running queues follow the new ring features
                if ring.started:
                    self._stop_ring(ring)
                    self._try_start(ring)

    def _get_protocol_features(self, msg: Message) -> int:
        return self.offered_protocol_features

    def _set_protocol_features(self, msg: Message) -> None:
        extra = msg.payload & ~self.offered_protocol_features
        if extra:
            raise RequestFailed(f"front-end acked protocol features {extra:#x} that were not offered")
        self.acked_protocol_features = msg.payload
        self._trace_features(msg.payload, True)
        log.info("%s: protocol features %s", self.name, "+".join(protocol_feature_names(msg.payload)) or "none")

    def _set_owner(self, msg: Message) -> None:
        if self.owner:
            log.info("%s: SET_OWNER again on the same connection", self.name)
        self.owner = True

    def _reset_owner(self, msg: Message) -> None:
        # Deprecated; the spec recommends ignoring it or disabling all rings.
        for ring in self.rings:
            ring.enable_requested = False
            self._update_enabled(ring)

    def _get_queue_num(self, msg: Message) -> int:
        return self.queue_num

    # -- memory ------------------------------------------------------------
    def _set_mem_table(self, msg: Message) -> None:
        table: MemoryTable = msg.payload
        fds, msg.fds = msg.fds, []
        mapped: list[MappedRegion] = []
        try:
            for fd, desc in zip(fds, table.regions):
                try:
                    mapped.append(self._mapper(fd, desc))
                except (OSError, ValueError) as e:
                    raise RequestFailed(f"cannot map region gpa {desc.gpa:#x} size {desc.size:#x} "
                                        f"offset {desc.mmap_offset:#x}: {e}") from None
            mem = GuestMemory([m.region for m in mapped])
        except (RequestFailed, ValueError) as e:
            self._unmap(mapped)
            raise RequestFailed(str(e)) from None
        finally:
            for fd in fds:  # the mappings keep the memory; the fds are not needed
                _close(fd)
        running = [ring for ring in self.rings if ring.started]
        for ring in running:
            self._stop_ring(ring)
        old, old_mem, self._mapped, self.mem = self._mapped, self.mem, mapped, mem
        self.device.mem_table_changed(mem)
        self._release_mem(old_mem)
        self._unmap(old)
        log.info("%s: memory table: %s", self.name,
                 ", ".join(f"gpa {d.gpa:#x}+{d.size:#x}" for d in table.regions) or "empty")
        for ring in self.rings:
            self._try_start(ring)

    @staticmethod
    def _release_mem(mem: GuestMemory | None) -> None:
        # First, so that the C kernels' table of its regions lets go of them
        # (GuestMemory.release) before the mappings close.
        if mem is not None:
            mem.release()

    @staticmethod
    def _unmap(mapped: list[MappedRegion]) -> None:
        for m in mapped:
            m.close()

    # -- rings -------------------------------------------------------------
    def _set_vring_num(self, msg: Message) -> None:
        state: VringState = msg.payload
        try:
            check_queue_size(state.num)
        except ValueError as e:
            raise RequestFailed(str(e)) from None
        self._reconfigure(self.rings[state.index], num=state.num)

    def _set_vring_addr(self, msg: Message) -> None:
        addr: VringAddr = msg.payload
        self._reconfigure(self.rings[addr.index], addr=addr)

    def _set_vring_base(self, msg: Message) -> None:
        state: VringState = msg.payload
        if state.num > 0xFFFF:
            raise RequestFailed(f"vring base {state.num} is not a 16-bit split-ring index")
        self._reconfigure(self.rings[state.index], base=state.num)

    def _get_vring_base(self, msg: Message) -> VringState:
        ring = self.rings[msg.payload.index]
        self._stop_ring(ring)
        # Stopped means stopped: a new SET_VRING_KICK is needed to start again.
        _close(ring.kick_fd)
        ring.kick_fd, ring.kick_set = None, False
        # The front-end is tearing the ring down; a fresh set-up gets a fresh chance.
        ring.broken = None
        return VringState(ring.index, ring.base)

    def _set_vring_kick(self, msg: Message) -> None:
        vf: VringFile = msg.payload
        ring = self.rings[vf.index]
        fd = None if vf.no_fd else msg.fds.pop()
        self._stop_ring(ring)
        _close(ring.kick_fd)
        ring.kick_fd, ring.kick_set = fd, True
        self._try_start(ring)

    def _set_vring_call(self, msg: Message) -> None:
        vf: VringFile = msg.payload
        ring = self.rings[vf.index]
        _close(ring.call_fd)
        ring.call_fd = None if vf.no_fd else msg.fds.pop()

    def _set_vring_err(self, msg: Message) -> None:
        vf: VringFile = msg.payload
        ring = self.rings[vf.index]
        _close(ring.err_fd)
        ring.err_fd = None if vf.no_fd else msg.fds.pop()

    def _set_vring_enable(self, msg: Message) -> None:
        state: VringState = msg.payload
        if state.num not in (0, 1):
            raise RequestFailed(f"SET_VRING_ENABLE num must be 0 or 1, not {state.num}")
        ring = self.rings[state.index]
        ring.enable_requested = bool(state.num)
        self._update_enabled(ring)

    def _update_enabled(self, ring: Vring) -> None:
        enabled = ring.enable_requested if self.protocol_features_negotiated else True
        if enabled != ring.enabled:
            ring.enabled = enabled
            self._trace_ring(ring, "enable" if enabled else "disable")
            self.device.ring_enable_changed(ring)

    def _reconfigure(self, ring: Vring, **changes) -> None:
        """Change ring settings; a started ring restarts on the new ones."""
        was_started = ring.started
        self._stop_ring(ring)
        for key, value in changes.items():
            setattr(ring, key, value)
        if was_started:
            self._try_start(ring)

    def _stop_ring(self, ring: Vring) -> None:
        if ring.queue is None:
            return
        unused = self.device.ring_stopping(ring) or 0
        ring.base = (ring.queue.next_avail - unused) & 0xFFFF
        ring.queue = None
        self._trace_ring(ring, "stop")
        log.debug("%s: vring %d stopped at avail %d", self.name, ring.index, ring.base)

    def _try_start(self, ring: Vring) -> None:
        if ring.started or not (ring.kick_set and ring.num and ring.addr is not None and self.mem is not None):
            return
        mem, addr, num = self.mem, ring.addr, ring.num
        event_idx = bool(self.acked_features >> VIRTIO_F_RING_EVENT_IDX & 1)
        try:
            # SET_VRING_ADDR carries the front-end's virtual addresses.
            desc = mem.uva_to_gpa(addr.desc_uva, 16 * num)
            avail = mem.uva_to_gpa(addr.avail_uva, avail_ring_bytes(num, event_idx))
            used = mem.uva_to_gpa(addr.used_uva, used_ring_bytes(num, event_idx))
            queue = DeviceQueue(
                num, desc, avail, used,
                event_idx=event_idx,
                indirect=bool(self.acked_features >> VIRTIO_F_RING_INDIRECT_DESC & 1),
                next_avail=ring.base,
                used_idx=None,  # read from the used ring: it survives reconnects
            )
            queue.avail_count(mem)  # touch the rings now: a bad ring fails here, not mid-traffic
        except (GuestMemoryError, ValueError, QueueBroken) as e:
            log.warning("%s: vring %d cannot start: %s", self.name, ring.index, e)
            ring.mark_broken(f"cannot start: {e}")
            ring.signal_error()
            return
        ring.broken = None
        ring.queue = queue
        self._trace_ring(ring, "start")
        self._update_enabled(ring)
        log.info("%s: vring %d started: size %d, avail %d, %s", self.name, ring.index, num, ring.base,
                 "enabled" if ring.enabled else "disabled")
        self.device.ring_started(ring)

    # -- net and status ----------------------------------------------------
    def _send_rarp(self, msg: Message) -> None:
        mac: RarpMac = msg.payload
        self.device.send_rarp(mac.mac)

    def _net_set_mtu(self, msg: Message) -> None:
        self.device.set_mtu(msg.payload)

    def _set_status(self, msg: Message) -> None:
        if msg.payload > 0xFF:
            raise RequestFailed(f"device status {msg.payload:#x} is not a byte")
        self.status = msg.payload
        self.device.status_set(msg.payload)

    def _get_status(self, msg: Message) -> int:
        return self.status


def _direction(index: int | None) -> str | None:
    """A ring's direction by virtio-net's numbering (even: receive, odd: transmit)."""
    if index is None:
        return None
    return "tx" if index % 2 else "rx"


def _payload_text(payload) -> str | None:
    """A message's payload for the trace: a u64 in hex, a typed payload as its repr."""
    if payload is None:
        return None
    if isinstance(payload, int):
        return f"{payload:#x}"
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload[:64]).hex()
    return repr(payload)
