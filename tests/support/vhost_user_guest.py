"""Test doubles for vhost-user tests: a guest (memfd memory + split-ring driver)
and a front-end that speaks to a back-end the way QEMU 7.2 does.

Not a test module: imported by test_vhost_user_*.py and test_virtio_net_*.py.
"""
from __future__ import annotations

import mmap
import os
import socket
import time

from nicdev.vhost_user.connection import Connection
from nicdev.vhost_user.messages import (
    MemoryRegionDesc, MemoryTable, Message, VringAddr, VringFile, VringState, parse,
)
from nicdev.vhost_user.protocol import FLAG_NEED_REPLY, VERSION, ProtocolFeature, Request
from nicdev.virtio.driver_queue import DriverQueue
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.net_hdr import NetHdr
from nicdev.virtio.ring import SplitRingLayout

MiB = 1 << 20
UNIT = 2048


class GuestRam:
    """A memfd shared like QEMU's memory-backend-memfd, as two regions.

    Region 0 (rings) is gpa 0..1 MiB at file offset 0; region 1 (buffers) is
    gpa 1 GiB.. at file offset 1 MiB, so the back-end has to honour
    mmap_offset. The "virtual addresses" are made up: the back-end only uses
    them to translate SET_VRING_ADDR."""

    RING_GPA = 0
    BUF_GPA = 0x4000_0000
    UVA0 = 0x7F12_3400_0000
    UVA1 = 0x7F56_7800_0000

    def __init__(self, size: int = 4 * MiB, split: int = 1 * MiB) -> None:
        self.fd = os.memfd_create("test-guest-ram", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        self.descs = [
            MemoryRegionDesc(self.RING_GPA, split, self.UVA0, 0),
            MemoryRegionDesc(self.BUF_GPA, size - split, self.UVA1, split),
        ]
        view = memoryview(self.map)
        self.mem = GuestMemory([
            MemoryRegion(self.RING_GPA, split, view[:split], self.UVA0),
            MemoryRegion(self.BUF_GPA, size - split, view[split:], self.UVA1),
        ])
        self._units = bytearray((size - split) // UNIT)  # 1 = in use

    def uva(self, gpa: int) -> int:
        for d in self.descs:
            if d.gpa <= gpa < d.gpa + d.size:
                return d.uva + gpa - d.gpa
        raise ValueError(f"gpa {gpa:#x} not in guest RAM")

    def table(self) -> MemoryTable:
        return MemoryTable(self.descs)

    def alloc(self, size: int) -> int:
        n = -(-size // UNIT)
        run = 0
        for i, used in enumerate(self._units):
            run = 0 if used else run + 1
            if run == n:
                start = i - n + 1
                self._units[start:i + 1] = b"\x01" * n
                return self.BUF_GPA + start * UNIT
        raise MemoryError(f"no room for {size} bytes of buffers")

    def free(self, gpa: int, size: int) -> None:
        start = (gpa - self.BUF_GPA) // UNIT
        n = -(-size // UNIT)
        self._units[start:start + n] = bytes(n)

    def close(self) -> None:
        self.mem.release()
        try:
            self.map.close()
        except BufferError:
            pass
        os.close(self.fd)


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def read_eventfd(fd: int) -> int:
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0


class GuestNic:
    """The guest's virtio-net driver: RX ring 0, TX ring 1, over GuestRam."""

    def __init__(self, ram: GuestRam, *, queue_size: int = 256, event_idx: bool = True, hdr_len: int = 12) -> None:
        self.ram = ram
        self.queue_size = queue_size
        self.hdr_len = hdr_len
        self.layouts = [SplitRingLayout(queue_size, 0x0), SplitRingLayout(queue_size, 0x10000)]
        self.queues = [DriverQueue.from_layout(l, event_idx=event_idx) for l in self.layouts]
        for q in self.queues:
            q.init(ram.mem)
        self.kick = [eventfd(), eventfd()]
        self.call = [eventfd(), eventfd()]
        self.err = [eventfd(), eventfd()]
        self.kicks = [0, 0]

    @property
    def rx(self) -> DriverQueue:
        return self.queues[0]

    @property
    def tx(self) -> DriverQueue:
        return self.queues[1]

    def new_eventfds(self) -> None:
        """Fresh kick/call/err fds, as a front-end has after a reconnect."""
        for fd in self.kick + self.call + self.err:
            os.close(fd)
        self.kick = [eventfd(), eventfd()]
        self.call = [eventfd(), eventfd()]
        self.err = [eventfd(), eventfd()]

    def addr(self, index: int) -> VringAddr:
        l = self.layouts[index]
        return VringAddr(index, 0, self.ram.uva(l.desc), self.ram.uva(l.used), self.ram.uva(l.avail), 0)

    def _publish(self, index: int) -> None:
        q = self.queues[index]
        q.publish(self.ram.mem)
        if q.should_kick(self.ram.mem):
            os.write(self.kick[index], (1).to_bytes(8, "little"))
            self.kicks[index] += 1

    # -- transmit ---------------------------------------------------------------
    def send(self, *frames: bytes, split_header: bool = False, hdr: NetHdr | None = None) -> None:
        """Queue frames on the TX ring (header + frame in one buffer, or two)."""
        mem = self.ram.mem
        header = (hdr or NetHdr(num_buffers=0)).pack(self.hdr_len)
        for frame in frames:
            gpa = self.ram.alloc(self.hdr_len + len(frame))
            mem.write(gpa, header + frame)
            if split_header:
                segs = [(gpa, self.hdr_len), (gpa + self.hdr_len, len(frame))]
            else:
                segs = [(gpa, self.hdr_len + len(frame))]
            self.tx.add(mem, segs, [], (gpa, self.hdr_len + len(frame)))
        self._publish(1)

    def tx_completed(self) -> int:
        done = self.tx.reap(self.ram.mem)
        for (gpa, size), _ in done:
            self.ram.free(gpa, size)
        return len(done)

    # -- receive ----------------------------------------------------------------
    def post_rx(self, count: int, size: int = 2048) -> None:
        mem = self.ram.mem
        for _ in range(count):
            gpa = self.ram.alloc(size)
            self.rx.add(mem, [], [(gpa, size)], (gpa, size))
        self._publish(0)

    def received(self) -> list[bytes]:
        """Frames the device wrote, mergeable buffers joined by num_buffers."""
        mem = self.ram.mem
        frames = []
        pending: list[bytes] = []
        want = 0
        for (gpa, size), written in self.rx.reap(mem):
            data = mem.read(gpa, written)
            self.ram.free(gpa, size)
            if not pending:
                hdr = NetHdr.unpack(data, self.hdr_len)
                want = max(1, hdr.num_buffers) if self.hdr_len == 12 else 1
                pending.append(data[self.hdr_len:])
            else:
                pending.append(data)
            if len(pending) == want:
                frames.append(b"".join(pending))
                pending = []
        assert not pending, "a frame's buffers were not all used"
        return frames

    def close(self) -> None:
        for fd in self.kick + self.call + self.err:
            os.close(fd)


class Frontend:
    """Speaks vhost-user to a back-end in QEMU 7.2's order.

    Over a socket (`sock`; `pump()` runs the back-end's event loop a little
    when it lives on this thread, and the socket is then non-blocking), or
    straight into a sans-IO `backend` (messages encoded and parsed, fds
    duplicated as SCM_RIGHTS would)."""

    def __init__(self, sock: socket.socket | None = None, *, backend=None, pump=None, timeout: float = 5.0) -> None:
        self.pump = pump
        self.timeout = timeout
        self.backend = backend
        self.conn = None
        if sock is not None:
            sock.setblocking(pump is None)
            if pump is None:
                sock.settimeout(timeout)
            self.conn = Connection(sock)
        self.sock = sock
        self._replies: list[Message] = []
        self.protocol_features = 0
        self.log: list[str] = []

    def send(self, request, payload=None, fds=(), *, need_reply: bool = False) -> None:
        flags = VERSION | (FLAG_NEED_REPLY if need_reply else 0)
        msg = Message(request, flags, payload, list(fds))
        self.log.append(str(msg))
        if self.conn is not None:
            self.conn.send(msg)
            return
        received = parse(msg.encode(), [os.dup(fd) for fd in fds])
        for reply in self.backend.handle(received):
            self._replies.append(parse(reply.encode(), reply.fds))

    def reply(self, request) -> Message:
        if self.conn is None:
            assert self._replies, f"no reply to {Request(request).name}"
            msg = self._replies.pop(0)
            assert msg.request == request and msg.is_reply, f"expected {request!r} reply, got {msg}"
            return msg
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self.conn.read_message()
            if msg is not None:
                assert msg.request == request and msg.is_reply, f"expected {request!r} reply, got {msg}"
                return msg
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {Request(request).name} within {self.timeout}s")
            if self.pump is not None:
                self.pump()

    def call(self, request, payload=None, fds=(), *, need_reply: bool = False):
        """Send; return the reply's payload if the request has one (or asked for an ack)."""
        self.send(request, payload, fds, need_reply=need_reply)
        explicit = request in (Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.GET_QUEUE_NUM,
                               Request.GET_VRING_BASE, Request.GET_STATUS)
        acked = need_reply and self.protocol_features >> ProtocolFeature.REPLY_ACK & 1
        if explicit or acked:
            return self.reply(request).payload
        if self.pump is not None:
            self.pump()
        return None

    # -- QEMU 7.2's sequence (docs/vhost-user.md, "What the front-ends really send") --
    def connect(self, nic: GuestNic, *, want_protocol: int | None = None) -> int:
        """Connect-time and driver-probe messages; returns the offered features."""
        features = self.call(Request.GET_FEATURES)
        offered = self.call(Request.GET_PROTOCOL_FEATURES)
        self.protocol_features = offered if want_protocol is None else offered & want_protocol
        self.call(Request.SET_PROTOCOL_FEATURES, self.protocol_features)
        if self.protocol_features >> ProtocolFeature.MQ & 1:
            assert self.call(Request.GET_QUEUE_NUM) >= 1
        self.call(Request.SET_OWNER)
        assert self.call(Request.GET_FEATURES) == features
        for i in (0, 1):
            self.call(Request.SET_VRING_CALL, VringFile(i), [nic.call[i]])
            self.call(Request.SET_VRING_ERR, VringFile(i), [nic.err[i]])
        return features

    def start(self, nic: GuestNic, features: int, *, bases=(0, 0), status: bool = True) -> None:
        """What QEMU sends when the guest driver sets DRIVER_OK."""
        self.call(Request.SET_FEATURES, features)
        if status and self.protocol_features >> ProtocolFeature.STATUS & 1:
            self.call(Request.GET_STATUS)
            self.call(Request.SET_STATUS, 0x0F, need_reply=True)
        assert self.call(Request.SET_MEM_TABLE, nic.ram.table(), [nic.ram.fd] * 2, need_reply=True) in (0, None)
        for i in (0, 1):
            self.call(Request.SET_VRING_NUM, VringState(i, nic.queue_size))
            self.call(Request.SET_VRING_BASE, VringState(i, bases[i]))
            self.call(Request.SET_VRING_ADDR, nic.addr(i))
            self.call(Request.SET_VRING_KICK, VringFile(i), [nic.kick[i]])
            self.call(Request.SET_VRING_CALL, VringFile(i), [nic.call[i]])
        for i in (0, 1):
            self.call(Request.SET_VRING_ENABLE, VringState(i, 1))

    def stop(self) -> list[int]:
        """Shutdown: GET_VRING_BASE per ring (stops it), then disable."""
        bases = [self.call(Request.GET_VRING_BASE, VringState(i, 0)).num for i in (0, 1)]
        for i in (0, 1):
            self.call(Request.SET_VRING_ENABLE, VringState(i, 0))
        return bases

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
