"""The stack's virtio-net driver on both data paths at once: two links over
two copies of the same memory, one with the C ring kernels and one with the
Python reference, get the same bursts (finished frames, checksum requests
good and bad, GSO frames, runts, giants, items that are not pairs) and the
same device (which completes TX buffers and fills RX buffers, sometimes with
nonsense), and must give the same results: frames and metadata up to the
stack, return values, exceptions, counters (kicks included) and every byte
of the shared memory."""
import collections
import os
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nicdev.virtio import kernels
from nicdev.virtio.driver_queue import DriverQueue
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MRG_RXBUF, mask,
)
from nicdev.virtio.memory import GuestMemory, MemoryRegion
from nicdev.virtio.net_hdr import NetHdr
from nicdev.virtio.offload import GSO_TCPV4, FrameMeta
from nicdev.virtio.ring import QueueBroken, SplitRingLayout
from stack.drivers.virtio_link import VirtioLink, big_tx_slots, pool_bytes

from support.offload_frames import ACK, CWR, PSH, tcp4_frame, udp4_frame

pytestmark = pytest.mark.skipif(not kernels.use_c(), reason="MNET_DATAPATH=python: the C kernels are not loaded")

QS = 8
MTU = 300
RING_STRIDE = 0x1000
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Side:
    """One link over its own memory and a fake front-end (no socket, eventfds for kicks)."""

    def __init__(self, datapath, features):
        big = big_tx_slots(QS, features)
        pool = pool_bytes(QS, MTU, big)
        self.size = 2 * RING_STRIDE + pool
        self.buf = bytearray(self.size)
        self.mem = GuestMemory([MemoryRegion(0, self.size, self.buf)])
        self.layouts = [SplitRingLayout(QS, i * RING_STRIDE) for i in range(2)]
        rings = []
        event_idx = bool(features & mask(VIRTIO_F_RING_EVENT_IDX))
        for layout in self.layouts:
            queue = DriverQueue.from_layout(layout, event_idx=event_idx)
            queue.init(self.mem)
            rings.append(SimpleNamespace(queue=queue, kick_fd=self._fd(), call_fd=self._fd(), err_fd=self._fd()))
        frontend = SimpleNamespace(mem=self.mem, features=features, rings=rings, connection_fileno=lambda: -1,
                                   queue_size=QS, pool_size=pool, pool_gpa=2 * RING_STRIDE)
        self.counters = collections.Counter()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(kernels, "_DATAPATH", datapath)
            self.link = VirtioLink(frontend, MTU, self.counters, big)
        self.rx = collections.deque()

    def _fd(self):
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.__dict__.setdefault("fds", []).append(fd)
        return fd

    def close(self):
        self.link.txq.close()
        self.link.rxq.close()
        for fd in self.fds:
            os.close(fd)


class Device:
    """Completes TX buffers and fills RX buffers, acting on one memory (the
    other side's gets the same writes)."""

    def __init__(self, layouts):
        self.layouts = layouts
        self.last_avail = [0, 0]
        self.used_idx = [0, 0]

    def writes(self, mem, ring, count, payloads=(), bad_len=None):
        lay, out = self.layouts[ring], []
        avail = struct.unpack_from(f"<HH{QS}H", mem.read(lay.avail, 4 + 2 * QS))
        for k in range(count):
            if self.last_avail[ring] == avail[1]:
                break
            head = avail[2 + self.last_avail[ring] % QS]
            self.last_avail[ring] = (self.last_avail[ring] + 1) & 0xFFFF
            written = 0
            if payloads:
                addr, cap, _, _ = struct.unpack_from("<QIHH", mem.read(lay.desc + 16 * head, 16))
                data = payloads[k % len(payloads)][:cap]
                out.append((addr, data))
                written = len(data)
            slot = lay.used + 4 + 8 * (self.used_idx[ring] % QS)
            out.append((slot, struct.pack("<II", head, written if bad_len is None else bad_len)))
            self.used_idx[ring] = (self.used_idx[ring] + 1) & 0xFFFF
            out.append((lay.used + 2, struct.pack("<H", self.used_idx[ring])))
        return out


def outcome(fn):
    try:
        return ("ok", fn())
    except (QueueBroken, TypeError) as e:
        return (type(e).__name__, str(e))


# -- what the stack and the device do ---------------------------------------------------------
def tcp_gso(payload_len, cwr=False):
    frame = tcp4_frame(bytes(payload_len), flags=ACK | PSH | (CWR if cwr else 0))
    return frame, FrameMeta(True, 34, 16, False, GSO_TCPV4, 100)


items = st.one_of(
    st.binary(min_size=0, max_size=MTU + 40).map(lambda f: (f, None)),             # runts and giants too
    st.just((udp4_frame(b"partial"), FrameMeta(True, 34, 6))),                      # a checksum request
    st.integers(0, 400).map(lambda start: (udp4_frame(b"lying"), FrameMeta(True, start, 6))),
    st.tuples(st.integers(1, 700), st.booleans()).map(lambda a: tcp_gso(*a)),     # GSO, whole or cut here
    st.just((tcp4_frame(b"x"), FrameMeta(data_valid=True))),
)
bursts = st.lists(items, max_size=12).flatmap(
    lambda burst: st.one_of(st.just(burst), st.just(burst + [b"a bare frame"] + burst[:1])))
rx_payloads = st.lists(st.one_of(
    st.binary(max_size=MTU + 40).map(lambda f: NetHdr(num_buffers=1).pack() + f),
    st.binary(min_size=20, max_size=200).map(
        lambda f: NetHdr(flags=2, num_buffers=1).pack() + bytes(14) + f),          # DATA_VALID
    st.just(NetHdr(flags=1, csum_start=34, csum_offset=6, num_buffers=1).pack() + udp4_frame(b"needs csum")),
    st.just(NetHdr(gso_type=GSO_TCPV4, gso_size=100, num_buffers=1).pack() + tcp4_frame(bytes(50))),
    st.integers(0, 3).map(lambda n: NetHdr(num_buffers=n).pack() + bytes(40)),     # merged, or nonsense
    st.binary(max_size=11),                                                         # a short buffer
), min_size=1, max_size=6)
moves = st.one_of(
    bursts.map(lambda b: ("transmit", b)),
    st.integers(0, QS).map(lambda n: ("tx_complete", n)),
    st.tuples(st.integers(0, QS), rx_payloads).map(lambda a: ("rx_fill", *a)),
    st.just(("poll",)), st.just(("enable",)),
    st.just(("tx_complete_bad_len",)),
)
feature_sets = st.sampled_from([
    mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX),
    mask(VIRTIO_F_VERSION_1),
    mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
         VIRTIO_NET_F_MRG_RXBUF),
    mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
         VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_GUEST_TSO4),
])


def step(side, move):
    link = side.link
    if move[0] == "transmit":
        return outcome(lambda: link.transmit(list(move[1])))
    if move[0] == "poll":
        result = outcome(lambda: link.poll_rx(side.rx))
        return result + (list(side.rx),)
    return outcome(link.enable_rx_interrupts)


@SETTINGS
@given(features=feature_sets, moves=st.lists(moves, min_size=1, max_size=25))
def test_the_driver_gives_the_same_results_on_both_data_paths(features, moves):
    c, py = Side("c", features), Side("python", features)
    try:
        assert c.buf == py.buf and c.counters == py.counters
        device = Device(py.layouts)
        for number, move in enumerate(moves):
            what = f"move {number}: {move[0]}"
            if move[0] == "tx_complete":
                writes = device.writes(py.mem, 1, move[1])
            elif move[0] == "tx_complete_bad_len":
                writes = device.writes(py.mem, 1, 1, bad_len=0xFFFF_FFFF)
            elif move[0] == "rx_fill":
                writes = device.writes(py.mem, 0, move[1], move[2])
            else:
                assert step(c, move) == step(py, move), what
                writes = []
            for side in (c, py):
                for gpa, data in writes:
                    side.mem.write(gpa, data)
            assert c.buf == py.buf, f"memory differs after {what}"
            assert c.counters == py.counters, what
    finally:
        c.close()
        py.close()
