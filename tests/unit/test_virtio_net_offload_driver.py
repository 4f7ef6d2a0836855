"""The stack's virtio-net driver with segmentation offloads, against our
switch: TSO frames out whole (HOST_TSO4) or segmented in software, coalesced
frames in (GUEST_TSO4), segments for a card that did not negotiate it."""
from __future__ import annotations

import os
import threading
import time

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.virtio.features import (
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MRG_RXBUF, has, mask,
)
from nicdev.virtio.offload import DATA_VALID, GSO_TCPV4, GSO_TCPV6, FrameMeta
from stack import NicOffloads
from stack.drivers import VirtioNetNic
from stack.drivers.virtio_driver import DEFAULT_FEATURES

from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.offload_frames import ACK, CWR, FIN, PSH, TIMESTAMPS, split_tcp4, tcp4_checksums_ok, tcp4_frame

pytestmark = pytest.mark.usefixtures("datapath")

WAIT = 5.0


def tso(mss=1448, start=34):
    return FrameMeta(True, start, 16, False, GSO_TCPV4, mss)


@pytest.fixture
def bg():
    switch = BackgroundSwitch()
    yield switch
    switch.close()


@pytest.fixture
def cards(bg, tmp_path):
    """cards(features_a, features_b, **kw) -> two NICs on two ports of one switch."""
    made = []

    def build(features_a=DEFAULT_FEATURES, features_b=DEFAULT_FEATURES, **kw):
        ports = [bg.add_port(VhostUserPort(n, str(tmp_path / f"{n}.sock"))) for n in ("a", "b")]
        pair = [VirtioNetNic(p.socket_path, features=f, reconnect_interval=0.05, **kw)
                for p, f in zip(ports, (features_a, features_b))]
        made.extend(pair)
        return pair
    yield build
    for nic in made:
        nic.close()


def collect(nic, count, timeout=WAIT):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += nic.receive(64)
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {count} frames; counters {dict(nic.counters)}")
    return got


def test_tso_both_ways_is_negotiated_with_our_switch(cards):
    a, b = cards()
    assert NicOffloads.TSO in a.offloads
    assert has(a.features, VIRTIO_NET_F_HOST_TSO4) and has(a.features, VIRTIO_NET_F_GUEST_TSO4)


def test_rx_gso_is_offered_to_the_stack_only_with_guest_tso(cards):
    a, b = cards(features_b=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_GUEST_TSO4))
    assert NicOffloads.RX_GSO in a.offloads
    assert NicOffloads.RX_GSO not in b.offloads and NicOffloads.TSO in b.offloads


def test_a_gso_frame_arrives_whole_at_a_card_with_guest_tso(cards, bg):
    a, b = cards()
    payload = os.urandom(40000)
    frame = tcp4_frame(payload, options=TIMESTAMPS)
    assert a.transmit([(frame, tso(1436))]) == 1
    (got, meta), = collect(b, 1)
    assert got == tcp4_frame(payload, options=TIMESTAMPS, partial=False), "the checksum finished on receipt"
    assert meta == FrameMeta(data_valid=True, gso_type=GSO_TCPV4, gso_size=1436)
    assert a.counters["tx_gso"] == 1 and b.counters["rx_gso"] == 1
    assert bg.call(lambda: bg.switch.ports["a"].device.counters.tx_gso) == 1


def test_a_gso_frame_is_segmented_for_a_card_without_guest_tso(cards, bg):
    a, b = cards(features_b=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_GUEST_TSO4))
    payload = os.urandom(6000)
    assert a.transmit([(tcp4_frame(payload, flags=ACK | PSH | FIN), tso())]) == 1
    got = collect(b, 5)
    assert all(meta == DATA_VALID for _, meta in got), "computed by the switch: DATA_VALID"
    frames = [f for f, _ in got]
    assert all(tcp4_checksums_ok(f) and len(f) <= 1514 for f in frames)
    assert b"".join(split_tcp4(f)[2] for f in frames) == payload
    assert [bool(split_tcp4(f)[1][13] & FIN) for f in frames] == [False] * 4 + [True]
    assert bg.call(lambda: bg.switch.counters.segmented) == 1


def test_software_segmentation_without_host_tso(cards):
    a, b = cards(features_a=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_HOST_TSO4))
    assert NicOffloads.TSO not in a.offloads
    payload = os.urandom(3000)
    assert a.transmit([(tcp4_frame(payload), tso())]) == 1
    assert a.counters["tx_sw_gso"] == 1 and a.counters["tx_frames"] == 3
    frames = [f for f, _ in collect(b, 3)]
    assert all(tcp4_checksums_ok(f) for f in frames)
    assert b"".join(split_tcp4(f)[2] for f in frames) == payload


def test_software_segmentation_without_checksum_offload_at_all(cards):
    a, b = cards(features_a=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_CSUM))
    assert a.offloads & (NicOffloads.TSO | NicOffloads.TX_CSUM) == NicOffloads.NONE
    assert a.transmit([(tcp4_frame(bytes(3000)), tso())]) == 1 and a.counters["tx_sw_gso"] == 1
    assert all(tcp4_checksums_ok(f) for f, _ in collect(b, 3))


def test_cwr_frames_are_segmented_here_without_host_ecn(cards):
    a, b = cards()
    assert a.transmit([(tcp4_frame(bytes(3000), flags=ACK | CWR), tso())]) == 1
    assert a.counters["tx_sw_gso"] == 1 and a.counters.get("tx_gso", 0) == 0
    frames = [f for f, _ in collect(b, 3)]
    assert [split_tcp4(f)[1][13] & CWR for f in frames] == [CWR, 0, 0], "CWR on the first segment only"


def test_bad_gso_requests_are_counted_drops(cards):
    a, b = cards()
    f = tcp4_frame(bytes(3000))
    bad = [
        (f, FrameMeta(True, 34, 16, False, GSO_TCPV4, 0)),
        (f, FrameMeta(gso_type=GSO_TCPV4, gso_size=1448)),                         # no checksum request
        (f, FrameMeta(True, 34, 16, False, GSO_TCPV6, 1448)),                      # TCPv6: not ours
        (f, FrameMeta(True, 34, 6, False, GSO_TCPV4, 1448)),
        (f, tso(start=len(f))),
        (tcp4_frame(bytes(65400)) + bytes(1000), tso()),      # over 64 KiB
    ]
    good = tcp4_frame(b"fine", partial=False)
    assert a.transmit(bad + [(good, None)]) == 1
    assert a.drops == {"tx_drop_bad_gso": len(bad)}
    assert [g for g, _ in collect(b, 1)] == [good]


def test_software_segmentation_of_a_lying_frame_is_a_counted_drop(cards):
    a, b = cards(features_a=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_HOST_TSO4))
    frame = bytearray(tcp4_frame(bytes(3000)))
    frame[23] = 17                                   # the IP header says UDP
    assert a.transmit([(bytes(frame), tso())]) == 0
    assert a.drops == {"tx_drop_bad_gso": 1}


def test_guest_tso_is_only_asked_for_with_mergeable_buffers(cards):
    a, _ = cards(features_a=DEFAULT_FEATURES & ~mask(VIRTIO_NET_F_MRG_RXBUF))
    assert not has(a.features, VIRTIO_NET_F_GUEST_TSO4) and has(a.features, VIRTIO_NET_F_HOST_TSO4)


def test_big_slots_run_out_while_the_device_is_stalled(cards, bg):
    a, b = cards(queue_size=16)                      # 2 big TX slots
    release, blocked = threading.Event(), threading.Event()

    def stall():
        blocked.set()
        release.wait(WAIT)
    stalled = threading.Thread(target=bg.call, args=(stall,), daemon=True)
    stalled.start()
    try:
        blocked.wait(WAIT)
        frames = [(tcp4_frame(bytes([i]) * 5000, seq=i * 5000), tso()) for i in range(4)]
        assert a.transmit(frames) == 2
        assert a.drops == {"tx_drop_ring_full": 2} and a.link_up
    finally:
        release.set()
        stalled.join(WAIT)
    got = collect(b, 2)
    assert [f[100] for f, _ in got] == [0, 1]
    assert a.transmit(frames[2:]) == 2, "big slots come back once the device used them"
    assert [f[100] for f, _ in collect(b, 2)] == [2, 3]
