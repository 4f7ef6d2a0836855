"""LoopbackNicPair: delivery, fileno readiness, MTU, impairments, checksum offload."""
import errno
import select
import struct
from ipaddress import IPv4Address

import pytest

from nicdev.virtio.offload import FrameMeta, complete_checksum
from stack.drivers import Impairment, LoopbackNicPair, NicOffloads
from stack.wire import Ipv4Repr, fold, internet_checksum, pseudo_header_sum_v4, verify


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_frames_cross_and_fileno_tracks_queue():
    a, b = LoopbackNicPair()
    assert a.mac != b.mac
    assert not readable(b.fileno())
    assert a.transmit([(b"x" * 60, None), (b"y" * 60, None)]) == 2
    assert readable(b.fileno())
    got = b.receive(max=1)
    assert got == [(b"x" * 60, FrameMeta())]
    assert readable(b.fileno()), "one frame still waits"
    assert b.receive() == [(b"y" * 60, FrameMeta())]
    assert not readable(b.fileno())
    assert b.receive() == []
    assert a.counters["tx_frames"] == 2 and b.counters["rx_frames"] == 2


def test_oversize_frames_are_dropped_and_counted():
    a, b = LoopbackNicPair(mtu=100)
    assert a.transmit([(bytes(115), None), (bytes(114), None)]) == 1
    assert a.counters["tx_drop_oversize"] == 1
    assert [len(f) for f, _ in b.receive()] == [114]


def test_receive_queue_is_bounded():
    a, b = LoopbackNicPair(rx_queue_len=3)
    a.transmit([(bytes(60), None)] * 5)
    assert len(b.receive()) == 3
    assert b.counters["rx_drop_queue_full"] == 2


def test_closed_nic_raises_ebadf_and_peer_counts_link_down():
    a, b = LoopbackNicPair()
    b.close()
    a.transmit([(bytes(60), None)])
    assert a.counters["tx_drop_link_down"] == 1
    with pytest.raises(OSError) as exc:
        b.receive()
    assert exc.value.errno == errno.EBADF
    b.close()  # twice is fine


def test_impairment_drop_duplicate_reorder():
    pair = LoopbackNicPair()
    pair.a.impairment = Impairment(loss=lambda f: f == b"drop", duplicate=lambda f: f == b"dup")
    pair.a.transmit([(f, None) for f in (b"one", b"drop", b"dup", b"two")])
    assert [f for f, _ in pair.b.receive()] == [b"one", b"dup", b"dup", b"two"]
    pair.a.impairment = Impairment(reorder=lambda f: f == b"first")
    pair.a.transmit([(f, None) for f in (b"first", b"second", b"third")])
    assert [f for f, _ in pair.b.receive()] == [b"second", b"first", b"third"]
    assert pair.a.counters["tx_impaired_reorder"] == 1


def test_checksum_offload_is_completed_and_marked_valid():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM | NicOffloads.RX_CSUM_TRUSTED)
    body = bytearray(b"\x00" * 4 + b"\x12\x34" + b"abcdefgh")
    frame = bytes(body)
    pair.a.transmit([(frame, FrameMeta(True, 0, 4))])
    (got, meta), = pair.b.receive()
    assert meta.data_valid
    # The seed (a pseudo-header sum in real use) is folded into the result.
    assert verify(got, 0x1234)


def test_checksum_offload_refused_when_not_offered():
    a, b = LoopbackNicPair()
    assert a.transmit([(bytes(60), FrameMeta(True, 0, 4))]) == 0
    assert a.counters["tx_drop_csum_not_offered"] == 1


def zero_sum_frame(proto: int) -> tuple[bytes, FrameMeta]:
    """An IPv4 UDP or TCP frame with a partial checksum whose finished
    checksum computes to 0 (its first payload word is chosen for that)."""
    src, dst = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    field = 6 if proto == 17 else 16
    if proto == 17:
        header = struct.pack(">HHHH", 4000, 5000, 18, 0)
    else:
        header = struct.pack(">HHIIBBHHH", 4000, 5000, 1, 0, 0x50, 0x18, 512, 0, 0)
    l4 = bytearray(header + b"\0\0zero sum")
    pseudo = pseudo_header_sum_v4(src, dst, proto, len(l4))
    l4[len(header):len(header) + 2] = internet_checksum(l4, pseudo).to_bytes(2, "big")
    l4[field:field + 2] = fold(pseudo).to_bytes(2, "big")
    ip = Ipv4Repr(src, dst, proto, len(l4)).emit(bytes(l4))
    return bytes(14) + ip, FrameMeta(True, 34, field)


def test_checksum_offload_sends_a_zero_udp_checksum_as_ffff():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM)
    udp, udp_meta = zero_sum_frame(17)
    tcp, tcp_meta = zero_sum_frame(6)
    pair.a.transmit([(udp, udp_meta), (tcp, tcp_meta)])
    (got_udp, _), (got_tcp, _) = pair.b.receive()
    assert got_udp[40:42] == b"\xff\xff", "RFC 768: a computed 0 is sent as all ones (0 means no checksum)"
    assert got_tcp[50:52] == b"\0\0", "TCP keeps 0"
    assert verify(got_udp[34:], pseudo_header_sum_v4(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 17, 18))


def test_complete_checksum_rejects_offsets_outside_frame():
    with pytest.raises(ValueError):
        complete_checksum(bytes(10), FrameMeta(True, 8, 4))


def test_transmit_takes_frame_and_meta_pairs_and_refuses_a_bare_frame():
    # The one transmit contract: (frame, None) for a finished frame,
    # (frame, FrameMeta(...)) for an offload request; anything else is a bug.
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM)
    body = bytes(b"\x00" * 4 + b"\x12\x34" + b"abcdefgh")
    assert pair.a.transmit([(b"z" * 60, None), (body, FrameMeta(True, 0, 4))]) == 2
    (plain, plain_meta), (done, _) = pair.b.receive()
    assert plain == b"z" * 60 and plain_meta == FrameMeta() and verify(done, 0x1234)
    for bad in (b"y" * 60, (b"y" * 60,), (b"y" * 60, None, None)):
        with pytest.raises(TypeError, match=r"takes \(frame, FrameMeta \| None\) pairs"):
            pair.a.transmit([bad])
    with pytest.raises(TypeError, match=r"a bare frame: pass \(frame, None\)"):
        pair.a.transmit([b"y" * 60])
    assert pair.b.receive() == [] and pair.a.counters["tx_frames"] == 2


def test_a_nic_with_rx_gso_gets_a_larger_receive_window():
    """64 KiB frames in: the default 256 KiB window would be four of them in flight."""
    from stack.runtime import RX_GSO_RCVBUF, Stack
    from stack.tcp.config import TSO_MAX_PAYLOAD, TcpConfig

    plain = TcpConfig()
    for offloads, rcvbuf, tso_max in (
        (NicOffloads.NONE, plain.rcvbuf, plain.tso_max),
        (NicOffloads.RX_GSO, RX_GSO_RCVBUF, plain.tso_max),
        (NicOffloads.TX_CSUM | NicOffloads.TSO, plain.rcvbuf, TSO_MAX_PAYLOAD),
        (NicOffloads.TX_CSUM | NicOffloads.TSO | NicOffloads.RX_GSO, RX_GSO_RCVBUF, TSO_MAX_PAYLOAD),
    ):
        pair = LoopbackNicPair(offloads=offloads)
        try:
            config = Stack(pair.a, "10.0.0.1/24").iface.tcp_config
            assert (config.rcvbuf, config.tso_max) == (rcvbuf, tso_max), offloads
            own = Stack(pair.b, "10.0.0.2/24", tcp_config=TcpConfig(rcvbuf=5000)).iface.tcp_config
            assert own.rcvbuf == 5000, "a caller's own tcp_config decides for itself"
        finally:
            pair.close()
    assert RX_GSO_RCVBUF > plain.rcvbuf
