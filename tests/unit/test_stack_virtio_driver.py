"""The stack's virtio-net driver against our switch's vhost-user ports (and a
checksum-offloading test device): frames both ways, jumbo frames, bursts and
kick suppression, two MultiOS stacks talking UDP, a back-end that goes away
and comes back, broken rings, full rings, bad frames, checksum offloads.
"""
import collections
import errno
import logging
import os
import struct
import threading
import time
from ipaddress import IPv4Address

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.vhost_user.backend import BackendDevice, VhostUserBackend
from nicdev.vhost_user.frontend import OPTIONAL_FEATURES, BackendUnavailable
from nicdev.vhost_user.protocol import ProtocolFeature
from nicdev.vhost_user.server import VhostUserServer
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_MRG_RXBUF, mask,
)
from nicdev.virtio.net_hdr import (
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, NetHdr,
)
from nicdev.virtio.driver_events import DriverEvents
from nicdev.virtio.offload import DATA_VALID, FrameMeta
from stack import IpAddress, NicOffloads, SocketType, Stack
from stack.arp_cache import ArpCache
from stack.drivers import LoopbackNicPair, TxFrames, VirtioNetNic
from stack.drivers.virtio_driver import DEFAULT_FEATURES, TX_RING
from stack.wire import Ipv4Repr, UdpRepr

from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("datapath")

WAIT = 5.0
FAST = dict(reconnect_interval=0.05)


@pytest.fixture
def bg():
    switch = BackgroundSwitch()
    yield switch
    switch.close()


@pytest.fixture
def make_nic():
    nics = []

    def make(path, **kwargs):
        nic = VirtioNetNic(path, **{**FAST, **kwargs})
        nics.append(nic)
        return nic
    yield make
    for nic in nics:
        nic.close()


def add_port(bg, tmp_path, name):
    return bg.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock")))


@pytest.fixture
def pair(bg, tmp_path, make_nic):
    """Two NICs on two ports of one switch."""
    def build(**kwargs):
        pa, pb = add_port(bg, tmp_path, "a"), add_port(bg, tmp_path, "b")
        return make_nic(pa.socket_path, **kwargs), make_nic(pb.socket_path, **kwargs)
    return build


def frame(src: VirtioNetNic, dst: VirtioNetNic, payload: bytes) -> bytes:
    return bytes(dst.mac) + bytes(src.mac) + b"\x88\xb5" + payload     # local experimental ethertype


def finished(frames):
    """Frames as transmit takes them: (frame, None), nothing for the NIC to do."""
    return [(f, None) for f in frames]


def collect(nic, count, timeout=WAIT):
    """Receive until `count` frames came (or fail, naming what did come)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += nic.receive(64)
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {count} frames; counters {dict(nic.counters)}")
    return got


def send_all(tx, rx, frames, *, burst=64, window=128, timeout=10.0):
    """Send every frame, at most `window` unreceived at a time (the receiver has
    256 buffers); retry what the TX ring did not take. Returns what arrived."""
    got = []
    sent = 0
    deadline = time.monotonic() + timeout
    while len(got) < len(frames):
        room = window - (sent - len(got))
        if sent < len(frames) and room > 0:
            sent += tx.transmit(finished(frames[sent:sent + min(burst, room)]))
        got += rx.receive(64)
        if time.monotonic() > deadline:
            raise AssertionError(f"sent {sent}, received {len(got)} of {len(frames)}; "
                                 f"tx {dict(tx.counters)} rx {dict(rx.counters)}")
    return got


# -- frames ---------------------------------------------------------------------------
def test_frames_both_ways_intact(pair):
    a, b = pair()
    # Our switch's ports offer checksum and segmentation offloads.
    assert a.link_up and b.link_up
    assert a.offloads == NicOffloads.TX_CSUM | NicOffloads.RX_CSUM_TRUSTED | NicOffloads.TSO | NicOffloads.RX_GSO
    sizes = [14, 60, 61, 1000, 1514]
    for src, dst in ((a, b), (b, a)):
        frames = [frame(src, dst, os.urandom(n - 14)) for n in sizes]
        assert src.transmit(finished(frames)) == len(frames)
        got = collect(dst, len(frames))
        assert [f for f, _ in got] == frames
        assert all(meta == FrameMeta() for _, meta in got)
    assert a.counters["tx_frames"] == b.counters["rx_frames"] == len(sizes)
    assert a.drops == {} and b.drops == {}


def test_jumbo_frame_spans_mergeable_buffers(pair):
    a, b = pair(mtu=9000)
    assert a.features & 1 << VIRTIO_NET_F_MRG_RXBUF
    jumbo = frame(a, b, os.urandom(9000))
    assert len(jumbo) == 9014
    before = b.counters["rx_buffers"]
    assert a.transmit(finished([jumbo, frame(a, b, b"small" * 10)])) == 2
    got = collect(b, 2)
    assert got[0][0] == jumbo and got[1][0] == frame(a, b, b"small" * 10)
    assert b.counters["rx_buffers"] - before == 5 + 1, "9026 bytes with the header: five 2 KiB buffers"


def test_jumbo_frame_without_mrg_rxbuf(pair):
    a, b = pair(mtu=9000, features=OPTIONAL_FEATURES & ~mask(VIRTIO_NET_F_MRG_RXBUF))
    assert not a.features & 1 << VIRTIO_NET_F_MRG_RXBUF
    jumbo = frame(a, b, os.urandom(9000))
    assert a.transmit(finished([jumbo])) == 1
    assert collect(b, 1)[0][0] == jumbo
    assert b.counters["rx_buffers"] == 1, "one buffer big enough for a whole frame"


def test_frame_over_the_receivers_mtu_is_dropped_by_the_device(bg, tmp_path, make_nic):
    big = make_nic(add_port(bg, tmp_path, "big").socket_path, mtu=9000)
    small = make_nic(add_port(bg, tmp_path, "small").socket_path, mtu=1500)
    assert big.transmit(finished([frame(big, small, bytes(3000)), frame(big, small, bytes(100))])) == 2
    assert collect(small, 1)[0][0] == frame(big, small, bytes(100))
    # NET_SET_MTU told the small port's device; it dropped the big frame and counted it.
    assert bg.call(lambda: dict(bg.switch.ports["small"].device.counters.drops)) == {"frame_too_big": 1}


def test_burst_of_1000_with_kick_suppression(pair):
    a, b = pair()
    assert a.features & 1 << VIRTIO_F_RING_EVENT_IDX
    frames = [frame(a, b, struct.pack("!I", i) + bytes(46 + i % 1400)) for i in range(1000)]
    got = send_all(a, b, frames)
    assert [f for f, _ in got] == frames, "every frame, intact and in order"
    kicks, interrupts = a.counters["tx_kicks"], b.counters["rx_interrupts"]
    assert 0 < kicks < 1000 // 4, f"EVENT_IDX should suppress most kicks: {kicks} for 1000 frames"
    assert 0 < interrupts < 1000, f"{interrupts} interrupts for 1000 frames"
    assert a.drops == {} and b.drops == {}


def test_without_event_idx_the_flags_still_suppress(pair):
    a, b = pair(features=OPTIONAL_FEATURES & ~mask(VIRTIO_F_RING_EVENT_IDX))
    frames = [frame(a, b, struct.pack("!I", i) + bytes(60)) for i in range(300)]
    assert [f for f, _ in send_all(a, b, frames)] == frames
    assert a.counters["tx_kicks"] < 300


def test_fileno_is_readable_when_frames_wait(pair):
    import select
    a, b = pair()
    poller = select.poll()
    poller.register(b.fileno(), select.POLLIN)
    b.receive()                                     # drain the set-up wake-up
    assert poller.poll(0) == []
    a.transmit(finished([frame(a, b, b"x" * 50)]))
    assert poller.poll(int(WAIT * 1000)), "the RX call eventfd made the epoll fd readable"
    assert [f for f, _ in b.receive()] == [frame(a, b, b"x" * 50)]
    assert b.counters["rx_interrupts"] >= 1
    assert poller.poll(0) == [], "drained: interrupts re-enabled, nothing pending"


def test_receive_max_leaves_the_rest_readable(pair):
    import select
    a, b = pair()
    frames = [frame(a, b, struct.pack("!I", i) + bytes(50)) for i in range(40)]
    assert a.transmit(finished(frames)) == 40
    got = []
    deadline = time.monotonic() + WAIT
    while not got:
        got = b.receive(10)
        assert time.monotonic() < deadline
    poller = select.poll()
    poller.register(b.fileno(), select.POLLIN)
    while len(got) < 40:
        assert poller.poll(int(WAIT * 1000)), f"fd not readable with {40 - len(got)} frames to go"
        got += b.receive(10)
    assert [f for f, _ in got] == frames


# -- bad input and full rings ---------------------------------------------------------
def test_bad_frames_are_dropped_and_counted(pair):
    a, b = pair()
    good = frame(a, b, b"fine" * 20)
    burst = finished([bytes(10), frame(a, b, bytes(1519 - 14)), good]) + [(good, FrameMeta(True, 100, 6))]
    assert a.transmit(burst) == 1
    assert a.drops == {"tx_drop_runt": 1, "tx_drop_oversize": 1, "tx_drop_bad_csum_offsets": 1}
    assert [f for f, _ in collect(b, 1)] == [good]
    assert a.transmit(finished([frame(a, b, bytes(1518 - 14))])) == 1, "MTU + Ethernet header + one VLAN tag fits"


def test_transmit_takes_frame_and_meta_pairs_and_refuses_a_bare_frame(pair):
    a, b = pair()
    first, second = frame(a, b, b"first" * 12), frame(a, b, b"second" * 10)
    with pytest.raises(TypeError, match=r"a bare frame: pass \(frame, None\)"):
        a.transmit([(first, None), second])
    # What came before the bad item still goes out, and is counted.
    assert [f for f, _ in collect(b, 1)] == [first] and a.counters["tx_frames"] == 1
    partial, meta = udp_frame(a, partial=True)
    assert a.transmit([(second, None), (partial, meta)]) == 2
    assert [f for f, _ in collect(b, 2)] == [second, udp_frame(a)]


def test_transmit_frames_takes_a_burst_without_pairs(pair):
    """A list, a TxFrames sent twice, and frames with one list of metas: the
    same frames and counters as transmit() with pairs."""
    a, b = pair()
    first, second = frame(a, b, b"first" * 12), frame(a, b, b"second" * 10)
    assert a.transmit_frames([first, second]) == 2
    burst = TxFrames([second, first])
    assert a.transmit_frames(burst) == 2 and a.transmit_frames(burst) == 2
    assert [f for f, _ in collect(b, 6)] == [first, second, second, first, second, first]
    partial, meta = udp_frame(a, partial=True)
    frames = [partial, bytes(10), first]
    assert a.transmit_frames(frames, [meta, None, None]) == 2
    assert frames == [partial, bytes(10), first], "the caller's list is left as it was"
    assert [f for f, _ in collect(b, 2)] == [udp_frame(a), first]
    assert a.counters["tx_frames"] == 8 and a.drops == {"tx_drop_runt": 1}
    with pytest.raises(ValueError, match="2 frames and 1 metas"):
        a.transmit_frames([first, second], [None])


def test_transmit_frames_default_makes_pairs():
    """The Nic default (for NICs without burst rings) sends the same pairs."""
    pair = LoopbackNicPair()
    left, right = pair
    try:
        frames = [bytes(range(20)), bytes(range(1, 21))]
        assert left.transmit_frames(TxFrames(frames)) == 2
        assert left.transmit_frames(frames, [None, None]) == 2
        assert [f for f, _ in right.receive(8)] == frames * 2
        with pytest.raises(ValueError, match="2 frames and 3 metas"):
            left.transmit_frames(frames, [None] * 3)
    finally:
        pair.close()


def test_nic_traces_its_rings_when_given_events(bg, tmp_path, make_nic):
    events = DriverEvents()
    a = make_nic(add_port(bg, tmp_path, "a").socket_path, events=events)
    b = make_nic(add_port(bg, tmp_path, "b").socket_path)
    kinds = collections.Counter(kind for kind, *_ in events.records())
    assert kinds[DriverEvents.RX_POST] == a.queue_size, "every receive buffer posted at set-up"
    one = frame(a, b, b"traced" * 10)
    assert a.transmit_frames([one]) == 1
    (kind, head, length, ndesc), *rest = events.records()
    assert (kind, length, ndesc) == (DriverEvents.TX_ADD, 12 + len(one), 1)
    assert [k for k, *_ in rest] in ([DriverEvents.KICK], [DriverEvents.NO_KICK])
    assert [f for f, _ in collect(b, 1)] == [one]


def test_full_tx_ring_drops_and_counts(bg, tmp_path, make_nic):
    a = make_nic(add_port(bg, tmp_path, "a").socket_path, queue_size=8)
    b = make_nic(add_port(bg, tmp_path, "b").socket_path)
    release = threading.Event()
    blocked = threading.Event()

    def stall():
        blocked.set()
        release.wait(WAIT)
    stalled = threading.Thread(target=bg.call, args=(stall,), daemon=True)
    stalled.start()                                  # the switch's loop is stuck: nobody drains a's ring
    try:
        blocked.wait(WAIT)
        frames = [frame(a, b, struct.pack("!I", i) + bytes(50)) for i in range(20)]
        assert a.transmit(finished(frames)) == 8
        assert a.drops == {"tx_drop_ring_full": 12}
        assert a.link_up, "a full ring is not a dead back-end"
    finally:
        release.set()
        stalled.join(WAIT)
    assert [f for f, _ in collect(b, 8)] == frames[:8]
    assert a.transmit(finished(frames[8:16])) == 8, "slots come back once the device used them"


# -- MultiOS stacks on the driver ---------------------------------------------------------
def udp_exchange(st_a, st_b, payload=b"hello over virtio", port=5353):
    server = st_b.socket(SocketType.DATAGRAM)
    server.bind(IpAddress.parse(f"0.0.0.0:{port}"))
    server.set_timeout(WAIT)
    client = st_a.socket(SocketType.DATAGRAM)
    client.set_timeout(WAIT)
    try:
        client.send_to(payload, IpAddress.parse(f"10.0.0.2:{port}"))
        data, sender = server.recv_from(65535)
        assert data == payload and str(sender).startswith("10.0.0.1:")
        server.send_to(payload[::-1], sender)
        assert client.recv(65535) == payload[::-1]
    finally:
        client.close()
        server.close()


def test_two_stacks_exchange_udp_through_the_switch(pair):
    a, b = pair()
    with Stack(a, "10.0.0.1/24", arp_cache=ArpCache(retry_interval=0.1)) as st_a, \
            Stack(b, "10.0.0.2/24", arp_cache=ArpCache(retry_interval=0.1)) as st_b:
        udp_exchange(st_a, st_b)
        udp_exchange(st_a, st_b, payload=os.urandom(8000), port=5354)   # fragmented at MTU 1500
        assert st_a.counters()["nic"]["tx_frames"] >= 7


def test_stack_rides_out_a_backend_restart(bg, tmp_path, make_nic):
    pa, pb = add_port(bg, tmp_path, "a"), add_port(bg, tmp_path, "b")
    a, b = make_nic(pa.socket_path), make_nic(pb.socket_path)
    with Stack(a, "10.0.0.1/24", arp_cache=ArpCache(retry_interval=0.1)) as st_a, \
            Stack(b, "10.0.0.2/24", arp_cache=ArpCache(retry_interval=0.1)) as st_b:
        udp_exchange(st_a, st_b)
        bg.remove_port("b")
        wait_for(lambda: not b.link_up, "the stack's thread to notice the hang-up")
        # Attempts fail while nobody listens; each failure arms the next wake-up.
        wait_for(lambda: b.counters["reconnect_failures"] >= 3, "repeated reconnect attempts")
        bg.add_port(VhostUserPort("b", pb.socket_path))
        # Nobody calls the NIC but the stack's thread: the NIC's timer wakes it.
        wait_for(lambda: b.link_up, "the NIC to reconnect")
        udp_exchange(st_a, st_b, payload=b"after the restart")
        assert b.counters["reconnects"] == 1 and st_b.failure is None


# -- the back-end going away -------------------------------------------------------------------
def test_backend_disappears_then_comes_back(bg, tmp_path, make_nic, caplog):
    pa, pb = add_port(bg, tmp_path, "a"), add_port(bg, tmp_path, "b")
    a, b = make_nic(pa.socket_path), make_nic(pb.socket_path)
    assert a.transmit(finished([frame(a, b, b"before" * 10)])) == 1
    collect(b, 1)
    caplog.set_level(logging.DEBUG, logger="stack.drivers.virtio_driver")
    bg.remove_port("b")
    wait_for(lambda: b.receive() == [] and not b.link_up, "the hang-up to be noticed")
    assert "closed the connection" in b.last_error and b.counters["link_down"] == 1
    for _ in range(5):
        assert b.transmit(finished([frame(b, a, b"lost" * 20)])) == 0
        assert b.receive() == []
    assert b.drops["tx_drop_link_down"] == 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "link down" in errors[0].getMessage(), "logged once"
    bg.add_port(VhostUserPort("b", pb.socket_path))
    wait_for(lambda: b.receive() == [] and b.link_up, "the reconnect")
    assert b.counters["reconnects"] == 1 and b.last_error is None
    for src, dst in ((a, b), (b, a)):
        f = frame(src, dst, b"after" * 10)
        assert src.transmit(finished([f])) == 1
        assert [x for x, _ in collect(dst, 1)] == [f]


def test_no_reconnect_means_down_for_good(bg, tmp_path, make_nic):
    port = add_port(bg, tmp_path, "a")
    a = make_nic(port.socket_path, reconnect=False)
    bg.remove_port("a")
    wait_for(lambda: a.receive() == [] and not a.link_up, "the hang-up to be noticed")
    bg.add_port(VhostUserPort("a", port.socket_path))
    time.sleep(0.2)                     # several reconnect intervals: nothing may happen
    assert a.receive() == [] and not a.link_up and a.counters["reconnects"] == 0


def test_nobody_listening_at_construction(tmp_path):
    with pytest.raises(BackendUnavailable, match="no vhost-user backend listening"):
        VirtioNetNic(str(tmp_path / "nothing.sock"))


def test_backend_reports_a_broken_ring(pair, bg):
    a, b = pair()
    link = a._link
    # A descriptor pointing outside the shared memory: the device must refuse the ring.
    assert link.txq.put([frame(a, b, bytes(50))], None, None, 0, collections.Counter()) == (1, 1)
    table = link.mem.view(link.frontend.rings[TX_RING].layout.desc, 16)
    struct.pack_into("<Q", table, 0, 0x10)      # the first buffer of a fresh ring is in descriptor 0
    table.release()
    link._publish_tx()
    os.write(link.tx_kick_fd, (1).to_bytes(8, "little"))
    # Generous bounds: under a loaded machine the device thread and the re-negotiation take seconds.
    wait_for(lambda: a.receive() == [] and not a.link_up, "the err eventfd to take the link down", timeout=30)
    assert a.last_error == "the back-end reported the TX ring broken"
    wait_for(lambda: a.receive() == [] and a.link_up, "fresh rings", timeout=30)
    f = frame(a, b, b"fresh" * 10)
    assert a.transmit(finished([f])) == 1 and [x for x, _ in collect(b, 1)] == [f]


def test_device_breaking_the_rx_ring_rules(pair):
    a, b = pair()
    link = a._link
    used_idx = link.mem.view(link.rxq.used_gpa + 2, 2).cast("H")
    used_idx[0] = (link.rxq.last_used + 300) & 0xFFFF       # more used entries than buffers offered
    used_idx.release()
    assert a.receive() == [] and not a.link_up
    assert a.last_error.startswith("RX ring broken: device used idx")
    wait_for(lambda: a.receive() == [] and a.link_up, "fresh rings", timeout=30)
    f = frame(b, a, b"again" * 10)
    assert b.transmit(finished([f])) == 1 and [x for x, _ in collect(a, 1)] == [f]


# -- life cycle and threads ------------------------------------------------------------------------
def test_close(bg, tmp_path):
    port = add_port(bg, tmp_path, "a")
    nic = VirtioNetNic(port.socket_path)
    nic.close()
    nic.close()
    assert nic.fileno() is None
    for call in (lambda: nic.transmit(finished([bytes(60)])), nic.receive):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF
    wait_for(lambda: not bg.call(lambda: port.server.connected), "the hang-up")
    assert bg.call(lambda: port.backend.counters.by_request.get("GET_VRING_BASE")) == 2, "rings stopped first"


def test_concurrent_transmitters_and_a_receiver(pair):
    a, b = pair()
    sent: list[bytes] = []
    lock = threading.Lock()

    def sender(tag):
        for i in range(150):
            f = frame(a, b, tag + struct.pack("!I", i) + bytes(40))
            if a.transmit(finished([f])) == 1:
                with lock:
                    sent.append(f)
            time.sleep(0.0005)
    threads = [threading.Thread(target=sender, args=(t,)) for t in (b"T1", b"T2")]
    for t in threads:
        t.start()
    got = []
    while any(t.is_alive() for t in threads):
        got += b.receive(64)
    for t in threads:
        t.join()
    deadline = time.monotonic() + WAIT
    while len(got) < len(sent) and time.monotonic() < deadline:
        got += b.receive(64)
    assert sorted(f for f, _ in got) == sorted(sent), f"{len(got)} of {len(sent)}; {dict(b.counters)}"
    for tag in (b"T1", b"T2"):
        mine = [f for f, _ in got if f[14:16] == tag]
        assert mine == sorted(mine, key=lambda f: f[16:20]), "each sender's frames in order"


# -- checksum offloads, with a device that offers them ----------------------------------------------
class OffloadDevice(BackendDevice):
    """A bare device offering CSUM/GUEST_CSUM: the test pops TX and pushes RX by hand."""

    def __init__(self):
        self.rings, self.mem = {}, None

    def mem_table_changed(self, mem):
        self.mem = mem

    def ring_started(self, ring):
        self.rings[ring.index] = ring

    def ring_stopping(self, ring):
        self.rings.pop(ring.index, None)
        return 0

    def reset(self):
        self.rings, self.mem = {}, None

    def pop_tx(self):
        ring, out = self.rings[1], []
        while (chain := ring.queue.pop(self.mem)) is not None:
            data = chain.read(self.mem)
            out.append((NetHdr.unpack(data), data[12:]))
            ring.queue.push(self.mem, chain.head, 0)
        return out

    def push_rx(self, *buffers):
        """Each argument fills one RX buffer (the first starts with the header)."""
        ring = self.rings[0]
        for data in buffers:
            chain = ring.queue.pop(self.mem)
            ring.queue.push(self.mem, chain.head, chain.write(self.mem, data))
        ring.signal_call()


@pytest.fixture
def offload(bg, tmp_path, make_nic):
    device = OffloadDevice()
    features = mask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF,
                    VIRTIO_F_RING_EVENT_IDX)
    backend = VhostUserBackend(features, 1 << ProtocolFeature.REPLY_ACK, 2, device=device)
    server = VhostUserServer(backend, str(tmp_path / "offload.sock"))
    bg.call(lambda: server.start(bg.loop))
    nic = make_nic(server.path)
    yield nic, device
    nic.close()
    bg.call(server.close)


def udp_frame(nic, payload=b"checksum me", partial=False):
    src, dst = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    udp = UdpRepr(4000, 5000)
    if partial:
        datagram, start, offset = udp.emit_partial_csum(payload, src, dst)
    else:
        datagram = udp.emit(payload, src, dst)
    ip = Ipv4Repr(src, dst, 17, len(datagram)).emit(datagram)
    eth = b"\x02\x00\x00\x00\x00\x02" + bytes(nic.mac) + b"\x08\x00"
    frame_ = eth + ip
    if partial:
        return frame_, FrameMeta(True, 14 + 20 + start, offset)
    return frame_


def test_offloads_negotiated(offload):
    nic, _ = offload
    assert nic.offloads == NicOffloads.TX_CSUM | NicOffloads.RX_CSUM_TRUSTED


def test_tx_checksum_request_becomes_needs_csum(offload, bg):
    nic, device = offload
    partial, meta = udp_frame(nic, partial=True)
    assert nic.transmit([(partial, meta), (udp_frame(nic), None)]) == 2
    wait_for(lambda: bg.call(lambda: device.rings[1].queue.avail_count(device.mem)) == 2, "the frames")
    (hdr1, f1), (hdr2, f2) = bg.call(device.pop_tx)
    assert hdr1.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM and (hdr1.csum_start, hdr1.csum_offset) == (34, 6)
    assert f1 == partial, "the frame goes out as given: the device finishes the checksum"
    assert hdr2 == NetHdr() and f2 == udp_frame(nic)


def test_software_checksum_when_the_device_has_no_csum(pair):
    a, b = pair(features=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_CSUM))
    partial, meta = udp_frame(a, partial=True)
    assert a.transmit([(partial, meta)]) == 1 and a.counters["tx_sw_csum"] == 1
    (got, _), = collect(b, 1)
    assert got == udp_frame(a), "completed in software: the same bytes as a full checksum"


def test_software_checksum_sends_a_zero_udp_checksum_as_ffff(pair):
    a, b = pair(features=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_CSUM))
    # The first payload word is the datagram's checksum: with it the sum folds to 0.
    first = udp_frame(a, b"\0\0zero sum")[40:42]
    partial, meta = udp_frame(a, first + b"zero sum", partial=True)
    assert a.transmit([(partial, meta)]) == 1
    (got, _), = collect(b, 1)
    assert got[40:42] == b"\xff\xff", "RFC 768: a computed 0 is sent as all ones"
    assert got == udp_frame(a, first + b"zero sum")


def test_rx_checksum_flags(offload, bg):
    nic, device = offload
    good, partial = udp_frame(nic), udp_frame(nic, partial=True)[0]
    hdr = lambda **kw: NetHdr(num_buffers=1, **kw).pack()
    bg.call(lambda: device.push_rx(hdr(flags=VIRTIO_NET_HDR_F_DATA_VALID) + good))
    bg.call(lambda: device.push_rx(hdr() + good))
    bg.call(lambda: device.push_rx(hdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=6) + partial))
    bg.call(lambda: device.push_rx(hdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=600) + partial))
    bg.call(lambda: device.push_rx(hdr(gso_type=VIRTIO_NET_HDR_GSO_TCPV4, gso_size=1448) + good))
    got = collect(nic, 3)
    assert got == [(good, DATA_VALID), (good, FrameMeta()), (good, DATA_VALID)]
    wait_for(lambda: nic.receive() == [] and sum(nic.drops.values()) == 2, "the two bad frames to be counted")
    assert nic.drops == {"rx_drop_bad_csum_offsets": 1, "rx_drop_gso_not_negotiated": 1}


def test_mergeable_frame_split_across_receive_calls(offload, bg):
    nic, device = offload
    body = os.urandom(1500)
    f = bytes(nic.mac) + b"\x02\x00\x00\x00\x00\x09\x88\xb5" + body
    first = NetHdr(num_buffers=2).pack() + f[:1000]
    bg.call(lambda: device.push_rx(first))
    wait_for(lambda: nic.receive() == [] and nic.counters["rx_buffers"] == 1, "the first buffer")
    bg.call(lambda: device.push_rx(f[1000:]))
    assert collect(nic, 1) == [(f, FrameMeta())]


def test_impossible_num_buffers_breaks_the_link(offload, bg):
    nic, device = offload
    bg.call(lambda: device.push_rx(NetHdr(num_buffers=5000).pack() + bytes(60)))
    wait_for(lambda: nic.receive() == [] and not nic.link_up, "the link to go down")
    assert "spans 5000 buffers" in nic.last_error
    wait_for(lambda: nic.receive() == [] and nic.link_up, "fresh rings")
