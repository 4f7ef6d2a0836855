"""Loss recovery: the retransmission timer (RFC 6298), NewReno (RFC 5681/6582), SACK (RFC 2018/6675)."""
import errno

import pytest

from stack.tcp.state import TcpState
from stack.tcp.testing import established_driver, plain_config

S = TcpState


def seg(seq, length=1000, flags="."):
    return f"[{flags}] seq={seq} ack=1 win=65535 len={length}"


def ten_segments(**config):
    d = established_driver(plain_config(**config), peer_mss=1000)
    d.conn.send(b"d" * 20000)
    assert d.out() == [seg(1 + 1000 * i) for i in range(10)]
    d.now = 0.02
    return d


# -- retransmission timer -------------------------------------------------------------------------


def test_rto_backs_off_and_gives_up_with_etimedout():
    d = established_driver(plain_config(max_retries=3), peer_mss=1000)
    d.conn.send(b"r" * 1000)
    d.out()
    sent = d.advance(100)
    assert sent == [(0.21, seg(1, flags="P.")), (0.61, seg(1, flags="P.")), (1.41, seg(1, flags="P."))]
    assert d.conn.state is S.CLOSED and d.conn.error == errno.ETIMEDOUT
    assert d.conn.stats["timeouts"] == 4


def test_rto_minimum_is_configurable():
    d = established_driver(plain_config(min_rto=1.0), peer_mss=1000)
    d.conn.send(b"r" * 1000)
    d.out()
    assert d.conn.poll_at() == pytest.approx(1.01)


def test_rto_timeout_reports_a_soft_icmp_error():
    d = established_driver(plain_config(max_retries=1), peer_mss=1000)
    d.conn.send(b"r" * 1000)
    d.out()
    d.conn.icmp_error(errno.EHOSTUNREACH)
    d.advance(10)
    assert d.conn.error == errno.EHOSTUNREACH


def test_rto_collapses_cwnd_and_resends_in_slow_start():
    d = established_driver(plain_config(congestion="newreno", sack=True, tail_loss_probe=False), peer_mss=1000)
    c = d.conn
    c.send(b"d" * 10000)
    d.out()
    d.feed(".", seq=1, ack=1, sack=[(3001, 5001)])
    assert d.out() == []
    assert d.advance(0.25) == [(0.21, seg(1))]
    assert (c.cc.cwnd, c.cc.ssthresh) == (1000, 4000)  # half of the 8000 bytes in flight
    assert c.rtt.rto == 0.4
    d.feed(".", seq=1, ack=1001, sack=[(3001, 5001)])
    assert d.out() == [seg(1001), seg(2001)]  # cwnd 2000; SACKed data is skipped
    d.feed(".", seq=1, ack=3001, sack=[(3001, 5001)])
    assert d.out() == [seg(5001), seg(6001), seg(7001), seg(8001)]
    assert c.rtt.srtt == pytest.approx(0.01)  # Karn: no sample from retransmissions
    assert c.stats["retransmits"] == 7


def test_ack_of_new_data_restarts_the_timer():
    d = established_driver(peer_mss=1000)
    d.conn.send(b"x" * 3000)
    d.out()
    d.now = 0.15
    d.feed(".", seq=1, ack=1001)
    assert d.out() == []
    assert d.conn.poll_at() == pytest.approx(0.15 + d.conn.rtt.rto)


# -- NewReno without SACK ---------------------------------------------------------------------------


def test_newreno_limited_transmit_fast_retransmit_and_recovery():
    d = ten_segments(congestion="newreno")
    c = d.conn
    d.feed(".", seq=1, ack=1001)
    assert d.out() == [seg(10001), seg(11001)]  # slow start: cwnd 11000
    d.feed(".", seq=1, ack=1001)
    assert d.out() == [seg(12001)]  # limited transmit (RFC 3042)
    d.feed(".", seq=1, ack=1001)
    assert d.out() == [seg(13001)]
    d.feed(".", seq=1, ack=1001)  # the third duplicate: fast retransmit
    assert d.out() == [seg(1001)]
    # Half of cwnd (11000): the limited-transmit segments do not count (RFC 5681 3.2 step 2).
    assert (c.cc.ssthresh, c.cc.cwnd) == (5500, 5500)
    outs = []
    for _ in range(6):  # each further dupACK lets one segment's worth leave
        d.feed(".", seq=1, ack=1001)
        outs += d.out()
    assert outs == [seg(14001)]
    d.feed(".", seq=1, ack=4001)  # partial ACK: the next hole is resent at once
    assert d.out() == [seg(4001), seg(15001)]
    d.feed(".", seq=1, ack=16001)  # everything up to the recovery point and more
    assert c.recovery.phase is None and c.cc.cwnd == 5500  # ssthresh (RFC 6582 3.2 step 6, as PRR ends)
    assert c.stats["fast_retransmits"] == 1 and c.stats["dupacks_in"] == 9


def test_window_updates_and_data_are_not_duplicate_acks():
    d = ten_segments(congestion="newreno")
    d.feed(".", seq=1, ack=1)
    d.out()
    d.feed(".", seq=1, ack=1, window=60000)  # a window update
    d.feed("P.", seq=1, ack=1, data=b"x")  # data
    d.feed(".", seq=1, ack=1, window=60000)
    assert d.conn.stats["dupacks_in"] == 1 and d.conn.recovery.phase is None


def test_no_dupacks_without_outstanding_data():
    d = established_driver(plain_config(congestion="newreno"))
    for _ in range(5):
        d.feed(".", seq=1, ack=1)
    assert d.conn.stats["dupacks_in"] == 0


# -- SACK (RFC 2018, RFC 6675) ----------------------------------------------------------------------


def test_sack_recovery_retransmits_only_the_holes():
    d = ten_segments(sack=True)  # CUBIC
    c = d.conn
    d.feed(".", seq=1, ack=1001)
    assert d.out() == [seg(10001), seg(11001)]
    d.feed(".", seq=1, ack=1001, sack=[(2001, 3001)])
    assert d.out() == [seg(12001)]
    d.feed(".", seq=1, ack=1001, sack=[(2001, 4001)])
    assert d.out() == [seg(13001)]
    d.feed(".", seq=1, ack=1001, sack=[(2001, 5001)])  # 3 segments above the hole: lost
    assert d.out() == [seg(1001)]
    assert (c.cc.ssthresh, c.cc.cwnd) == (7700, 7700)  # CUBIC: beta 0.7 of 11 segments
    d.feed(".", seq=1, ack=1001, sack=[(2001, 6001)])
    assert d.out() == []  # pipe 9000 > cwnd
    d.feed(".", seq=1, ack=1001, sack=[(8001, 10001), (2001, 7001)])
    assert d.out() == [seg(14001)]  # the hole at 7001 is not lost yet
    d.feed(".", seq=1, ack=1001, sack=[(8001, 12001), (2001, 7001)])
    assert d.out() == [seg(7001), seg(15001), seg(16001)]  # now it is (IsLost)
    d.feed(".", seq=1, ack=7001, sack=[(8001, 13001)])
    assert d.out() == [seg(17001), seg(18001)]  # 7001 was already resent: not again
    d.feed(".", seq=1, ack=15001)
    assert c.recovery.phase is None and c.cc.cwnd == 7700  # ssthresh (RFC 6582 3.2 step 6, as PRR ends)
    assert c.stats["retransmits"] == 2


def test_sack_lost_detection_needs_three_sacked_segments_above():
    d = ten_segments(sack=True)
    d.feed(".", seq=1, ack=1, sack=[(1001, 3001)])
    assert d.conn.recovery.phase is None  # 2000 bytes SACKed: not (3-1)*MSS = 2000 < x
    d.feed(".", seq=1, ack=1, sack=[(1001, 3001), (4001, 4501)])
    assert d.conn.recovery.phase == "fast"  # 2500 bytes above: the first segment is lost
    assert d.out()[0] == seg(1)


def test_dsack_and_bogus_blocks_are_ignored():
    d = ten_segments(sack=True)
    d.feed(".", seq=1, ack=1001, sack=[(1, 1001)])  # D-SACK below SND.UNA
    d.feed(".", seq=1, ack=1001, sack=[(5001, 90001)])  # beyond SND.NXT
    d.feed(".", seq=1, ack=1001, sack=[(3001, 2001)])  # reversed
    assert d.conn.scoreboard.sacked.total == 0


def test_sack_blocks_advance_the_scoreboard_on_cumulative_ack():
    d = ten_segments(sack=True)
    d.feed(".", seq=1, ack=1, sack=[(2001, 4001)])
    assert d.conn.scoreboard.sacked.total == 2000
    d.feed(".", seq=1, ack=3001)
    assert d.conn.scoreboard.sacked.total == 1000  # the part below SND.UNA is gone
    d.feed(".", seq=1, ack=10001)
    assert d.conn.scoreboard.sacked.total == 0


def test_rto_during_sack_recovery_resends_every_unsacked_hole():
    d = ten_segments(sack=True)
    d.feed(".", seq=1, ack=1, sack=[(2001, 5001), (7001, 8001)])
    assert d.conn.recovery.phase == "fast"  # 4000 bytes SACKed above the first segment
    assert d.out() == [seg(1), seg(1001), seg(10001)]  # both unSACKed segments are lost
    sent = d.advance(0.25)
    assert sent == [(0.21, seg(1))] and d.conn.recovery.phase == "loss"  # the timer from 0.01 kept running
    base = d.conn.iss
    lost = [(a - base, b - base) for a, b in d.conn.scoreboard.lost.ranges()]
    assert lost == [(1, 2001), (5001, 7001), (8001, 11001)]  # every hole up to SND.NXT


def test_rto_during_fast_recovery_keeps_the_recovery_ssthresh():
    # The reduction for this loss was made when fast recovery began (CUBIC: 0.7 of
    # 10 segments). The timeout only collapses cwnd; computing ssthresh again from
    # the shrunken window would cut twice for one loss (as Linux's tcp_enter_loss).
    for cc, ssthresh in (("cubic", 7000), ("newreno", 5000)):
        d = ten_segments(sack=True, congestion=cc)
        d.feed(".", seq=1, ack=1, sack=[(2001, 5001), (7001, 8001)])
        assert d.conn.recovery.phase == "fast" and d.conn.cc.ssthresh == ssthresh, cc
        d.out()
        assert d.advance(0.25) == [(0.21, seg(1))] and d.conn.recovery.phase == "loss"
        assert (d.conn.cc.cwnd, d.conn.cc.ssthresh) == (1000, ssthresh), cc


def test_repeated_rto_of_the_same_data_keeps_ssthresh():
    # RFC 5681 3.1: ssthresh is set when a segment "has not yet been resent by way
    # of the retransmission timer"; the second timeout, with no ACK between, keeps it.
    d = established_driver(plain_config(congestion="newreno"), peer_mss=1000)
    c = d.conn
    c.send(b"d" * 8000)
    d.out()
    assert d.advance(0.25) == [(0.21, seg(1))]
    assert (c.cc.cwnd, c.cc.ssthresh) == (1000, 4000)  # half of the 8000 in flight
    assert d.advance(0.4) == [(0.61, seg(1))]  # backed off: 400 ms
    assert (c.cc.cwnd, c.cc.ssthresh) == (1000, 4000)


def test_lost_retransmission_is_detected_by_later_sacks():
    d = ten_segments(sack=True)
    c = d.conn
    d.feed(".", seq=1, ack=1001)
    d.out()
    for hi in (3001, 4001, 5001):
        d.feed(".", seq=1, ack=1001, sack=[(2001, hi)])
        d.out()
    assert c.stats["retransmits"] == 1  # 1001 resent while SND.NXT was 14001
    d.feed(".", seq=1, ack=1001, sack=[(2001, 12001)])
    assert d.out() == [seg(14001), seg(15001), seg(16001), seg(17001)]  # pipe 3000, cwnd 7700
    # Data sent after the retransmission arrives, the retransmission does not: resend it now.
    d.feed(".", seq=1, ack=1001, sack=[(14001, 15001), (2001, 12001)])
    assert d.out()[0] == seg(1001)
    assert c.stats["lost_retransmits"] == 1 and c.stats["timeouts"] == 0


# -- tail loss probe (RFC 8985 section 7) -------------------------------------------------------------


def five_segments_then_ack_3001():
    d = established_driver(plain_config(sack=True), peer_mss=1000)
    d.conn.send(b"t" * 5000)
    assert len(d.out()) == 5
    d.now = 0.02
    d.feed(".", seq=1, ack=3001)  # segments 4 and 5 are still out
    assert d.out() == []
    assert d.conn.poll_at() == pytest.approx(0.04)  # PTO = 2 * SRTT, before the RTO (0.22)
    assert d.advance(0.03) == [(0.04, seg(4001, flags="P."))]  # the last segment again
    assert d.conn.poll_at() == pytest.approx(0.24)  # the RTO runs again from the probe
    return d


def test_tail_loss_probe_reveals_a_lost_tail_segment():
    d = five_segments_then_ack_3001()
    d.feed(".", seq=1, ack=3001, sack=[(4001, 5001)])  # the probe arrived, 3001 did not
    assert d.out() == [seg(3001)]
    c = d.conn
    assert c.recovery.phase == "fast" and c.stats["tlp_loss_detected"] == 1
    d.feed(".", seq=1, ack=5001)
    assert c.recovery.phase is None and c.stats["timeouts"] == 0


def test_tail_loss_probe_that_repaired_a_loss_reduces_cwnd():
    d = five_segments_then_ack_3001()
    d.feed(".", seq=1, ack=5001)
    c = d.conn
    assert c.stats["tlp_recoveries"] == 1 and c.cc.ssthresh == 7000  # CUBIC: 0.7 * 10000 (5 of 10 used: no growth)


def test_spurious_tail_loss_probe_is_recognised_by_dsack():
    d = five_segments_then_ack_3001()
    d.feed(".", seq=1, ack=5001, sack=[(4001, 5001)])  # D-SACK: the probe was a duplicate
    assert d.conn.stats["tlp_recoveries"] == 0 and d.conn.cc.ssthresh > 1 << 60


def test_tail_loss_probe_sends_new_data_when_it_can():
    d = established_driver(plain_config(sack=True), peer_mss=1000)
    d.conn.send(b"t" * 20000)
    d.out()  # cwnd: 10 segments
    assert d.advance(0.03) == [(0.03, seg(10001))]  # one new segment beyond cwnd
    assert d.conn.stats["tlp_probes"] == 1


def test_no_probe_for_a_single_segment_or_without_sack():
    d = established_driver(plain_config(sack=True), peer_mss=1000)
    d.conn.send(b"t" * 1000)
    d.out()
    assert d.advance(0.3)[0][0] == pytest.approx(0.21)  # PTO would add 200 ms: the RTO comes first
    d = established_driver(plain_config(), peer_mss=1000)
    d.conn.send(b"t" * 5000)
    d.out()
    assert d.advance(0.3)[0][0] == pytest.approx(0.21)


# -- undoing needless reductions (RFC 3522 Eifel, RFC 2883/3708 D-SACK) --------------------------------


def reordered_recovery(config):
    """Segment 2 is only late: three SACKed dupACKs trigger a (needless) fast retransmit."""
    d = established_driver(config, peer_mss=1000 + (12 if config.timestamps else 0))
    c = d.conn
    c.send(b"x" * 10000)
    d.out()
    d.now = 0.05
    for hi in (2001, 3001, 4001):
        d.feed(".", seq=1, ack=1, sack=[(1001, hi)])
    assert d.out()[0].startswith("[.] seq=1 ack=1 ") and c.recovery.phase == "fast"
    return d


def test_eifel_undoes_a_spurious_fast_retransmit():
    from stack.tcp.config import TcpConfig

    d = reordered_recovery(TcpConfig(rcvbuf=65535))
    c = d.conn
    before = c.recovery.undo.saved_cc.cwnd
    assert c.cc.ssthresh == 7000 and c.recovery.undo.tsval == 50
    d.now = 0.06
    d.feed(".", seq=1, ack=5001, ts=(d.peer_ts, 10))  # echoes the original's TSval (10 < 50)
    assert c.stats["undo_eifel"] == 1 and c.recovery.phase is None
    assert c.cc.ssthresh > 1 << 60 and c.cc.cwnd >= before


def test_eifel_keeps_the_reduction_for_a_real_loss():
    from stack.tcp.config import TcpConfig

    d = reordered_recovery(TcpConfig(rcvbuf=65535))
    d.now = 0.06
    d.feed(".", seq=1, ack=5001, ts=(d.peer_ts, 50))  # the retransmission filled the hole
    assert d.conn.stats["undo_eifel"] == 0 and d.conn.cc.ssthresh == 7000


def test_changing_congestion_control_mid_recovery_leaves_nothing_to_undo():
    from stack.tcp.config import TcpConfig

    d = reordered_recovery(TcpConfig(rcvbuf=65535))
    c = d.conn
    c.configure(congestion="newreno")       # TCP_CONGESTION during the episode
    replaced = c.cc
    d.now = 0.06
    # The ACK that would have undone the old algorithm's reduction (Eifel) is
    # an ordinary ACK now: the new algorithm stays, nothing is restored.
    d.feed(".", seq=1, ack=5001, ts=(d.peer_ts, 10))
    assert c.stats["undo_eifel"] == 0 and c.cc is replaced and c.cc.name == "newreno"


def test_dsack_undoes_a_spurious_fast_retransmit():
    d = reordered_recovery(plain_config(sack=True))
    c = d.conn
    d.feed(".", seq=1, ack=5001, sack=[(1, 1001)])  # D-SACK: segment 1 arrived twice
    assert c.stats["undo_dsack"] == 1 and c.cc.ssthresh > 1 << 60


def test_dsack_for_data_never_retransmitted_does_not_undo():
    # A link that duplicates frames makes D-SACKs for original data too; only a
    # D-SACK for a retransmission shows the retransmission was needless (RFC 3708).
    d = reordered_recovery(plain_config(sack=True))
    c = d.conn
    d.feed(".", seq=1, ack=1, sack=[(3001, 4001), (1001, 4001)])  # segment 4 arrived twice
    assert c.stats["undo_dsack"] == 0 and c.recovery.phase == "fast" and c.cc.ssthresh < 1 << 60
    d.feed(".", seq=1, ack=5001)
    d.feed(".", seq=1, ack=5001, sack=[(1, 1001)])  # now the retransmission of segment 1
    assert c.stats["undo_dsack"] == 1 and c.cc.ssthresh > 1 << 60


def test_link_duplicates_of_acks_and_dsacks_are_not_dupacks():
    # One segment above a hole (a one-position reorder), that ACK duplicated by the
    # link, then a D-SACK for the same segment: one dupACK only, no fast retransmit.
    d = ten_segments(sack=True)
    c = d.conn
    for _ in range(4):
        d.feed(".", seq=1, ack=1, sack=[(1001, 2001)])
    d.feed(".", seq=1, ack=1, sack=[(1001, 2001), (1001, 2001)])
    d.feed(".", seq=1, ack=1, sack=[(1001, 2001), (1001, 2001)])
    assert c.stats["dupacks_in"] == 1 and c.recovery.phase is None
    d.feed(".", seq=1, ack=2001)  # the late segment fills the hole
    assert c.recovery.phase is None and c.stats["retransmits"] == 0 and c.stats["fast_retransmits"] == 0


def test_receiver_reports_duplicates_with_dsack():
    d = established_driver(plain_config(sack=True))
    d.feed(".", seq=1, ack=1, data=b"a" * 100)
    d.feed(".", seq=1, ack=1, data=b"a" * 100)  # the same segment again
    assert d.out() == ["[.] seq=1 ack=101 win=65435 len=0 sack=1-101"]
    d.feed(".", seq=1001, ack=1, data=b"b" * 100)
    d.out()
    d.feed(".", seq=1001, ack=1, data=b"b" * 100)  # a duplicate of held out-of-order data
    assert d.out() == ["[.] seq=1 ack=101 win=65435 len=0 sack=1001-1101,1001-1101"]


def test_cwnd_does_not_grow_when_the_application_is_the_limit():
    d = established_driver(peer_mss=1000)
    c = d.conn
    for i in range(20):  # one small request at a time: never more than 1 of 10 segments out
        c.send(b"q" * 100)
        d.out()
        d.feed(".", seq=1, ack=1 + 100 * (i + 1))
    assert c.cc.cwnd == 10_000
    c.send(b"b" * 20_000)
    d.out()
    d.feed(".", seq=1, ack=2001 + 10_000)  # now cwnd-limited: slow start again
    assert c.cc.cwnd == 20_000


def test_congestion_control_can_be_switched_on_a_live_connection():
    d = established_driver(peer_mss=1000)
    c = d.conn
    assert c.cc.name == "cubic"
    c.send(b"x" * 10_000)
    d.out()
    d.feed(".", seq=1, ack=10_001)
    c.configure(congestion="newreno")
    assert c.cc.name == "newreno" and c.cc.cwnd == 20_000 and c.info().congestion == "newreno"
    with pytest.raises(ValueError):
        c.configure(congestion="nonsense")


def test_congestion_avoidance_credits_every_ack_of_a_batch():
    # ACKs often arrive together and are all taken before anything is sent again,
    # so the flight shrinks under each one. Whether cwnd was the limit is decided
    # when sending stopped, for the whole window (as Linux): all five ACKs count.
    d = established_driver(plain_config(congestion="newreno"), peer_mss=1000)
    c = d.conn
    c.cc.ssthresh = 5000
    c.cc.set_cwnd(5000)  # congestion avoidance, 5 segments
    c.send(b"a" * 20000)
    assert d.out() == [seg(1 + 1000 * i) for i in range(5)]
    d.now = 0.01
    for i in range(1, 6):
        d.feed(".", seq=1, ack=1 + 1000 * i)
    assert c.cc.cwnd == 6000  # a whole window acked: one MSS more (RFC 5681 3.1)
    assert d.out() == [seg(5001 + 1000 * i) for i in range(6)]


def test_slow_start_after_a_batch_reaches_twice_the_window():
    d = established_driver(plain_config(congestion="newreno"), peer_mss=1000)
    c = d.conn
    c.send(b"a" * 40000)
    assert len(d.out()) == 10
    d.now = 0.01
    for i in range(1, 11):  # one ACK per segment, all in one batch
        d.feed(".", seq=1, ack=1 + 1000 * i)
    assert c.cc.cwnd == 20_000
    assert d.out() == [seg(10001 + 1000 * i) for i in range(20)]
