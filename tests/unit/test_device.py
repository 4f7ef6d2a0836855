"""The virtio-net device against a guest driver (DriverQueue over memfd memory),
through the sans-IO back-end: both directions, every drop reason, broken rings."""
import struct

import pytest

from nicdev.net.device import BASE_FEATURES, DEVICE_FEATURES, VirtioNetDevice, make_rarp
from nicdev.vhost_user.messages import RarpMac, VringFile, VringState
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES, Request
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, mask,
)
from nicdev.virtio import kernels
from nicdev.virtio.net_hdr import NetHdr
from nicdev.virtio.ring import VRING_DESC_F_NEXT, pack_descriptor

from support.datapaths import DATAPATHS
from support.vhost_user_guest import Frontend, GuestNic, GuestRam, read_eventfd

BIT30 = 1 << F_PROTOCOL_FEATURES
ALL = DEVICE_FEATURES | BIT30
PLAIN = BASE_FEATURES | BIT30           # no checksum or GSO offloads negotiated


def frame(n: int, fill: int = 0xAB) -> bytes:
    """An Ethernet frame of n bytes: unicast dst, src, IPv4 type, payload."""
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes([fill]) * (n - 14)


class Net:
    """Device + back-end + a guest whose driver is started with `features`."""

    def __init__(self, features=ALL, *, queue_size=256, datapath=None):
        self.frames = []
        self.drops = []
        self.dev = VirtioNetDevice(self._from_guest, on_drop=lambda d, r: self.drops.append((d, r)),
                                   datapath=datapath)
        self.backend = self.dev.make_backend("test")
        self.ram = GuestRam()
        event_idx = bool(features >> VIRTIO_F_RING_EVENT_IDX & 1)
        hdr_len = 12 if features & mask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF) else 10
        self.nic = GuestNic(self.ram, queue_size=queue_size, event_idx=event_idx, hdr_len=hdr_len)
        self.fe = Frontend(backend=self.backend)
        self.fe.connect(self.nic)
        self.fe.start(self.nic, features)

    def _from_guest(self, frame, meta):
        assert meta is None, "plain frames from the guest come finished"
        self.frames.append(frame)

    def close(self):
        self.backend.reset()
        self.nic.close()
        self.ram.close()


@pytest.fixture(params=DATAPATHS)
def net(request):
    n = Net(datapath=request.param)
    yield n
    n.close()


@pytest.fixture(params=DATAPATHS)
def make_net(request):
    made = []

    def make(*args, **kw):
        made.append(Net(*args, datapath=request.param, **kw))
        return made[-1]
    yield make
    for n in made:
        n.close()


# -- TX: guest -> device ---------------------------------------------------------
def test_tx_frames_have_their_header_stripped(net):
    sent = [frame(60, 1), frame(1514, 2), frame(64, 3)]
    net.nic.send(*sent[:2])
    net.nic.send(sent[2], split_header=True)     # header in its own descriptor
    assert net.dev.process_tx() == 3
    assert net.frames == sent
    assert net.nic.tx_completed() == 3
    assert net.dev.counters.tx_frames == 3 and net.dev.counters.tx_bytes == sum(map(len, sent))
    assert read_eventfd(net.nic.call[1]) >= 1


def test_tx_indirect_chain(net):
    mem, ram = net.ram.mem, net.ram
    f = frame(200)
    buf = ram.alloc(12 + len(f))
    mem.write(buf, bytes(12) + f)
    table = ram.alloc(64)
    net.nic.tx.add_indirect(mem, table, [(buf, 12), (buf + 12, 100), (buf + 112, len(f) - 100)], [], (buf, 12 + len(f)))
    net.nic.tx.publish(mem)
    net.dev.process_tx()
    assert net.frames == [f]


def test_tx_legacy_10_byte_header(make_net):
    n = make_net(mask(VIRTIO_F_RING_INDIRECT_DESC) | BIT30)     # neither VERSION_1 nor MRG_RXBUF
    assert n.dev.datapath.hdr_len == 10
    n.nic.send(frame(100))
    n.dev.process_tx()
    assert n.frames == [frame(100)]


def test_disabled_tx_ring_is_drained_and_dropped(net):
    net.fe.call(Request.SET_VRING_ENABLE, VringState(1, 0))
    net.nic.send(frame(60), frame(61))
    assert net.dev.process_tx() == 2
    assert net.frames == []
    assert net.nic.tx_completed() == 2            # the guest got its buffers back
    assert net.dev.counters.drops == {"tx_ring_disabled": 2}
    assert net.drops == [("tx", "tx_ring_disabled")] * 2


def test_tx_bad_frames_are_counted(make_net):
    net = make_net(PLAIN)
    mem = net.ram.mem
    gpa = net.ram.alloc(64)
    net.nic.tx.add(mem, [(gpa, 8)], [], (gpa, 64))                  # shorter than the header
    net.nic.tx.add(mem, [(gpa, 12 + 10)], [], (gpa, 64))            # header + a runt
    net.nic.send(frame(60), hdr=NetHdr(flags=1, csum_start=34, csum_offset=6))   # offload never offered
    net.nic.send(frame(60), hdr=NetHdr(gso_type=1, gso_size=1448))
    net.dev.process_tx()
    assert net.frames == []
    assert net.dev.counters.drops == {"tx_no_header": 1, "tx_short_frame": 1, "tx_offload_not_negotiated": 2}


def test_tx_budget_bounds_one_call(net):
    net.dev.tx_budget = 5
    net.nic.send(*[frame(60, i) for i in range(12)])
    assert net.dev.process_tx() == 5
    assert net.dev.process_tx() == 5
    assert net.dev.process_tx() == 2
    assert [f[14] for f in net.frames] == list(range(12))


def test_tx_event_idx_asks_for_the_next_kick(net):
    net.nic.send(frame(60))
    assert net.nic.kicks[1] == 1
    net.dev.process_tx()
    # The device re-enabled notifications at its avail index: the next
    # buffer the guest adds must be kicked.
    net.nic.send(frame(60))
    assert net.nic.kicks[1] == 2


# -- RX: device -> guest ---------------------------------------------------------
def test_rx_without_buffers_waits_in_a_bounded_backlog(net):
    from nicdev.net.device_datapath import RX_BACKLOG_FRAMES

    assert net.dev.receive(frame(60)) is True          # held until buffers come
    assert net.dev.counters.drops == {} and net.dev.counters.rx_backlogged == 1
    net.nic.post_rx(1)
    assert net.dev.receive(frame(61)) is True          # the first goes out, this one waits
    assert net.nic.received() == [frame(60)]
    for _ in range(RX_BACKLOG_FRAMES - 1):
        assert net.dev.receive(frame(62)) is True
    assert net.dev.receive(frame(63)) is False         # the backlog is full: dropped
    assert net.dev.counters.drops == {"no_rx_buffers": 1}
    net.nic.post_rx(RX_BACKLOG_FRAMES)
    net.dev._on_rx_kick()                               # what the loop calls on the guest's kick
    got = net.nic.received()
    assert got[0] == frame(61) and got[1:] == [frame(62)] * (RX_BACKLOG_FRAMES - 1)


def test_rx_backlog_asks_the_guest_for_a_kick(net):
    net.dev.receive(frame(60))
    kicks = net.nic.kicks[0]
    net.nic.post_rx(1)
    assert net.nic.kicks[0] == kicks + 1, "the guest must kick once buffers arrive for a waiting frame"


def test_rx_mergeable_9000_byte_frame_over_2048_byte_buffers(net):
    net.nic.post_rx(16, 2048)
    big = bytes(range(256)) * 35 + bytes(40)      # 9000 bytes, not all the same
    assert len(big) == 9000
    assert net.dev.receive(big)
    used = net.nic.rx.pending_used(net.ram.mem)
    assert used == 5                               # 9012 bytes over 2048-byte buffers
    assert net.nic.received() == [big]
    assert read_eventfd(net.nic.call[0]) >= 1


def test_rx_header_is_zero_but_num_buffers(net):
    net.nic.post_rx(2, 2048)
    net.dev.receive(frame(100))
    (gpa, size), written = net.nic.rx.reap(net.ram.mem)[0]
    assert written == 112
    assert net.ram.mem.read(gpa, 12) == struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)


def test_rx_mergeable_not_enough_buffers_keeps_them_and_the_order(net):
    net.nic.post_rx(2, 2048)
    assert net.dev.receive(frame(9000))               # needs 5 buffers, 2 there: waits
    assert net.dev.counters.drops == {}
    net.nic.post_rx(4, 2048)
    assert net.dev.receive(frame(1000))               # the 9000 goes first, then this one
    assert net.nic.received() == [frame(9000), frame(1000)]


def test_rx_held_buffers_are_given_back_when_the_ring_stops(net):
    net.nic.post_rx(2, 2048)
    assert net.dev.receive(frame(9000))               # takes both, then waits for more
    assert net.fe.call(Request.GET_VRING_BASE, VringState(0, 0)).num == 0
    assert net.dev.counters.drops == {"rx_ring_stopped": 1}


def test_rx_without_mrg_frame_must_fit_one_chain(make_net):
    n = make_net(mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX) | BIT30)
    n.nic.post_rx(4, 2048)
    assert not n.dev.receive(frame(4000))
    assert n.dev.counters.drops == {"frame_too_big": 1}
    assert n.dev.receive(frame(2000))               # the chain that was too small is reused
    assert n.nic.received() == [frame(2000)]
    assert n.nic.rx.pending_used(n.ram.mem) == 0


def test_rx_disabled_ring_gets_nothing(net):
    net.nic.post_rx(2)
    net.fe.call(Request.SET_VRING_ENABLE, VringState(0, 0))
    assert not net.dev.receive(frame(60))
    assert net.dev.counters.drops == {"rx_ring_disabled": 1}
    assert net.nic.received() == []


def test_rx_before_rings_start():
    dev = VirtioNetDevice(lambda f, meta: None)
    assert not dev.receive(frame(60))
    assert dev.counters.drops == {"rx_ring_not_started": 1}


def test_rx_notification_suppressed_by_guest(net):
    net.nic.post_rx(4)
    net.nic.rx.disable_interrupts(net.ram.mem)
    read_eventfd(net.nic.call[0])
    net.dev.receive(frame(60))
    # A device cannot know what was signalled before it started: its first
    # decision is always to signal. After that the guest's used_event rules.
    assert read_eventfd(net.nic.call[0]) == 1
    net.dev.receive(frame(60))
    assert read_eventfd(net.nic.call[0]) == 0
    assert net.dev.counters.calls == 1
    assert len(net.nic.received()) == 2


def test_mtu(net):
    assert net.fe.call(Request.NET_SET_MTU, 1500, need_reply=True) == 0
    assert net.fe.call(Request.NET_SET_MTU, 20, need_reply=True) == 1
    net.nic.post_rx(8)
    assert not net.dev.receive(frame(1600))
    assert net.dev.receive(frame(1518))
    net.nic.send(frame(1600))
    net.dev.process_tx()
    assert net.frames == []
    assert net.dev.counters.drops == {"frame_too_big": 1, "tx_frame_too_big": 1}


def test_mtu_needs_the_feature(make_net):
    n = make_net(ALL & ~(1 << VIRTIO_NET_F_MTU))
    assert n.fe.call(Request.NET_SET_MTU, 1500, need_reply=True) == 1


def test_send_rarp_announces_the_mac(net):
    mac = bytes.fromhex("525400abcdef")
    net.fe.call(Request.SEND_RARP, RarpMac(mac))
    assert net.frames == [make_rarp(mac)]
    rarp = net.frames[0]
    assert rarp[:6] == b"\xff" * 6 and rarp[6:12] == mac and rarp[12:14] == b"\x80\x35" and len(rarp) == 60


# -- broken rings -----------------------------------------------------------------
def test_looping_tx_chain_breaks_only_that_ring(net):
    mem, tx = net.ram.mem, net.nic.tx
    # Two descriptors pointing at each other, made by hand as a hostile guest would.
    buf = net.ram.alloc(64)
    layout = net.nic.layouts[1]
    mem.write(layout.desc, pack_descriptor(buf, 32, VRING_DESC_F_NEXT, 1) + pack_descriptor(buf, 32, VRING_DESC_F_NEXT, 0))
    avail = mem.view(layout.avail, 6 + 2 * 256).cast("H")
    avail[2] = 0
    avail[1] = 1
    net.dev.process_tx()
    assert "loop" in net.dev.broken
    assert net.backend.rings[1].broken
    assert read_eventfd(net.nic.err[1]) == 1
    # RX keeps working
    net.nic.post_rx(1)
    assert net.dev.receive(frame(60))
    assert net.nic.received() == [frame(60)]
    # the broken ring is not touched again
    assert net.dev.process_tx() == 0
    # the front-end sets the ring up again (as after a guest reboot): it works
    fe = net.fe
    base = fe.call(Request.GET_VRING_BASE, VringState(1, 0)).num
    assert base == 0                                # the bad chain was never consumed
    for q in (tx,):
        q.init(mem)
    fe.call(Request.SET_VRING_BASE, VringState(1, 0))
    fe.call(Request.SET_VRING_ADDR, net.nic.addr(1))
    fe.call(Request.SET_VRING_KICK, VringFile(1), [net.nic.kick[1]])
    assert net.dev.broken is None
    net.nic.send(frame(70))
    net.dev.process_tx()
    assert net.frames == [frame(70)]


def test_rx_buffer_outside_memory_breaks_rx_ring(net):
    mem = net.ram.mem
    net.nic.rx.add(mem, [], [(0x7000_0000, 2048)], None)     # not guest memory
    net.nic.rx.publish(mem)
    assert not net.dev.receive(frame(60))
    assert net.dev.counters.drops == {"ring_broken": 1}
    assert not net.dev.receive(frame(60))
    assert net.dev.counters.drops == {"ring_broken": 2}
    assert "rx ring" in net.dev.broken and "not in guest memory" in net.dev.broken
    # TX still works
    net.nic.send(frame(80))
    net.dev.process_tx()
    assert net.frames == [frame(80)]


def test_reset_forgets_the_guest(net):
    net.backend.reset()
    assert net.dev.rx is None and net.dev.tx is None and net.dev.mem is None
    assert not net.dev.receive(frame(60))


def test_receive_burst_counts_a_ring_broken_mid_burst_as_receive_does(make_net):
    """Two good buffers, then one outside guest memory: the burst's first
    two frames arrive, the one that breaks the ring and those after it are
    ring_broken drops, and a too-long frame before them is its own drop, as
    `receive` frame by frame counts them."""
    results = []
    for by_burst in (False, True):
        net = make_net()
        mem = net.ram.mem
        net.nic.post_rx(2)
        net.nic.rx.add(mem, [], [(0x7000_0000, 2048)], None)     # not guest memory
        net.nic.rx.publish(mem)
        items = [(frame(60, 1), None), (frame(70000, 2), None), (frame(80, 3), None), (frame(90, 4), None),
                 (frame(100, 5), None)]
        if by_burst:
            taken, nbytes = net.dev.receive_burst(items)
        else:
            got = [net.dev.receive(f, m) for f, m in items]
            taken, nbytes = sum(got), sum(len(f) for (f, _), ok in zip(items, got) if ok)
        counters = net.dev.counters.as_dict()
        # With no event loop, receive() signals the guest per frame, before
        # the ring broke; a burst's signal comes after it, when a broken ring
        # takes none (as receive's does on a loop, at the end of the turn).
        del counters["calls"]
        results.append((taken, nbytes, net.nic.received(), counters, net.drops, net.dev.broken))
    assert results[1] == results[0]
    taken, nbytes, received, counters, drops, broken = results[0]
    assert (taken, received) == (2, [frame(60, 1), frame(80, 3)])
    assert counters["drops"] == {"frame_too_big": 1, "ring_broken": 2} and "not in guest memory" in broken


def test_receive_pooled_counts_a_ring_broken_mid_burst_as_receive_does(make_net):
    """Another guest's pooled burst into a ring that breaks midway, after a
    frame too long for this guest's MTU: that frame is frame_too_big only,
    the one the ring broke at and those after it ring_broken, as `receive`
    counts them frame by frame (the Python data path's receive_pooled)."""
    if not kernels.use_c():
        pytest.skip("MNET_DATAPATH=python: no pooled bursts")
    src = Net(datapath="c")
    dst = make_net()
    try:
        dst.dev.datapath.mtu = 1000
        mem = dst.ram.mem
        dst.nic.post_rx(2)
        dst.nic.rx.add(mem, [], [(0x7000_0000, 2048)], None)     # not guest memory
        dst.nic.rx.publish(mem)
        got = []
        src.dev.on_pooled = lambda frames: got.append(dst.dev.receive_pooled(frames, 0, frames.count))
        sent = [frame(60, 1), frame(1500, 2), frame(80, 3), frame(90, 4), frame(100, 5)]
        src.nic.send(*sent)
        src.dev.process_tx()
        assert got == [(2, 140)] and dst.nic.received() == [frame(60, 1), frame(80, 3)]
        assert dst.dev.counters.drops == {"frame_too_big": 1, "ring_broken": 2}
    finally:
        src.close()
