"""Segment acceptance: RFC 9293 3.10.7.4, RFC 5961 blind-attack defences, RFC 7323 PAWS."""
import errno

from stack.tcp.config import TcpConfig
from stack.tcp.state import TcpState
from stack.tcp.testing import established_driver, plain_config

S = TcpState
ACK_NOW = "[.] seq=1 ack=1 win=65535 len=0"


def test_rst_at_rcv_nxt_resets():
    d = established_driver()
    d.feed("R", seq=1)
    assert d.conn.state is S.CLOSED and d.conn.error == errno.ECONNRESET


def test_rst_in_window_but_not_exact_gets_a_challenge_ack():
    d = established_driver()
    d.feed("R", seq=100)
    assert d.conn.state is S.ESTABLISHED
    assert d.out() == [ACK_NOW]
    assert d.conn.stats["rst_challenged"] == 1


def test_rst_outside_the_window_is_dropped_silently():
    d = established_driver()
    for seq in (0, 65536 + 1, -5000):
        d.feed("R.", seq=seq, ack=1)
    assert d.conn.state is S.ESTABLISHED and d.out() == []
    assert d.conn.stats["drop_rst_out_of_window"] == 3


def test_syn_in_a_synchronized_state_gets_a_challenge_ack():
    d = established_driver()
    d.feed("S", seq=1)  # in window
    assert d.out() == [ACK_NOW]
    d.feed("S", seq=90000)  # outside: an unacceptable segment is ACKed too
    assert d.out() == [ACK_NOW]
    assert d.conn.state is S.ESTABLISHED


def test_challenge_acks_are_rate_limited():
    d = established_driver()
    answered = 0
    for _ in range(15):
        d.feed("R", seq=200)
        answered += len(d.out())
    assert answered == 10  # the burst
    assert d.conn.stats["challenge_ack_suppressed"] == 5
    d.now += 0.1  # 10 per second refill
    d.feed("R", seq=200)
    assert d.out() == [ACK_NOW]
    d.feed("R", seq=200)
    assert d.out() == []


def test_ack_for_data_never_sent_is_challenged_and_dropped():
    d = established_driver()
    d.feed("P.", seq=1, ack=100, data=b"inject")
    assert d.out() == [ACK_NOW]
    assert d.conn.recv(100) == b"" and d.conn.rcv.nxt - d.conn.irs == 1


def test_ack_too_far_in_the_past_is_challenged_and_dropped():
    d = established_driver()
    d.feed("P.", seq=1, ack=-70000, data=b"inject")  # below SND.UNA - MAX.SND.WND
    assert d.out() == [ACK_NOW]
    assert d.conn.recv(100) == b""


def test_old_duplicate_ack_still_delivers_its_data():
    d = established_driver(plain_config(nodelay=True))
    d.conn.send(b"x" * 100)
    d.out()
    d.feed(".", seq=1, ack=101)
    d.feed("P.", seq=1, ack=50, data=b"hello")  # an ACK below SND.UNA: ignored, data taken
    assert d.conn.recv(10) == b"hello" and d.conn.snd.una - d.conn.iss == 101


def test_data_outside_the_window_is_acked_and_dropped():
    d = established_driver()
    d.feed("P.", seq=70000, ack=1, data=b"far")
    assert d.out() == [ACK_NOW]
    d.feed("P.", seq=-10, ack=1, data=b"old")  # entirely before RCV.NXT (a retransmission)
    assert d.out() == [ACK_NOW]
    assert d.conn.recv(10) == b""


def test_pure_acks_outside_the_window_get_rate_limited_answers():
    d = established_driver()
    d.feed(".", seq=80000, ack=1)
    assert d.out() == [ACK_NOW]
    d.feed(".", seq=80000, ack=1)
    assert d.out() == []  # an ACK loop cannot form
    d.now += 0.5
    d.feed(".", seq=80000, ack=1)
    assert d.out() == [ACK_NOW]


def test_pure_ack_at_the_right_edge_is_accepted():
    # A sender that filled our window sends its ACKs from RCV.NXT + RCV.WND.
    d = established_driver(plain_config(nodelay=True))
    d.conn.send(b"q")
    d.out()
    d.feed(".", seq=65536, ack=2)
    assert d.conn.snd.una - d.conn.iss == 2 and d.out() == []


def test_overlapping_segment_is_trimmed():
    d = established_driver()
    d.feed("P.", seq=1, ack=1, data=b"abcd")
    d.feed("P.", seq=3, ack=1, data=b"cdefg")  # starts inside what we have
    assert d.conn.recv(100) == b"abcdefg"


def test_segment_beyond_the_window_is_trimmed_and_its_fin_ignored():
    d = established_driver(plain_config(rcvbuf=10))
    d.feed("FP.", seq=1, ack=1, data=b"0123456789ABCDEF")
    assert d.conn.recv(100) == b"0123456789"
    assert d.conn.state is S.ESTABLISHED  # the FIN lay outside the window


def test_segment_without_ack_is_dropped():
    d = established_driver()
    d.feed("P", seq=1, data=b"noack")
    assert d.conn.recv(10) == b"" and d.out() == []


def test_zero_window_still_takes_the_ack_of_a_probe():
    d = established_driver(plain_config(rcvbuf=100, nodelay=True))
    d.feed("P.", seq=1, ack=1, data=b"x" * 100)
    assert d.advance(0.05) == [(0.05, "[.] seq=1 ack=101 win=0 len=0")]  # the delayed ACK
    d.conn.send(b"data")
    d.out()
    # A window probe from the peer: one byte at RCV.NXT; we cannot take it, but its ACK counts.
    d.feed(".", seq=101, ack=5, data=b"y")
    assert d.conn.snd.una - d.conn.iss == 5
    assert d.out() == ["[.] seq=5 ack=101 win=0 len=0"]
    assert d.conn.recv_queue == 100


# -- timestamps: PAWS (RFC 7323 5) ---------------------------------------------------------


def ts_driver():
    d = established_driver(TcpConfig(rcvbuf=65535))
    assert d.conn.ts_ok and d.conn.ts_recent == 1000
    return d


def test_paws_drops_an_old_timestamp_and_acks():
    d = ts_driver()
    d.now = 0.5
    d.feed("P.", seq=1, ack=1, data=b"old", ts=(999, 0))
    assert d.conn.recv(10) == b""
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0 ts=500,1000"]
    assert d.conn.stats["drop_paws"] == 1


def test_newer_timestamp_is_taken_as_ts_recent():
    d = ts_driver()
    d.feed("P.", seq=1, ack=1, data=b"new", ts=(1005, 0))
    assert d.conn.recv(10) == b"new" and d.conn.ts_recent == 1005
    # Out of order: beyond Last.ACK.sent, so TS.Recent stays (RFC 7323 4.3).
    d.out()
    d.feed("P.", seq=100, ack=1, data=b"later", ts=(2000, 0))
    assert d.conn.ts_recent == 1005


def test_timestamps_wrap_around_for_paws():
    d = ts_driver()
    d.conn.ts_recent = 0xFFFFFFF0
    d.feed("P.", seq=1, ack=1, data=b"wrapped", ts=(5, 0))  # 5 comes after 0xFFFFFFF0
    assert d.conn.recv(10) == b"wrapped"


def test_segment_without_timestamp_is_dropped_once_negotiated():
    d = ts_driver()
    d.feed("P.", seq=1, ack=1, data=b"nots", ts=None)
    assert d.conn.recv(10) == b"" and d.out() == []
    assert d.conn.stats["drop_no_timestamp"] == 1


def test_rst_needs_no_timestamp_and_skips_paws():
    d = ts_driver()
    d.feed("R", seq=1, ts=None)
    assert d.conn.state is S.CLOSED
    d = ts_driver()
    d.feed("R", seq=1, ts=(1, 0))
    assert d.conn.state is S.CLOSED


def test_rst_is_taken_even_with_a_zero_window():  # MUST-66
    d = established_driver(plain_config(rcvbuf=100))
    d.feed("P.", seq=1, ack=1, data=b"x" * 100)
    assert d.conn.rcv.adv == d.conn.rcv.nxt  # the window is closed
    d.feed("R", seq=101)
    assert d.conn.state is S.CLOSED and d.conn.error == errno.ECONNRESET


def test_reordered_duplicate_ack_is_exempt_from_paws():
    # As Linux: an old pure duplicate ACK still counts (its SACK blocks matter).
    d = established_driver(TcpConfig(rcvbuf=65535))
    d.conn.send(b"x" * 3000)
    d.out()
    d.feed(".", seq=1, ack=1, window=65535 >> 7, ts=(1010, 0), sack=[(1449, 2897)])
    d.feed(".", seq=1, ack=1, window=65535 >> 7, ts=(1005, 0), sack=[(1449, 3001)])
    assert d.conn.stats["paws_disordered_ack"] == 1 and d.conn.stats["drop_paws"] == 0
    assert d.conn.scoreboard.sacked.total == 1552 and d.conn.stats["dupacks_in"] == 2
    d.feed("P.", seq=1, ack=1, window=65535 >> 7, ts=(1005, 0), data=b"old data")
    assert d.conn.stats["drop_paws"] == 1 and d.conn.recv(10) == b""
