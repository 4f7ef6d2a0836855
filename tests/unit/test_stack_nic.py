"""LoopbackNicPair: delivery, fileno readiness, MTU, impairments, checksum offload."""
import errno
import select

import pytest

from stack.nic import Impairment, LoopbackNicPair, NicOffloads, RxMeta, TxMeta, complete_checksum
from stack.wire import verify


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_frames_cross_and_fileno_tracks_queue():
    a, b = LoopbackNicPair()
    assert a.mac != b.mac
    assert not readable(b.fileno())
    assert a.transmit([b"x" * 60, b"y" * 60]) == 2
    assert readable(b.fileno())
    got = b.receive(max=1)
    assert got == [(b"x" * 60, RxMeta())]
    assert readable(b.fileno()), "one frame still waits"
    assert b.receive() == [(b"y" * 60, RxMeta())]
    assert not readable(b.fileno())
    assert b.receive() == []
    assert a.counters["tx_frames"] == 2 and b.counters["rx_frames"] == 2


def test_oversize_frames_are_dropped_and_counted():
    a, b = LoopbackNicPair(mtu=100)
    assert a.transmit([bytes(115), bytes(114)]) == 1
    assert a.counters["tx_drop_oversize"] == 1
    assert [len(f) for f, _ in b.receive()] == [114]


def test_receive_queue_is_bounded():
    a, b = LoopbackNicPair(rx_queue_len=3)
    a.transmit([bytes(60)] * 5)
    assert len(b.receive()) == 3
    assert b.counters["rx_drop_queue_full"] == 2


def test_closed_nic_raises_ebadf_and_peer_counts_link_down():
    a, b = LoopbackNicPair()
    b.close()
    a.transmit([bytes(60)])
    assert a.counters["tx_drop_link_down"] == 1
    with pytest.raises(OSError) as exc:
        b.receive()
    assert exc.value.errno == errno.EBADF
    b.close()  # twice is fine


def test_impairment_drop_duplicate_reorder():
    pair = LoopbackNicPair()
    pair.a.impairment = Impairment(drop=lambda f: f == b"drop", duplicate=lambda f: f == b"dup")
    pair.a.transmit([b"one", b"drop", b"dup", b"two"])
    assert [f for f, _ in pair.b.receive()] == [b"one", b"dup", b"dup", b"two"]
    pair.a.impairment = Impairment(reorder=lambda f: f == b"first")
    pair.a.transmit([b"first", b"second", b"third"])
    assert [f for f, _ in pair.b.receive()] == [b"second", b"first", b"third"]
    assert pair.a.counters["tx_impaired_reorder"] == 1


def test_checksum_offload_is_completed_and_marked_valid():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM | NicOffloads.RX_CSUM_TRUSTED)
    body = bytearray(b"\x00" * 4 + b"\x12\x34" + b"abcdefgh")
    frame = bytes(body)
    pair.a.transmit([(frame, TxMeta(csum_start=0, csum_offset=4))])
    (got, meta), = pair.b.receive()
    assert meta.csum_valid
    # The seed (a pseudo-header sum in real use) is folded into the result.
    assert verify(got, 0x1234)


def test_checksum_offload_refused_when_not_offered():
    a, b = LoopbackNicPair()
    assert a.transmit([(bytes(60), TxMeta(0, 4))]) == 0
    assert a.counters["tx_drop_csum_not_offered"] == 1


def test_complete_checksum_rejects_offsets_outside_frame():
    with pytest.raises(ValueError):
        complete_checksum(bytes(10), TxMeta(csum_start=8, csum_offset=4))
