"""The TCP engine's building blocks: range sets, reassembly, RTT, congestion control, config, RST replies."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.config import TcpConfig
from stack.tcp.congestion import Cubic, NewReno, make_congestion_control
from stack.tcp.ranges import RangeSet
from stack.tcp.reassembly import ReassemblyQueue
from stack.tcp.reset import reset_for
from stack.tcp.rtt import RttEstimator
from stack.wire.tcp import TcpFlags, TcpRepr

# -- RangeSet ------------------------------------------------------------------------------


def test_rangeset_merges_touching_and_overlapping_ranges():
    r = RangeSet()
    assert r.add(10, 20) == 10
    assert r.add(30, 40) == 10
    assert r.add(20, 30) == 10  # touches both: one range now
    assert r.ranges() == [(10, 40)] and r.total == 30
    assert r.add(15, 35) == 0
    assert r.add(5, 45) == 10
    assert r.ranges() == [(5, 45)]


def test_rangeset_remove_splits():
    r = RangeSet()
    r.add(0, 100)
    assert r.remove(40, 60) == 20
    assert r.ranges() == [(0, 40), (60, 100)] and r.total == 80
    assert r.remove(0, 10) == 10 and r.remove(90, 200) == 10
    assert r.ranges() == [(10, 40), (60, 90)]
    r.discard_below(65)
    assert r.ranges() == [(65, 90)] and r.total == 25


def test_rangeset_queries():
    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    assert r.covered(0, 100) == 20 and r.covered(15, 35) == 10 and r.covered(20, 30) == 0
    assert r.contains(10) and not r.contains(20) and r.contains(39)
    assert r.first_gap(10, 50, 100) == (20, 30)
    assert r.first_gap(0, 50, 4) == (0, 4)
    assert r.first_gap(30, 40, 10) is None
    assert r.first_gap(35, 60, 100) == (40, 60)
    assert r.high == 40 and bool(r)
    r.clear()
    assert not r and r.high is None and r.total == 0


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 60)), max_size=40))
def test_rangeset_matches_a_plain_set(ops):
    r = RangeSet()
    ref = set()
    for add, start, length in ops:
        span = set(range(start, start + length))
        if add:
            assert r.add(start, start + length) == len(span - ref)
            ref |= span
        else:
            assert r.remove(start, start + length) == len(span & ref)
            ref -= span
        assert r.total == len(ref)
        assert set().union(*(set(range(s, e)) for s, e in r)) == ref
        starts = [s for s, _ in r]
        assert starts == sorted(starts)
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(r.ranges(), r.ranges()[1:]))


# -- ReassemblyQueue ----------------------------------------------------------------------


def test_reassembly_holds_and_releases_in_order():
    q = ReassemblyQueue(max_bytes=1000)
    assert q.add(110, b"B" * 10) == 10
    assert q.add(130, b"D" * 10) == 10
    assert q.blocks() == [(110, 120), (130, 140)]
    assert q.pop_ready(100) is None
    assert q.add(120, b"C" * 10) == 10  # joins the two blocks
    assert q.blocks() == [(110, 140)]
    assert q.pop_ready(110) == b"B" * 10 + b"C" * 10 + b"D" * 10
    assert not q and q.total == 0


def test_reassembly_first_copy_wins_and_overlaps_count_new_bytes_only():
    q = ReassemblyQueue(max_bytes=1000)
    q.add(10, b"aaaa")
    assert q.add(8, b"XXXXXXXX") == 4  # bytes 8,9 and 14,15 are new
    assert q.blocks() == [(8, 16)]
    assert q.pop_ready(8) == b"XXaaaaXX"
    q.add(100, b"0123456789")
    assert q.add(102, b"zz") == 0
    assert q.pop_ready(105) == b"56789"  # partly consumed already


def test_reassembly_tail_extension_fast_path():
    q = ReassemblyQueue(max_bytes=10_000)
    q.add(0, b"a" * 100)
    for i in range(1, 50):
        assert q.add(i * 100, b"a" * 100) == 100
    assert q.blocks() == [(0, 5000)] and q.total == 5000


def test_reassembly_bounds():
    q = ReassemblyQueue(max_bytes=25, max_blocks=2)
    assert q.add(0, b"x" * 10) == 10
    assert q.add(20, b"y" * 10) == 10
    assert q.add(40, b"z") == -1  # third block refused
    assert q.add(10, b"w" * 10) == -1  # would bring the total to 30 > 25
    assert q.add(10, b"w" * 5) == 5
    assert q.total == 25
    q.clear()
    assert q.total == 0 and q.add(0, b"") == 0


def test_reassembly_sack_blocks_most_recent_first():
    q = ReassemblyQueue(max_bytes=10_000)
    q.add(100, b"a" * 10)
    q.add(200, b"b" * 10)
    q.add(300, b"c" * 10)
    assert q.sack_blocks(3) == [(300, 310), (200, 210), (100, 110)]
    q.add(110, b"a" * 10)  # the first block grew last
    assert q.sack_blocks(2) == [(100, 120), (300, 310)]
    q.pop_ready(100)
    assert q.sack_blocks(4) == [(300, 310), (200, 210)]


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 50)), max_size=30), st.integers(0, 400))
def test_reassembly_never_disagrees_with_the_stream(pieces, bound):
    stream = bytes(i % 251 for i in range(400))
    q = ReassemblyQueue(max_bytes=bound, max_blocks=8)
    for start, length in pieces:
        q.add(start, stream[start : start + length])
        assert q.total <= bound and len(q) <= 8
    blocks = q.blocks()
    assert q.total == sum(e - s for s, e in blocks)
    for s, e in blocks:  # every block holds exactly the stream's bytes
        assert q.pop_ready(s) == stream[s:e]
    assert not q


# -- RTT estimator ------------------------------------------------------------------------


def test_rto_follows_rfc6298():
    r = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60)
    assert r.rto == 1.0
    r.sample(0.5)
    assert r.srtt == 0.5 and r.rttvar == 0.25 and r.rto == pytest.approx(1.5)
    r.sample(0.3)
    assert r.rttvar == pytest.approx(0.75 * 0.25 + 0.25 * 0.2)
    assert r.srtt == pytest.approx(0.875 * 0.5 + 0.125 * 0.3)
    assert r.rto == pytest.approx(r.srtt + 4 * r.rttvar)


def test_rto_minimum_backoff_and_maximum():
    r = RttEstimator(min_rto=0.2, max_rto=2.0)
    r.sample(0.001)
    assert r.rto == 0.2
    r.on_timeout()
    assert r.rto == 0.4
    for _ in range(10):
        r.on_timeout()
    assert r.rto == 2.0
    r.sample(0.001)  # a fresh sample ends the backoff
    assert r.backoff == 0 and r.rto == 0.2


def test_rto_after_a_retransmitted_syn_is_three_seconds():
    r = RttEstimator()
    r.on_timeout()
    r.reset_after_syn_retransmit()
    assert r.rto == 3.0
    with pytest.raises(ValueError):
        RttEstimator(min_rto=0)


# -- congestion control -------------------------------------------------------------------


def test_newreno_slow_start_avoidance_and_loss():
    cc = NewReno(mss=1000)
    assert cc.cwnd == 10_000 and cc.in_slow_start
    cc.on_ack(10_000, 0.0, 0.1)
    assert cc.cwnd == 20_000
    cc.on_congestion(0.1, flight=20_000)
    assert cc.ssthresh == 10_000 and cc.cwnd == 10_000 and not cc.in_slow_start
    for _ in range(10):
        cc.on_ack(1000, 0.2, 0.1)
    assert cc.cwnd == 11_000  # one MSS per window acked
    cc.on_rto(0.3, flight=11_000)
    assert cc.cwnd == 1000 and cc.ssthresh == 5500
    cc.on_congestion(0.4, flight=1000)
    assert cc.ssthresh == 2000  # never below two segments


def test_recovery_exit_sets_cwnd_to_ssthresh():
    # RFC 6582 3.2 step 6, its second choice (where PRR ends, as Linux): the
    # flight seen at the ACK that ends recovery does not matter.
    for cc in (NewReno(mss=1000), Cubic(mss=1000)):
        cc.on_ack(30_000, 0.0, 0.1)  # slow start to 40 segments
        cc.on_congestion(0.0, 40_000)
        target = cc.ssthresh
        cc.on_recovery_exit(0.1, flight=5_000)
        assert cc.cwnd == target and not cc.in_slow_start, cc.name
        cc.on_congestion(0.2, 40_000)
        cc.on_recovery_exit(0.3, flight=50_000)
        assert cc.cwnd == cc.ssthresh < target, cc.name


def test_newreno_halves_cwnd_not_the_flight_it_is_told():
    # As Linux's tcp_reno_ssthresh (RFC 9438 4.6 allows cwnd where cwnd only grows
    # while it is the limit): the flight seen mid-way through a batch of ACKs, or
    # swollen by limited transmit, does not set the new window.
    cc = NewReno(mss=1000)
    cc.on_congestion(0.0, flight=4_000)
    assert cc.ssthresh == cc.cwnd == 5_000
    cc.on_congestion(0.1, flight=30_000)
    assert cc.ssthresh == cc.cwnd == 2_500


def test_slow_start_stops_at_ssthresh_and_the_rest_is_congestion_avoidance():
    for cc in (NewReno(mss=1000), Cubic(mss=1000)):
        cc.on_congestion(0.0, 0)  # ssthresh 5000 (NewReno) or 7000 (CUBIC)
        target = cc.ssthresh
        cc.set_cwnd(2_000)
        cc.on_ack(12_000, 0.1, 0.01)  # one ACK for far more than ssthresh - cwnd
        assert target <= cc.cwnd <= target + 1_000, cc.name
        assert not cc.in_slow_start


def test_cubic_reduction_is_beta_and_fast_convergence():
    cc = Cubic(mss=1000)
    cc.on_ack(90_000, 0.0, 0.1)  # slow start to 100 segments
    assert cc.cwnd == 100_000
    cc.on_congestion(1.0, 100_000)
    assert cc.ssthresh == 70_000 and cc.cwnd == 70_000 and cc.w_max == 100
    cc.on_congestion(2.0, 70_000)  # below the last W_max: fast convergence
    assert cc.w_max == pytest.approx(70 * 1.7 / 2)
    assert cc.cwnd == 49_000


def test_cubic_follows_the_cubic_curve():
    cc = Cubic(mss=1000)
    cc.on_ack(90_000, 0.0, 0.1)
    cc.on_congestion(0.0, 100_000)
    k = (100 * 0.3 / 0.4) ** (1 / 3)
    now = 0.0
    # One ACK per 10 ms for K seconds, with an RTT of 10 ms: cwnd approaches W_max at K.
    while now < k:
        now += 0.01
        cc.on_ack(cc.cwnd // 10, now, 0.01)
    assert cc.k == pytest.approx(k)
    assert 95_000 <= cc.cwnd <= 102_000
    # Past K the curve grows convexly beyond W_max.
    while now < k + 3:
        now += 0.01
        cc.on_ack(cc.cwnd // 10, now, 0.01)
    expected = 0.4 * 3**3 + 100
    assert cc.cwnd / 1000 == pytest.approx(expected, rel=0.1)


def test_cubic_reno_friendly_region_grows_at_least_like_reno():
    cc = Cubic(mss=1000)
    cc.on_ack(10_000, 0.0, 1.0)  # 20 segments
    cc.on_congestion(0.0, 20_000)  # 14 segments, W_max 20
    start = cc.cwnd
    now = 0.0
    for _ in range(200):  # long RTT: Reno's estimate beats the cubic curve
        now += 1.0
        cc.on_ack(cc.cwnd, now, 1.0)
    assert cc.cwnd > start
    assert math.isfinite(cc.w_est)


def test_cubic_rto_and_set_mss():
    cc = make_congestion_control("CUBIC", 1000)
    cc.on_rto(0.0, 10_000)
    assert cc.cwnd == 1000 and cc.ssthresh == 7000
    cc2 = make_congestion_control("newreno", 536)
    cc2.set_mss(1448)
    assert cc2.cwnd == 10 * 1448
    with pytest.raises(ValueError):
        make_congestion_control("vegas", 1000)
    with pytest.raises(ValueError):
        NewReno(mss=0)


# -- config ---------------------------------------------------------------------------------


def test_config_derived_values():
    c = TcpConfig()
    assert c.mss == 1460 and c.window_shift == 3 and c.ooo_bytes == c.rcvbuf
    assert TcpConfig(mtu=9000).mss == 8960
    assert TcpConfig(rcvbuf=65535).window_shift == 0
    assert TcpConfig(rcvbuf=6 << 20).window_shift == 7
    assert TcpConfig(rcvbuf=1 << 31).window_shift == 14
    assert TcpConfig(window_scaling=False, rcvbuf=1 << 20).window_shift == 0
    assert TcpConfig(max_ooo_bytes=10).ooo_bytes == 10


@pytest.mark.parametrize(
    "bad",
    [
        dict(mtu=60),
        dict(rcvbuf=0),
        dict(delayed_ack=0.5),
        dict(congestion="bbr"),
        dict(keepalive_count=0),
        dict(max_retries=0),
        dict(time_wait=-1),
        dict(dupthresh=0),
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TcpConfig(**bad)


def test_keepalive_defaults_follow_rfc9293():
    c = TcpConfig()
    assert c.keepalive is False  # MUST-25
    assert c.keepalive_idle >= 7200  # MUST-28


# -- RST for segments without a connection (RFC 9293 3.10.7.1) -------------------------------


def _seg(flags, seq=100, ack=0):
    return TcpRepr(1234, 80, seq, ack, TcpFlags(flags), 1000)


def test_reset_for_ack_uses_its_ack_number():
    r = reset_for(_seg(TcpFlags.ACK | TcpFlags.PSH, ack=777), 10)
    assert (r.src_port, r.dst_port, r.seq, r.ack, r.flags) == (80, 1234, 777, 0, TcpFlags.RST)


def test_reset_for_syn_acks_the_segment_length():
    r = reset_for(_seg(TcpFlags.SYN, seq=0xFFFFFFFF), 0)
    assert r.seq == 0 and r.ack == 0 and r.flags == TcpFlags.RST | TcpFlags.ACK
    r = reset_for(_seg(TcpFlags.FIN, seq=100), 5)
    assert r.ack == 106


def test_reset_for_rst_is_nothing():
    assert reset_for(_seg(TcpFlags.RST | TcpFlags.ACK), 0) is None
