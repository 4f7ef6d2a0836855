"""The virtio-net device's checksum and segmentation offloads against a guest
driver (DriverQueue over memfd memory, through the sans-IO back-end): what is
offered, TX with NEEDS_CSUM/GSO headers, RX headers by negotiated feature,
and hostile headers as counted drops."""
from __future__ import annotations

import os

import pytest

from nicdev.virtio.offload import DATA_VALID, GSO_ECN, GSO_TCPV4, GSO_TCPV6, FrameMeta
from nicdev.net.device import BASE_FEATURES, DEVICE_FEATURES, OFFLOAD_FEATURES, VirtioNetDevice
from nicdev.net.egress import EgressFrame
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES, Request
from nicdev.virtio.features import (
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF, mask,
)
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, NetHdr

from support.offload_frames import ACK, PSH, TIMESTAMPS, split_tcp4, tcp4_checksums_ok, tcp4_frame, udp4_frame
from support.vhost_user_guest import Frontend, GuestNic, GuestRam

BIT30 = 1 << F_PROTOCOL_FEATURES
ALL = DEVICE_FEATURES | BIT30
NO_GUEST_OFFLOADS = ALL & ~mask(VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
                                VIRTIO_NET_F_GUEST_ECN)
CSUM_ONLY = ALL & ~mask(VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN,
                        VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_ECN)
TSO = NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 1448, 34, 16)


class Net:
    """Device + back-end + a guest started with `features`; frames from the
    guest land in `plain` (finished) and `offloaded` ((frame, meta)). With
    `metadata=False` the receiver takes no metadata: frames are finished at
    that egress (`EgressFrame`), as the switch does for such a port."""

    def __init__(self, features=ALL, *, metadata=True, offloads=True, ram_mib=4):
        self.plain, self.offloaded, self.drops = [], [], []
        self.metadata = metadata
        self.dev = VirtioNetDevice(self._from_guest, on_drop=lambda d, r: self.drops.append((d, r)),
                                   offloads=offloads)
        self.backend = self.dev.make_backend("test")
        self.ram = GuestRam(size=ram_mib << 20)
        self.nic = GuestNic(self.ram)
        self.fe = Frontend(backend=self.backend)
        self.offered = self.fe.connect(self.nic)
        self.fe.start(self.nic, features & self.offered)

    def _from_guest(self, frame, meta):
        if meta is None:
            self.plain.append(frame)
        elif self.metadata:
            self.offloaded.append((frame, meta))
        else:
            self.plain.extend(f for f, _ in EgressFrame(frame, meta).for_egress(False, frozenset()))

    def received(self):
        """(header, frame) for each frame the device wrote (mergeable buffers joined)."""
        mem = self.ram.mem
        out, parts, hdr = [], [], None
        for (gpa, size), written in self.nic.rx.reap(mem):
            data = mem.read(gpa, written)
            self.ram.free(gpa, size)
            if hdr is None:
                hdr = NetHdr.unpack(data)
                parts = [data[12:]]
            else:
                parts.append(data)
            if len(parts) == hdr.num_buffers:
                out.append((hdr, b"".join(parts)))
                hdr = None
        assert hdr is None, "a frame's buffers were not all used"
        return out

    def close(self):
        self.backend.reset()
        self.nic.close()
        self.ram.close()


@pytest.fixture
def make_net():
    made = []

    def make(*args, **kw):
        made.append(Net(*args, **kw))
        return made[-1]
    yield make
    for n in made:
        n.close()


# -- what is offered ---------------------------------------------------------------
def test_offloads_are_offered_and_can_be_switched_off(make_net):
    on = make_net()
    for bit in (VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
                VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN):
        assert on.offered >> bit & 1, bit
    assert on.dev.datapath.guest_csum and on.dev.datapath.rx_gso == {GSO_TCPV4, GSO_TCPV6, GSO_ECN}
    assert on.dev.datapath.tx_csum and on.dev.datapath.tx_gso == {GSO_TCPV4, GSO_TCPV6, GSO_ECN}
    off = make_net(offloads=False)
    assert off.offered & OFFLOAD_FEATURES == 0 and off.offered & BASE_FEATURES == BASE_FEATURES
    assert not off.dev.datapath.guest_csum and not off.dev.datapath.rx_gso and not off.dev.datapath.tx_gso


def test_a_guest_tso_without_guest_csum_is_not_used(make_net):
    # The spec makes GUEST_TSO4 depend on GUEST_CSUM: without it, no GSO to the guest.
    net = make_net(ALL & ~mask(VIRTIO_NET_F_GUEST_CSUM))
    assert not net.dev.datapath.guest_csum and not net.dev.datapath.rx_gso


# -- TX: the guest sends offloaded frames ---------------------------------------------
def test_tx_partial_checksum_frame_comes_with_its_metadata(make_net):
    net = make_net()
    frame = udp4_frame(b"finish me")
    net.nic.send(frame, hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6))
    net.dev.process_tx()
    assert net.offloaded == [(frame, FrameMeta(True, 34, 6))] and net.plain == []
    assert net.dev.counters.tx_csum_partial == 1 and net.dev.counters.tx_frames == 1


def test_tx_gso_frame_over_the_mtu_comes_whole(make_net):
    net = make_net()
    net.fe.call(Request.NET_SET_MTU, 1500)
    frame = tcp4_frame(os.urandom(30000), options=TIMESTAMPS)
    net.nic.send(frame, hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 1000, 1448, 34, 16))
    net.nic.send(tcp4_frame(bytes(3000)))                     # not GSO and over the MTU: dropped
    net.dev.process_tx()
    (got, meta), = net.offloaded
    assert got == frame
    assert meta == FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 66), "hdr_len is measured, not trusted"
    assert net.dev.counters.tx_gso == 1 and net.dev.counters.drops == {"tx_frame_too_big": 1}


def test_tx_frames_are_finished_at_an_egress_that_takes_no_metadata(make_net):
    net = make_net(metadata=False)
    payload = os.urandom(5000)
    frame = tcp4_frame(payload, flags=ACK | PSH)
    net.nic.send(frame, hdr=TSO)
    net.nic.send(udp4_frame(b"finish me"), hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6))
    net.dev.process_tx()
    segs, udp = net.plain[:-1], net.plain[-1]
    assert len(segs) == 4 and all(tcp4_checksums_ok(s) for s in segs)
    assert b"".join(split_tcp4(s)[2] for s in segs) == payload
    assert udp == udp4_frame(b"finish me", partial=False)


def test_tx_data_valid_from_a_guest_means_nothing(make_net):
    net = make_net()
    frame = udp4_frame(b"x", partial=False)
    net.nic.send(frame, hdr=NetHdr(VIRTIO_NET_HDR_F_DATA_VALID))
    net.dev.process_tx()
    assert net.plain == [frame] and net.offloaded == []


def test_tx_offloads_that_were_not_negotiated_are_dropped(make_net):
    net = make_net(CSUM_ONLY & ~mask(VIRTIO_NET_F_CSUM))
    net.nic.send(udp4_frame(b"x"), hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6))
    net.nic.send(tcp4_frame(bytes(3000)), hdr=TSO)
    net.dev.process_tx()
    assert net.dev.counters.drops == {"tx_offload_not_negotiated": 2}
    net2 = make_net(ALL & ~mask(VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO6))
    ecn = NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 0, 1448, 34, 16)
    net2.nic.send(tcp4_frame(bytes(3000)), hdr=ecn)
    net2.nic.send(tcp4_frame(bytes(3000)), hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV6, 0, 1448, 34, 16))
    net2.nic.send(tcp4_frame(bytes(3000)), hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0x80, 0, 1448, 34, 16))
    net2.dev.process_tx()
    assert net2.dev.counters.drops == {"tx_offload_not_negotiated": 3}


def test_hostile_tx_headers_are_counted_drops_and_the_ring_goes_on(make_net):
    net = make_net()
    big = tcp4_frame(bytes(3000))
    hostile = [
        (udp4_frame(b"x"), NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 60, 6), "tx_bad_csum_offsets"),
        (udp4_frame(b"x"), NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 0xFFF0), "tx_bad_csum_offsets"),
        (big, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 0, 34, 16), "tx_gso_size_zero"),
        (big, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 60000, 1448, 34, 16), "tx_gso_hdr_len"),
        (big, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 1448, 20, 16), "tx_gso_headers"),
        (udp4_frame(bytes(3000)), TSO, "tx_gso_headers"),
        (big, NetHdr(0, GSO_TCPV4, 0, 1448, 0, 0), "tx_gso_without_csum"),
        (big, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 1, 34, 16), "tx_gso_too_many_segments"),
    ]
    for frame, hdr, _ in hostile:
        net.nic.send(frame, hdr=hdr)
    good = udp4_frame(b"still fine", partial=False)
    net.nic.send(good)
    assert net.dev.process_tx() == len(hostile) + 1
    expected = {}
    for _, _, reason in hostile:
        expected[reason] = expected.get(reason, 0) + 1
    assert net.dev.counters.drops == expected
    assert [r for _, r in net.drops] == [r for _, _, r in hostile]
    assert net.plain == [good] and net.offloaded == []
    assert net.nic.tx_completed() == len(hostile) + 1, "every buffer went back to the guest"


def test_tx_gso_frame_beyond_64k_is_too_big(make_net):
    net = make_net(ram_mib=8)
    net.nic.send(bytes(70000), hdr=TSO)
    net.dev.process_tx()
    assert net.dev.counters.drops == {"tx_frame_too_big": 1}


# -- RX: the device gives the guest offloaded frames ------------------------------------
def test_rx_partial_checksum_to_a_guest_with_guest_csum(make_net):
    net = make_net()
    net.nic.post_rx(4)
    frame = udp4_frame(b"partial")
    assert net.dev.receive(frame, FrameMeta(True, 34, 6))
    assert net.dev.receive(udp4_frame(b"valid", partial=False), DATA_VALID)
    (h1, f1), (h2, f2) = net.received()
    assert (h1.flags, h1.csum_start, h1.csum_offset, h1.gso_type) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, 34, 6, 0)
    assert f1 == frame
    assert h2.flags == VIRTIO_NET_HDR_F_DATA_VALID and f2 == udp4_frame(b"valid", partial=False)
    c = net.dev.counters
    assert (c.rx_csum_partial, c.rx_data_valid, c.rx_finished) == (1, 1, 0)


def test_rx_gso_frame_spans_mergeable_buffers(make_net):
    net = make_net()
    net.nic.post_rx(40)
    frame = tcp4_frame(os.urandom(60000), options=TIMESTAMPS)
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 66)
    assert net.dev.datapath.can_take(meta)
    assert net.dev.receive(frame, meta)
    (hdr, got), = net.received()
    assert got == frame
    assert hdr == NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16, hdr.num_buffers)
    assert hdr.num_buffers == -(-(12 + len(frame)) // 2048)
    assert net.dev.counters.rx_gso == 1


def test_rx_to_a_guest_without_offloads_gets_finished_frames(make_net):
    net = make_net(NO_GUEST_OFFLOADS)
    net.nic.post_rx(40)
    payload = os.urandom(4000)
    gso = tcp4_frame(payload)
    assert not net.dev.datapath.can_take(FrameMeta(True, 34, 16))
    assert net.dev.receive(gso, FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448))
    assert net.dev.receive(udp4_frame(b"p"), FrameMeta(True, 34, 6))
    assert net.dev.receive(udp4_frame(b"v", partial=False), DATA_VALID)
    got = net.received()
    assert all(h == NetHdr(num_buffers=1) for h, _ in got), "no flags for a guest without GUEST_CSUM"
    frames = [f for _, f in got]
    assert len(frames) == 5 and all(tcp4_checksums_ok(f) for f in frames[:3])
    assert b"".join(split_tcp4(f)[2] for f in frames[:3]) == payload
    assert frames[3] == udp4_frame(b"p", partial=False) and frames[4] == udp4_frame(b"v", partial=False)
    assert net.dev.counters.rx_finished == 2


def test_rx_gso_to_a_guest_with_checksums_but_no_tso_gets_valid_segments(make_net):
    net = make_net(CSUM_ONLY)
    net.nic.post_rx(10)
    assert net.dev.receive(tcp4_frame(bytes(3000)), FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448))
    got = net.received()
    assert len(got) == 3 and all(h.flags == VIRTIO_NET_HDR_F_DATA_VALID and h.gso_type == 0 for h, _ in got)
    assert all(tcp4_checksums_ok(f) for _, f in got)


def test_rx_ecn_gso_needs_guest_ecn(make_net):
    net = make_net(ALL & ~mask(VIRTIO_NET_F_GUEST_ECN))
    net.nic.post_rx(10)
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4 | GSO_ECN, 1448)
    assert not net.dev.datapath.can_take(meta)
    assert net.dev.receive(tcp4_frame(bytes(3000)), meta)
    assert [h.gso_type for h, _ in net.received()] == [0, 0, 0]


def test_rx_gso_waits_in_the_backlog_with_its_header(make_net):
    net = make_net()
    frame = tcp4_frame(os.urandom(20000))
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)
    assert net.dev.receive(frame, meta)            # no buffers yet: held
    assert net.dev.counters.rx_backlogged == 1 and net.received() == []
    net.nic.post_rx(20)
    net.dev._on_rx_kick()
    (hdr, got), = net.received()
    assert got == frame and hdr.gso_type == GSO_TCPV4 and hdr.gso_size == 1448


def test_rx_gso_without_mergeable_buffers_needs_big_buffers(make_net):
    net = make_net(ALL & ~mask(VIRTIO_NET_F_MRG_RXBUF), ram_mib=8)
    frame = tcp4_frame(os.urandom(20000))
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)
    net.nic.post_rx(1, size=2048)
    assert not net.dev.receive(frame, meta)
    assert net.dev.counters.drops == {"frame_too_big": 1}
    net2 = make_net(ALL & ~mask(VIRTIO_NET_F_MRG_RXBUF), ram_mib=8)
    net2.nic.post_rx(1, size=65562)                  # what Linux posts for GUEST_TSO without MRG_RXBUF
    assert net2.dev.receive(frame, meta)
    (hdr, got), = net2.received()
    assert got == frame and hdr.gso_type == GSO_TCPV4


def test_rx_meta_that_cannot_be_honoured_is_a_counted_drop(make_net):
    net = make_net(NO_GUEST_OFFLOADS)
    net.nic.post_rx(4)
    assert not net.dev.receive(tcp4_frame(bytes(3000)), FrameMeta(True, 34, 16, False, GSO_TCPV4, 0))
    assert net.dev.counters.drops == {"rx_gso_size_zero": 1}
