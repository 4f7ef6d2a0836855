"""Data transfer: segmentation, buffers, delayed ACKs, reassembly, windows, Nagle, probes, keepalive."""
import errno

import pytest

from stack.tcp.config import TcpConfig
from stack.tcp.state import TcpState
from stack.tcp.testing import established_driver, plain_config

S = TcpState


# -- sending ------------------------------------------------------------------------------------


def test_data_is_cut_into_mss_segments_with_psh_on_the_last():
    d = established_driver(peer_mss=1000)
    assert d.conn.send(b"a" * 2500) == 2500
    assert d.out() == [
        "[.] seq=1 ack=1 win=65535 len=1000",
        "[.] seq=1001 ack=1 win=65535 len=1000",
        "[P.] seq=2001 ack=1 win=65535 len=500",
    ]
    assert d.conn.poll_at() == pytest.approx(0.21)  # RTO 200 ms after sending
    d.feed(".", seq=1, ack=2501)
    assert d.out() == [] and d.conn.poll_at() is None and d.conn.all_acked
    assert d.conn.bytes_acked == 2500 and d.conn.bytes_sent == 2500


def test_the_peer_window_limits_what_is_sent():
    d = established_driver(peer_mss=1000, peer_window=2000)
    d.conn.send(b"b" * 3000)
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=1000", "[.] seq=1001 ack=1 win=65535 len=1000"]
    d.feed(".", seq=1, ack=1001, window=2000)
    assert d.out() == ["[P.] seq=2001 ack=1 win=65535 len=1000"]


def test_initial_congestion_window_is_ten_segments():
    d = established_driver(peer_mss=100)
    d.conn.send(b"c" * 2000)
    assert len(d.out()) == 10 and d.conn.info().in_flight == 1000


def test_send_buffer_bounds_send():
    d = established_driver(plain_config(sndbuf=3000))
    c = d.conn
    assert c.send(b"x" * 5000) == 3000
    assert c.send(b"more") == 0 and not c.writable
    assert d.out() == [
        "[.] seq=1 ack=1 win=65535 len=1460",
        "[.] seq=1461 ack=1 win=65535 len=1460",
        "[P.] seq=2921 ack=1 win=65535 len=80",
    ]
    d.feed(".", seq=1, ack=1461)
    assert c.send_queue == 1540 and c.writable
    assert c.send(b"y" * 2000) == 1460


def test_writable_needs_half_the_queue_free():
    d = established_driver(plain_config(sndbuf=3000), peer_window=0)
    c = d.conn
    c.send(b"x" * 2000)
    assert c.writable  # 1000 free >= 2000 // 2
    c.send(b"x")
    assert not c.writable  # 999 free < 2001 // 2


# -- receiving and ACKing ------------------------------------------------------------------------


def test_delayed_ack_for_a_single_segment():
    d = established_driver()
    d.feed("P.", seq=1, ack=1, data=b"x" * 100)
    assert d.out() == [] and d.conn.poll_at() == pytest.approx(0.05)  # 40 ms (MUST-40: < 0.5 s)
    assert d.advance(0.1) == [(0.05, "[.] seq=1 ack=101 win=65435 len=0")]
    assert d.conn.recv(1000) == b"x" * 100


def test_every_second_full_segment_is_acked_at_once():
    d = established_driver()
    d.feed(".", seq=1, ack=1, data=b"x" * 1460)
    assert d.out() == []
    d.feed(".", seq=1461, ack=1, data=b"x" * 1460)
    assert d.out() == ["[.] seq=1 ack=2921 win=62615 len=0"]
    assert d.conn.poll_at() is None  # the delayed-ACK timer went with it


def test_acks_are_aggregated_over_everything_received():  # MUST-58, MUST-59
    d = established_driver()
    for i in range(5):  # five segments arrive before the stack polls
        d.feed(".", seq=1 + 1000 * i, ack=1, data=b"x" * 1000)
    assert d.out() == ["[.] seq=1 ack=5001 win=60535 len=0"]  # one ACK covering all


def test_ack_rides_on_data_we_send():
    d = established_driver(plain_config(nodelay=True))
    d.feed("P.", seq=1, ack=1, data=b"ping")
    d.conn.recv(10)
    d.conn.send(b"pong")
    assert d.out() == ["[P.] seq=1 ack=5 win=65531 len=4"]
    assert d.conn.poll_at() == pytest.approx(0.21)  # the RTO, no delayed ACK left


def test_out_of_order_data_is_acked_at_once_with_sack():
    d = established_driver(plain_config(sack=True))
    assert d.conn.sack_ok
    d.feed(".", seq=1001, ack=1, data=b"B" * 1000)
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0 sack=1001-2001"]
    d.feed(".", seq=3001, ack=1, data=b"D" * 1000)
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0 sack=3001-4001,1001-2001"]
    d.feed(".", seq=1, ack=1, data=b"A" * 1000)  # fills the first hole: ACK now
    assert d.out() == ["[.] seq=1 ack=2001 win=63535 len=0 sack=3001-4001"]
    d.feed(".", seq=2001, ack=1, data=b"C" * 1000)
    assert d.out() == ["[.] seq=1 ack=4001 win=61535 len=0"]
    assert d.conn.recv(10000) == b"A" * 1000 + b"B" * 1000 + b"C" * 1000 + b"D" * 1000


def test_out_of_order_without_sack_is_a_duplicate_ack():
    d = established_driver()
    d.feed(".", seq=1001, ack=1, data=b"B" * 1000)
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0"]
    d.feed(".", seq=1001, ack=1, data=b"B" * 1000)  # a duplicate of held data
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0"]


def test_fin_after_a_hole_waits_for_the_hole():
    d = established_driver()
    d.feed("F.", seq=1001, ack=1)
    assert d.conn.state is S.ESTABLISHED and d.out() == ["[.] seq=1 ack=1 win=65535 len=0"]
    d.feed(".", seq=1, ack=1, data=b"z" * 1000)
    assert d.conn.state is S.CLOSE_WAIT
    assert d.out() == ["[.] seq=1 ack=1002 win=64534 len=0"]


def test_out_of_order_queue_is_bounded():
    d = established_driver(plain_config(max_ooo_bytes=1500))
    d.feed(".", seq=1001, ack=1, data=b"a" * 1000)
    d.feed(".", seq=3001, ack=1, data=b"b" * 1000)  # would exceed the bound: dropped
    assert d.conn.stats["drop_ooo_full"] == 1 and d.conn.rx.ooo.total == 1000


# -- the receive window ---------------------------------------------------------------------------


def test_window_update_is_sent_when_the_window_reopens():
    d = established_driver()
    d.feed(".", seq=1, ack=1, data=b"w" * 40000)
    assert d.out() == []
    assert len(d.conn.recv(40000)) == 40000
    # The window was 25535; reading made it 65535 (more than doubled): tell the peer now.
    assert d.out() == ["[.] seq=1 ack=40001 win=65535 len=0"]


def test_small_reads_do_not_send_window_updates():
    d = established_driver()
    d.feed(".", seq=1, ack=1, data=b"w" * 10000)
    d.conn.recv(10000)
    assert d.out() == []  # 55535 -> 65535 is not worth an extra segment
    assert d.advance(0.1) == [(0.05, "[.] seq=1 ack=10001 win=65535 len=0")]


def test_receiver_avoids_the_silly_window():
    d = established_driver(plain_config(rcvbuf=10000))
    d.feed(".", seq=1, ack=1, data=b"f" * 10000)
    assert d.advance(0.1) == [(0.05, "[.] seq=1 ack=10001 win=0 len=0")]
    d.conn.recv(1000)
    assert d.out() == []  # 1000 bytes free is less than min(rcvbuf/2, MSS)
    d.conn.recv(460)
    assert d.out() == ["[.] seq=1 ack=10001 win=1460 len=0"]


def test_window_never_shrinks_from_the_right():
    d = established_driver(plain_config(rcvbuf=10000))
    d.feed(".", seq=1, ack=1, data=b"a" * 3000)
    d.conn.recv(3000)  # 3000 free again, but below nothing: edge moves by 3000 >= 1460
    d.feed(".", seq=3001, ack=1, data=b"b" * 100)
    out = d.advance(0.1)
    assert out == [(0.05, "[.] seq=1 ack=3101 win=9900 len=0")]
    assert d.conn.rcv.adv - d.conn.irs == 13001


def test_window_scaling_both_ways():
    d = established_driver(TcpConfig())
    c = d.conn
    d.feed(".", seq=1, ack=1, window=100)
    assert c.snd.wnd == 100 << 7
    d.feed("P.", seq=1, ack=1, data=b"12345")
    out = d.advance(0.1)
    assert out[0][1].startswith("[.] seq=1 ack=6 win=32767 ")  # 262139 >> 3, rounded down
    # The edge advertised before (ISN + 1 + 262144) still accepts data (RFC 7323 2.4).
    d.feed(".", seq=262145 - 10, ack=1, data=b"e" * 10)
    assert c.rx.ooo.total == 10


# -- Nagle and the sender's silly window ----------------------------------------------------------


def test_nagle_holds_a_second_small_segment():
    d = established_driver()
    d.conn.send(b"a")
    assert d.out() == ["[P.] seq=1 ack=1 win=65535 len=1"]
    d.conn.send(b"b")
    d.conn.send(b"c")
    assert d.out() == []
    d.feed(".", seq=1, ack=2)
    assert d.out() == ["[P.] seq=2 ack=1 win=65535 len=2"]


def test_nodelay_sends_at_once():
    d = established_driver(plain_config(nodelay=True))
    d.conn.send(b"a")
    assert d.out() == ["[P.] seq=1 ack=1 win=65535 len=1"]
    d.conn.send(b"b")
    assert d.out() == ["[P.] seq=2 ack=1 win=65535 len=1"]  # not held behind the first


def test_setting_nodelay_releases_held_data():
    d = established_driver()
    d.conn.send(b"a")
    d.out()
    d.conn.send(b"b")
    assert d.out() == []
    d.conn.configure(nodelay=True)
    assert d.out() == ["[P.] seq=2 ack=1 win=65535 len=1"]


def test_minshall_nagle_lets_a_tail_follow_full_segments():
    d = established_driver()
    d.conn.send(b"x" * 1470)
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=1460", "[P.] seq=1461 ack=1 win=65535 len=10"]
    d.conn.send(b"yy")
    assert d.out() == []  # the 10-byte segment is unacknowledged
    d.feed(".", seq=1, ack=1461)
    assert d.out() == []
    d.feed(".", seq=1, ack=1471)
    assert d.out() == ["[P.] seq=1471 ack=1 win=65535 len=2"]


def test_sender_silly_window_avoidance_and_override():
    d = established_driver()
    d.conn.send(b"s" * 1000)
    d.out()
    d.feed(".", seq=1, ack=1001, window=500)
    d.conn.send(b"t" * 2000)
    assert d.out() == []  # 500 < MSS and < half the largest window seen
    assert d.conn.poll_at() == pytest.approx(d.now + 0.2)  # the override timer
    assert d.advance(0.3)[0] == (pytest.approx(0.21), "[.] seq=1001 ack=1 win=65535 len=500")


# -- zero window and persist ----------------------------------------------------------------------


def _zero_window():
    d = established_driver()
    d.conn.send(b"p" * 100)
    d.out()
    d.feed(".", seq=1, ack=101, window=0)
    d.conn.send(b"q" * 50)
    assert d.out() == []
    return d


def test_zero_window_probe_carries_one_new_octet():
    d = _zero_window()
    assert d.conn.poll_at() == pytest.approx(0.21)
    assert d.advance(0.2) == [(0.21, "[.] seq=101 ack=1 win=65535 len=1")]
    assert d.conn.snd.nxt - d.conn.iss == 101  # the probe byte is not counted as sent


def _next_output(d):
    return d.advance(d.conn.poll_at() - d.now)


def test_probes_back_off_and_answered_probes_never_time_out():
    d = _zero_window()
    times = []
    for _ in range(30):  # MUST-37: the window may stay closed for ever
        sent = _next_output(d)
        assert [s for _, s in sent] == ["[.] seq=101 ack=1 win=65535 len=1"]
        times.append(sent[0][0])
        d.feed(".", seq=1, ack=101, window=0)
    assert times[:4] == pytest.approx([0.21, 0.61, 1.41, 3.01])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) == pytest.approx(120.0)  # the backoff stops at max_rto
    assert d.conn.state is S.ESTABLISHED


def test_window_reopens_and_data_flows():
    d = _zero_window()
    d.advance(0.3)
    d.feed(".", seq=1, ack=101, window=65535)
    assert d.out() == ["[P.] seq=101 ack=1 win=65535 len=50"]


def test_probe_byte_taken_by_the_peer():
    d = _zero_window()
    d.advance(0.3)
    d.feed(".", seq=1, ack=102, window=65535)  # the probe byte fitted after all
    assert d.conn.snd.una - d.conn.iss == 102
    assert d.out() == ["[P.] seq=102 ack=1 win=65535 len=49"]


def test_unanswered_probes_end_the_connection():
    d = established_driver(plain_config(max_retries=3))
    d.conn.send(b"p" * 100)
    d.out()
    d.feed(".", seq=1, ack=101, window=0)
    d.conn.send(b"q")
    sent = d.advance(100)
    assert [t for t, _ in sent] == pytest.approx([0.21, 0.61, 1.41])
    assert d.conn.state is S.CLOSED and d.conn.error == errno.ETIMEDOUT


def test_peer_shrinking_the_window_to_zero_with_data_out():
    d = established_driver(plain_config(max_retries=2))
    d.conn.send(b"r" * 3000)
    d.out()
    d.feed(".", seq=1, ack=1, window=0)  # window shrank: 3000 bytes already out
    sent = d.advance(10)
    # Retransmissions become probes of the first segment; ACKs keep it alive.
    assert all(s.startswith("[.] seq=1 ack=1 ") for _, s in sent)
    assert d.conn.state is S.ESTABLISHED
    d.feed(".", seq=1, ack=1, window=65535)
    assert d.conn.state is S.ESTABLISHED


# -- urgent data (MUST-30..33, 62) ----------------------------------------------------------------


def test_urgent_pointer_points_past_the_urgent_data():
    d = established_driver(plain_config(nodelay=True))
    d.conn.send(b"!!", urgent=True)
    assert d.out() == ["[P.U] seq=1 ack=1 win=65535 len=2 urg=2"]
    d.conn.send(b"normal")
    assert d.out() == ["[P.] seq=3 ack=1 win=65535 len=6"]


def test_received_urgent_data_is_reported_in_line():
    d = established_driver()
    changes = []
    d.conn.on_change = lambda: changes.append(1)
    d.feed("P.U", seq=1, ack=1, data=b"abcdef", urgent=3)
    assert d.conn.urgent_pending == 3 and changes
    assert d.conn.recv(2) == b"ab" and d.conn.urgent_pending == 1
    assert d.conn.recv(10) == b"cdef" and d.conn.urgent_pending == 0


# -- timestamps -----------------------------------------------------------------------------------


def test_rtt_is_measured_from_the_timestamp_echo():
    d = established_driver(TcpConfig())
    d.now = 1.0
    d.conn.send(b"m" * 10)
    assert d.out()[0].endswith("len=10 ts=1000,1000")
    d.now = 1.08
    d.feed(".", seq=1, ack=11, ts=(1100, 1000))
    assert d.conn.rtt.srtt == pytest.approx(0.875 * 0.01 + 0.125 * 0.08)


def test_rtt_without_timestamps_times_one_segment():
    d = established_driver()
    d.now = 1.0
    d.conn.send(b"m" * 10)
    d.out()
    d.now = 1.1
    d.feed(".", seq=1, ack=11)
    assert d.conn.rtt.srtt == pytest.approx(0.875 * 0.01 + 0.125 * 0.1)


# -- keepalive ---------------------------------------------------------------------------------


def test_keepalive_is_off_by_default():
    d = established_driver()
    assert d.advance(100000) == []


def test_keepalive_probes_and_answers():
    d = established_driver()
    d.conn.configure(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0, keepalive_count=3)
    assert d.conn.poll_at() == 0.0
    d.out()
    assert d.conn.poll_at() == pytest.approx(10.01)
    assert d.advance(10.5) == [(10.01, "[.] seq=0 ack=1 win=65535 len=0")]
    d.feed(".", seq=1, ack=1)  # the answer
    assert d.advance(9.0) == []
    sent = d.advance(100)
    assert [t for t, _ in sent] == pytest.approx([20.51, 22.51, 24.51])
    assert d.conn.state is S.CLOSED and d.conn.error == errno.ETIMEDOUT


def test_keepalive_waits_while_data_is_outstanding():
    d = established_driver(plain_config(keepalive=True, keepalive_idle=1.0, max_retries=30))
    d.conn.send(b"k")
    d.out()
    sent = d.advance(1.5)
    assert all("len=1" in s for _, s in sent)  # only retransmissions, no keepalive


# -- application side ---------------------------------------------------------------------------


def test_recv_in_pieces_and_eof():
    d = established_driver()
    d.feed("FP.", seq=1, ack=1, data=b"hello world")
    c = d.conn
    assert c.recv(5) == b"hello" and not c.eof
    assert c.recv(0) == b""
    assert c.recv(100) == b" world" and c.eof and c.recv(10) == b""


def test_shutdown_read_drops_data():
    d = established_driver()
    d.feed("P.", seq=1, ack=1, data=b"before")
    d.conn.shutdown_read()
    assert d.conn.recv_queue == 0 and d.conn.eof
    d.feed("P.", seq=7, ack=1, data=b"after")
    assert d.conn.recv(10) == b"" and d.conn.rcv.nxt - d.conn.irs == 12  # acknowledged anyway


def test_info_snapshot():
    d = established_driver(TcpConfig())
    d.conn.send(b"i" * 3000)
    d.out()
    info = d.conn.info()
    assert info.state is S.ESTABLISHED and info.send_queue == 3000 and info.in_flight == 3000
    assert info.cwnd == 10 * 1448 and info.ssthresh is None and info.congestion == "cubic"
    assert info.srtt == pytest.approx(0.01) and info.rto == 0.2
    assert info.options == ("ts", "sack", "wscale:7,3") and info.segs_out == 5  # with SYN and ACK


def test_a_request_read_and_answered_at_once_costs_one_segment():
    # After a passive open the SYN-ACK could not carry the scaled window, so the
    # window could grow before anything is read: reading a small request is not
    # what opened it, and the answer carries both the ACK and the new window.
    from ipaddress import IPv4Address

    from stack.tcp.glue import ANY, TcpLayer
    from stack.tcp.seq import IsnGenerator
    from stack.testing.tcp_link import LayerPair

    a_ip, b_ip = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    w = LayerPair(TcpLayer(TcpConfig(), isn=IsnGenerator(bytes(32))), TcpLayer(TcpConfig(), isn=IsnGenerator(bytes(32))))
    lst = w.b.listen(ANY, w.b.bind(ANY, 7), backlog=4)
    client = w.a.connect(a_ip, (b_ip, 7), w.now)
    w.exchange()
    server = w.b.accept(lst)
    client.send(b"q" * 16)
    for o in w.a.poll(w.now):
        w.b.receive(o.src, o.dst, o.encode(), w.now)
    assert server.recv(100) == b"q" * 16
    assert w.b.poll(w.now) == []  # no ACK, no window update of its own
    server.send(b"r" * 16)
    out = w.b.poll(w.now)
    assert len(out) == 1 and len(out[0].payload) == 16 and out[0].header.ack == (client.snd.nxt & 0xFFFFFFFF)
    assert out[0].header.window << client.snd.wscale > 65535  # the scaled window travels with the answer


def test_a_read_that_opens_a_closed_window_is_announced_at_once():
    d = established_driver(plain_config(rcvbuf=4000))
    d.feed("P.", seq=1, ack=1, data=b"z" * 4000)
    d.out()
    assert d.conn.recv_queue == 4000  # the buffer is full: the window is closed
    assert d.conn.recv(4000) == b"z" * 4000
    out = d.out()
    assert len(out) == 1 and "len=0" in out[0] and "win=4000" in out[0]
