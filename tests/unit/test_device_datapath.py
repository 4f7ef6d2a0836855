"""The virtio-net data path alone: real split rings in memfd guest memory, a
guest driver on the other side, no back-end, no event loop, no threads. What
goes in (chains, frames) and what comes out (frames, buffers, counters)."""
from __future__ import annotations

import ast
import os
import struct
from pathlib import Path

import pytest

from nicdev.net import device_datapath
from nicdev.net.device import DEVICE_FEATURES
from nicdev.net.device_datapath import (
    RX_BACKLOG_FRAMES, RX_NOTIFY, RX_RECHECK, RX_TAKEN, NetDatapath,
)
from nicdev.virtio.device_queue import DeviceQueue, QueueBroken
from nicdev.virtio.features import VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_NET_F_GUEST_CSUM, mask
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_NEEDS_CSUM, NetHdr
from nicdev.virtio.offload import GSO_TCPV4, FrameMeta
from nicdev.virtio.ring import VRING_DESC_F_NEXT, pack_descriptor

from support.offload_frames import tcp4_frame, udp4_frame
from support.datapaths import DATAPATHS
from support.vhost_user_guest import GuestNic, GuestRam, read_eventfd


def frame(n: int, fill: int = 0xAB) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes([fill]) * (n - 14)


class Rings:
    """A guest driver's RX and TX rings and the device's queues over them."""

    def __init__(self, features=DEVICE_FEATURES, *, event_idx=True, queue_size=256, datapath=None):
        self.ram = GuestRam()
        self.mem = self.ram.mem
        self.nic = GuestNic(self.ram, queue_size=queue_size, event_idx=event_idx)
        self.rxq, self.txq = (DeviceQueue.from_layout(layout, event_idx=event_idx) for layout in self.nic.layouts)
        self.drops = []
        self.dp = NetDatapath(on_drop=lambda d, r: self.drops.append((d, r)), datapath=datapath)
        self.dp.negotiate(features)

    def take(self, limit=64, enabled=True):
        out = []
        n = self.dp.tx_burst(self.txq, self.mem, limit, enabled, out)
        return n, out

    def put(self, frame, meta=None):
        return self.dp.rx_put(self.rxq, self.mem, frame, meta)

    def close(self):
        self.nic.close()
        self.ram.close()


@pytest.fixture(params=DATAPATHS)
def make_rings(request):
    made = []

    def make(*args, **kw):
        made.append(Rings(*args, datapath=request.param, **kw))
        return made[-1]
    yield make
    for r in made:
        r.close()


@pytest.fixture
def rings(make_rings):
    return make_rings()


def test_the_data_path_knows_no_fds_timers_or_clocks():
    tree = ast.parse(Path(device_datapath.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    assert not imported & {"os", "time", "socket", "select", "selectors", "threading", "asyncio", "signal"}
    assert "vhost_user" not in Path(device_datapath.__file__).read_text(), "the data path sees queues, not vrings"


# -- TX ------------------------------------------------------------------------------
def test_tx_chains_in_frames_out_buffers_back(rings):
    sent = [frame(60, 1), frame(1514, 2)]
    rings.nic.send(*sent)
    rings.nic.send(frame(70, 3), split_header=True)
    n, out = rings.take()
    assert n == 3
    assert out == [(sent[0], None), (sent[1], None), (frame(70, 3), None)]
    assert rings.nic.tx_completed() == 3, "the chains went back used"
    c = rings.dp.counters
    assert (c.tx_frames, c.tx_bytes) == (3, 60 + 1514 + 70)
    assert read_eventfd(rings.nic.call[1]) == 0, "signalling is the glue's business"


def test_tx_burst_takes_at_most_its_limit(rings):
    rings.nic.send(*[frame(60, i) for i in range(10)])
    n, out = rings.take(limit=4)
    assert n == 4 and [f[14] for f, _ in out] == [0, 1, 2, 3]
    n, out = rings.take(limit=100)
    assert n == 6 and [f[14] for f, _ in out] == list(range(4, 10))
    assert rings.take() == (0, [])


def test_tx_partial_checksum_and_gso_come_with_checked_metadata(rings):
    udp = udp4_frame(b"finish me")
    tcp = tcp4_frame(os.urandom(4000))
    rings.nic.send(udp, hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6))
    rings.nic.send(tcp, hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 1448, 34, 16))
    n, out = rings.take()
    assert out == [(udp, FrameMeta(True, 34, 6)), (tcp, FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54))]
    c = rings.dp.counters
    assert (c.tx_frames, c.tx_csum_partial, c.tx_gso) == (2, 2, 1)


def test_tx_disabled_ring_is_drained_as_drops(rings):
    rings.nic.send(frame(60), frame(61))
    assert rings.take(enabled=False) == (2, [])
    assert rings.nic.tx_completed() == 2
    assert rings.drops == [("tx", "tx_ring_disabled")] * 2


def test_tx_hostile_header_is_a_counted_drop_and_the_burst_goes_on(rings):
    rings.nic.send(udp4_frame(b"x"), hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 60, 6))
    rings.nic.send(frame(60))
    n, out = rings.take()
    assert n == 2 and out == [(frame(60), None)]
    assert rings.dp.counters.drops == {"tx_bad_csum_offsets": 1}


def test_tx_broken_chain_raises_with_the_frames_read_so_far(rings):
    rings.nic.send(frame(60, 7))
    mem, layout = rings.mem, rings.nic.layouts[1]
    # Append by hand a chain of two descriptors pointing at each other.
    buf = rings.ram.alloc(64)
    mem.write(layout.desc + 16 * 10, pack_descriptor(buf, 32, VRING_DESC_F_NEXT, 11)
              + pack_descriptor(buf, 32, VRING_DESC_F_NEXT, 10))
    avail = mem.view(layout.avail, 6 + 2 * 256).cast("H")
    avail[2 + 1] = 10
    avail[1] = 2
    out = []
    with pytest.raises(QueueBroken, match="loop"):
        rings.dp.tx_burst(rings.txq, mem, 64, True, out)
    assert out == [(frame(60, 7), None)]


# -- RX ------------------------------------------------------------------------------
def test_rx_frame_into_mergeable_buffers(rings):
    rings.nic.post_rx(8, 2048)
    big = bytes(range(256)) * 35 + bytes(40)
    assert rings.put(big) == RX_TAKEN | RX_NOTIFY
    assert rings.nic.rx.pending_used(rings.mem) == 5
    assert rings.nic.received() == [big]
    assert rings.dp.counters.rx_frames == 1 and rings.dp.counters.rx_bytes == 9000
    assert read_eventfd(rings.nic.call[0]) == 0, "signalling is the glue's business"


def test_rx_metadata_goes_into_the_header(rings):
    rings.nic.post_rx(40)
    tcp = tcp4_frame(os.urandom(20000))
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)
    assert rings.put(tcp, meta) & RX_TAKEN
    (gpa, _), written = rings.nic.rx.reap(rings.mem)[0]
    hdr = NetHdr.unpack(rings.mem.read(gpa, 12))
    assert hdr == NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16, hdr.num_buffers)
    assert hdr.num_buffers == -(-(12 + len(tcp)) // 2048)
    assert rings.dp.counters.rx_gso == 1 and rings.dp.counters.rx_csum_partial == 1


def test_rx_backlog_keeps_the_order_and_asks_for_a_kick(rings):
    rings.rxq.disable_notifications(rings.mem)          # as the glue starts the ring
    assert rings.put(frame(60, 1)) == RX_TAKEN           # no buffers: waits, no notification owed
    assert rings.dp.rx_waiting == 1 and rings.dp.counters.rx_backlogged == 1
    kicks = rings.nic.kicks[0]
    rings.nic.post_rx(1)
    assert rings.nic.kicks[0] == kicks + 1, "the first waiting frame asked the guest to kick"
    # A new frame flushes the backlog first: the waiting one goes, this one waits.
    assert rings.put(frame(61, 2)) == RX_TAKEN | RX_NOTIFY
    assert rings.nic.received() == [frame(60, 1)]
    rings.nic.post_rx(4)
    assert rings.dp.rx_flush(rings.rxq, rings.mem) == RX_NOTIFY
    assert rings.dp.rx_flush(rings.rxq, rings.mem) == 0
    assert rings.nic.received() == [frame(61, 2)] and rings.dp.rx_waiting == 0


def test_rx_backlog_is_bounded(rings):
    for i in range(RX_BACKLOG_FRAMES):
        assert rings.put(frame(60)) == RX_TAKEN
    assert rings.put(frame(60)) == 0
    assert rings.dp.counters.drops == {"no_rx_buffers": 1}


class GuestPostsDuringEnable:
    """The receive queue, with the guest posting a buffer just before the
    device's "kick me" lands: the race the re-check after enabling closes."""

    def __init__(self, queue, nic):
        self.queue, self.nic = queue, nic

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def enable_notifications(self, mem):
        self.nic.post_rx(1)
        return self.queue.enable_notifications(mem)


def test_rx_recheck_when_buffers_came_while_asking_for_a_kick(rings):
    racing = GuestPostsDuringEnable(rings.rxq, rings.nic)
    assert rings.dp.rx_put(racing, rings.mem, frame(60), None) == RX_TAKEN | RX_RECHECK
    assert rings.nic.received() == [], "it waits: the caller must come back (the glue sets a timer)"
    assert rings.dp.rx_flush(rings.rxq, rings.mem) == RX_NOTIFY
    assert rings.nic.received() == [frame(60)]


def test_rx_without_mergeable_buffers_a_frame_must_fit_one_chain(make_rings):
    r = make_rings(mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX))
    r.nic.post_rx(2, 2048)
    assert r.put(frame(4000)) == 0
    assert r.dp.counters.drops == {"frame_too_big": 1}
    assert r.put(frame(2000)) == RX_TAKEN | RX_NOTIFY   # the chain that was too small is used now
    assert r.nic.received() == [frame(2000)]


def test_rx_abandon_gives_back_held_chains_and_drops_the_backlog(rings):
    rings.nic.post_rx(2, 2048)
    assert rings.put(frame(9000)) == RX_TAKEN           # pops both, needs five: held, waits
    assert rings.put(frame(100)) == RX_TAKEN            # behind it
    assert rings.dp.rx_abandon("rx_ring_stopped") == 2
    assert rings.dp.counters.drops == {"rx_ring_stopped": 2} and rings.dp.rx_waiting == 0


def test_rx_to_a_guest_without_guest_csum_data_valid_is_left_out(make_rings):
    r = make_rings(DEVICE_FEATURES & ~(1 << VIRTIO_NET_F_GUEST_CSUM))
    r.nic.post_rx(1)
    valid = udp4_frame(b"v", partial=False)
    assert r.put(valid, FrameMeta(data_valid=True)) == RX_TAKEN | RX_NOTIFY
    (gpa, _), _ = r.nic.rx.reap(r.mem)[0]
    assert r.mem.read(gpa, 12) == struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)
    assert r.dp.counters.rx_data_valid == 0
