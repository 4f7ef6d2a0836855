"""TSO on the TCP path: the engine builds multi-MSS segments (TcpConfig.tso_max),
the interface hands them to the NIC with FrameMeta(gso_type=GSO_TCPV4, gso_size=MSS),
the loopback NIC cuts them, and loss inside one is recovered by SACK."""
import hashlib
import threading
import time
from ipaddress import IPv4Address

import pytest

from nicdev.virtio.offload import GSO_TCPV4, FrameMeta
from stack import Impairment, IpAddress, LoopbackNicPair, NicOffloads, SocketType, Stack
from stack.iface import encode_offloaded
from stack.tcp import TcpConfig
from stack.tcp.config import TSO_MAX_PAYLOAD
from stack.tcp.glue import OutSegment
from stack.tcp.testing import established_driver, plain_config
from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr, MacAddress
from stack.wire.tcp import TcpFlags, TcpRepr

WAIT = 20.0


def seg(seq, length=1000, flags="."):
    return f"[{flags}] seq={seq} ack=1 win=65535 len={length}"


# -- the engine ---------------------------------------------------------------------------------


def test_three_mss_go_out_as_one_segment_with_tso():
    d = established_driver(plain_config(tso_max=65000), peer_mss=1000)
    before = d.conn.segs_out
    d.conn.send(b"a" * 3000)
    assert d.out() == [seg(1, 3000, "P.")]
    assert d.conn.segs_out == before + 1 and d.conn.bytes_sent == 3000
    d.feed(".", seq=1, ack=3001)
    assert d.conn.all_acked


def test_without_tso_the_same_data_is_three_segments():
    d = established_driver(plain_config(), peer_mss=1000)
    d.conn.send(b"a" * 3000)
    assert d.out() == [seg(1), seg(1001), seg(2001, flags="P.")]


def test_tso_segments_are_whole_mss_and_the_tail_follows_by_the_usual_rules():
    d = established_driver(plain_config(tso_max=65000), peer_mss=1000)
    d.conn.send(b"a" * 3500)
    assert d.out() == [seg(1, 3000), seg(3001, 500, "P.")]  # Minshall: no earlier partial segment is out
    d.conn.send(b"b" * 300)
    assert d.out() == []  # Nagle: a partial segment is unacknowledged
    d.feed(".", seq=1, ack=3501)
    assert d.out() == [seg(3501, 300, "P.")]


def test_tso_size_is_bounded_by_config_window_and_cwnd():
    d = established_driver(plain_config(tso_max=2500), peer_mss=1000)
    d.conn.send(b"a" * 5000)
    assert d.out() == [seg(1, 2000), seg(2001, 2000), seg(4001, 1000, "P.")]  # tso_max floored to whole MSS

    d = established_driver(plain_config(tso_max=65000), peer_mss=1000, peer_window=4500)
    d.conn.send(b"a" * 8000)
    assert d.out() == [seg(1, 4000)]  # 500 bytes of window left: below half of it, SWS holds them

    d = established_driver(plain_config(tso_max=65000), peer_mss=1000)
    d.conn.send(b"a" * 20000)
    assert d.out() == [seg(1, 10000)]  # the initial cwnd of 10 segments
    assert d.conn.info().in_flight == 10000


def test_tso_max_is_validated():
    assert TcpConfig(tso_max=TSO_MAX_PAYLOAD).tso_max == TSO_MAX_PAYLOAD
    for bad in (-1, TSO_MAX_PAYLOAD + 1):
        with pytest.raises(ValueError, match="tso_max"):
            TcpConfig(tso_max=bad)


def test_loss_of_the_middle_mss_is_recovered_by_sack():
    d = established_driver(plain_config(tso_max=65000, sack=True), peer_mss=1000)
    c = d.conn
    c.send(b"m" * 6000)
    assert d.out() == [seg(1, 6000, "P.")]
    d.now = 0.02
    # The NIC cut it into six; the second piece (1001..2001) was lost.
    d.feed(".", seq=1, ack=1001)
    d.feed(".", seq=1, ack=1001, sack=[(2001, 3001)])
    d.feed(".", seq=1, ack=1001, sack=[(2001, 4001)])
    assert c.recovery.phase is None  # 2000 bytes above the hole: not lost yet
    d.feed(".", seq=1, ack=1001, sack=[(2001, 5001)])
    assert c.recovery.phase == "fast"
    assert d.out() == [seg(1001)]  # only the lost MSS, not the whole TSO segment
    assert c.stats["retransmits"] == 1 and c.scoreboard.lost.total == 1000
    d.feed(".", seq=1, ack=5001)
    d.feed(".", seq=1, ack=6001)
    assert c.all_acked and c.recovery.phase is None and c.scoreboard.sacked.total == 0
    assert c.stats["retransmits"] == 1 and c.stats["timeouts"] == 0


def test_rto_resends_one_mss_of_a_lost_tso_segment():
    d = established_driver(plain_config(tso_max=65000), peer_mss=1000)
    d.conn.send(b"r" * 3000)
    assert d.out() == [seg(1, 3000, "P.")]
    sent = d.advance(0.25)
    assert sent == [(0.21, seg(1))]


# -- OutSegment: the NIC's view ---------------------------------------------------------------


def _out(payload=b"x" * 2500, flags=TcpFlags.ACK | TcpFlags.PSH, gso=1000, urgent=0):
    r = TcpRepr(1000, 2000, 0xFFFFFC00, 77, flags, 512, urgent=urgent)
    return OutSegment(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), r, payload, 64, None, gso)


def test_encode_offloaded_asks_for_checksum_and_segmentation():
    data, meta = encode_offloaded(_out(), 34)
    assert meta == FrameMeta(True, 34, 16, False, GSO_TCPV4, 1000)
    assert len(data) == 20 + 2500
    data, meta = encode_offloaded(_out(payload=b"y" * 10, gso=0), 34)
    assert meta == FrameMeta(True, 34, 16) and meta.gso_type == 0


def test_split_is_software_segmentation():
    pieces = _out(flags=TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN).split()
    assert [len(p.payload) for p in pieces] == [1000, 1000, 500]
    assert [p.header.seq for p in pieces] == [0xFFFFFC00, (0xFFFFFC00 + 1000) & 0xFFFFFFFF, 2000 - 1024]  # wraps
    assert [int(p.header.flags) for p in pieces] == [int(TcpFlags.ACK)] * 2 + [int(TcpFlags.ACK | TcpFlags.PSH
                                                                                   | TcpFlags.FIN)]
    assert all(p.gso_size == 0 for p in pieces) and b"".join(p.payload for p in pieces) == b"x" * 2500
    assert _out().header.seq == 0xFFFFFC00  # the original header is untouched


def test_split_moves_the_urgent_pointer():
    pieces = _out(flags=TcpFlags.ACK | TcpFlags.URG, urgent=1500).split()
    assert [(bool(p.header.flags & TcpFlags.URG), p.header.urgent) for p in pieces] == [
        (True, 1500), (True, 500), (False, 0)]


def test_a_small_segment_splits_into_itself():
    o = _out(payload=b"z" * 800)
    assert o.split() == [o._replace(gso_size=0)]


# -- the loopback NIC ------------------------------------------------------------------------


def _gso_frame(payload_len=3000, mss=1000):
    o = _out(payload=bytes(range(256)) * (payload_len // 256) + b"q" * (payload_len % 256), gso=mss)
    segment, meta = encode_offloaded(o, 34)
    ip = Ipv4Repr(o.src, o.dst, IpProtocol.TCP, len(segment), dont_frag=True)
    eth = EthernetRepr(MacAddress("02:00:00:00:00:02"), MacAddress("02:00:00:00:00:01"), EtherType.IPV4)
    return eth.emit(ip.emit(segment)), meta


def test_loopback_nic_segments_tso_frames():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM | NicOffloads.TSO | NicOffloads.RX_CSUM_TRUSTED)
    try:
        frame, meta = _gso_frame()
        assert pair.a.transmit([(frame, meta)]) == 1
        got = pair.b.receive()
        assert len(got) == 3 and all(m.data_valid for _, m in got)
        assert all(len(f) <= 14 + 1500 for f, _ in got)
        assert pair.a.counters["tx_gso"] == 1 and pair.a.counters["tx_frames"] == 3
    finally:
        pair.close()


def test_loopback_nic_without_tso_drops_tso_frames_and_counts():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM)
    try:
        frame, meta = _gso_frame()
        assert pair.a.transmit([(frame, meta)]) == 0
        assert pair.a.counters["tx_drop_tso_not_offered"] == 1 and pair.b.receive() == []
    finally:
        pair.close()


def test_loopback_nic_drops_bad_gso_metadata():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM | NicOffloads.TSO)
    try:
        frame, _ = _gso_frame()
        assert pair.a.transmit([(frame, FrameMeta(gso_type=GSO_TCPV4, gso_size=1000))]) == 0  # no checksum request
        assert pair.a.transmit([(frame, FrameMeta(True, 34, 16, False, GSO_TCPV4, 0))]) == 0  # gso_size 0
        assert pair.a.transmit([(frame[:40], FrameMeta(True, 34, 16, False, GSO_TCPV4, 1000))]) == 0  # truncated headers
        assert pair.a.counters["tx_drop_bad_gso"] == 3 and pair.b.receive() == []
        frame, meta = _gso_frame(mss=1490)  # pieces larger than the MTU
        assert pair.a.transmit([(frame, meta)]) == 0 and pair.a.counters["tx_drop_oversize"] == 1
    finally:
        pair.close()


# -- two stacks ------------------------------------------------------------------------------

TSO_NIC = NicOffloads.TX_CSUM | NicOffloads.TSO | NicOffloads.RX_CSUM_TRUSTED


def _transfer(size, config, impair=None):
    pair = LoopbackNicPair(offloads=TSO_NIC, rx_queue_len=4096)
    if impair is not None:
        pair.a.impairment = impair
    a = Stack(pair.a, "10.0.0.1/24", tcp_config=config).start()
    b = Stack(pair.b, "10.0.0.2/24", tcp_config=config).start()
    try:
        lst = b.socket(SocketType.STREAM)
        lst.bind(IpAddress.any(9))
        lst.listen(1)
        lst.set_timeout(WAIT)
        data = bytes(range(251)) * (size // 251)
        got = bytearray()
        errors = []

        def serve():
            try:
                s, _ = lst.accept()
                s.set_timeout(WAIT)
                while True:
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    got.extend(chunk)
                s.close()
            except Exception as exc:  # reported below, with the test's own failure message
                errors.append(exc)

        t = threading.Thread(target=serve)
        t.start()
        c = a.socket(SocketType.STREAM)
        c.set_timeout(WAIT)
        c.connect(("10.0.0.2", 9))
        view = memoryview(data)
        deadline = time.monotonic() + WAIT
        while view:
            n = c.send(view[: 1 << 16])
            view = view[n:]
            assert time.monotonic() < deadline, "sending took too long"
        c.close()
        t.join(WAIT)
        assert not t.is_alive(), "the receiver did not see the end of the stream in time"
        assert not errors, errors
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        return pair, a
    finally:
        a.stop()
        b.stop()
        pair.close()


def test_end_to_end_transfer_with_tso():
    pair, a = _transfer(3_000_000, TcpConfig(tso_max=TSO_MAX_PAYLOAD))
    assert pair.a.counters["tx_gso"] > 0
    assert a.iface.counters.get("tcp", "tx_tso") == pair.a.counters["tx_gso"]
    assert pair.a.counters["tx_drop_oversize"] == 0 and pair.a.counters["tx_drop_bad_gso"] == 0
    assert a.iface.counters.get("ipv4", "tx_fragments") == 0


def test_end_to_end_transfer_with_tso_and_loss():
    count = [0]

    def drop(frame):  # every 97th frame from a, pieces of TSO segments included
        count[0] += 1
        return count[0] % 97 == 0

    pair, a = _transfer(1_000_000, TcpConfig(tso_max=TSO_MAX_PAYLOAD), Impairment(loss=drop))
    assert pair.a.counters["tx_gso"] > 0 and pair.a.counters["tx_impaired_drop"] > 0
