"""The owners of a connection's state, each through its own narrow interface."""
from stack.tcp.ack_limits import AckLimits
from stack.tcp.congestion import NewReno
from stack.tcp.cwnd_use import CwndUse
from stack.tcp.receive_queue import ReceiveQueue
from stack.tcp.receive_window import ReceiveWindow
from stack.tcp.recovery import FAST, LossRecovery, UndoRecord
from stack.tcp.rtt import TimedSegment
from stack.tcp.scoreboard import Scoreboard
from stack.tcp.send_space import SendSpace
from stack.tcp.timers import ConnectionTimers, PersistTimer, Timer


# -- timers ------------------------------------------------------------------------------
def test_timer_expires_once_and_keeps_a_running_deadline():
    t = Timer()
    assert t.at is None and not t.take_expired(100.0)
    t.start(1.0)
    t.start_if_stopped(5.0)  # running: the first deadline stays
    assert t.at == 1.0 and not t.take_expired(0.5)
    assert t.take_expired(1.0) and t.at is None and not t.take_expired(2.0)


def test_earliest_is_the_first_running_deadline_and_stop_all_clears_it():
    timers = ConnectionTimers()
    assert timers.earliest() is None
    timers.retransmit.start(3.0)
    timers.delayed_ack.start(1.5)
    timers.close.start(60.0)
    timers.keepalive.start(0.1)  # armed lazily by poll_at, not counted here
    assert timers.earliest() == 1.5
    timers.stop_all()
    assert timers.earliest() is None and timers.keepalive.at is None


def test_persist_interval_backs_off_up_to_max_rto():
    p = PersistTimer()
    assert p.interval(0.25, 60.0) == 0.25
    for _ in range(20):
        p.back_off(0.25, 60.0)
    assert p.backoff == 8 and p.interval(0.25, 60.0) == 60.0  # 0.25 * 2**8 = 64 > 60


# -- send sequence space -----------------------------------------------------------------
def test_send_space_frees_acked_bytes_and_keeps_the_rest_for_retransmission():
    snd = SendSpace(1000)
    snd.buf += b"abcdefghij"
    assert snd.data_end == 1011 and snd.unsent
    snd.nxt = 1011
    assert snd.acked_to(1005) == 4 and snd.una == 1005 and snd.payload(1005, 1008) == b"efg"
    snd.queue_fin()
    assert snd.fin_seq == 1011 and not snd.fin_acked
    assert snd.acked_to(1012) == 6 and snd.fin_acked and not snd.buf


def test_send_space_takes_only_newer_window_updates():
    snd = SendSpace(0)
    snd.set_window(1000, wl1=10, wl2=1)
    assert snd.update_window(9, 5, 5000) == 0 and snd.wnd == 1000  # older segment
    assert snd.update_window(10, 1, 3000) == 2000 and (snd.wl1, snd.wl2) == (10, 1)
    assert snd.update_window(11, 1, 500) == -2500 and snd.wnd == 500 and snd.max_wnd == 3000


# -- receive side ------------------------------------------------------------------------
def test_receive_window_acceptability_and_sws_avoidance():
    rcv = ReceiveWindow(rcvbuf=10_000, mss=1000, rcv_mss=1000)
    rcv.open(100, 4000)
    assert rcv.available == 4000
    assert rcv.acceptable(100, 0) and rcv.acceptable(4100, 0) and not rcv.acceptable(4101, 0)
    assert rcv.acceptable(4099, 10) and not rcv.acceptable(4100, 1) and not rcv.acceptable(90, 5)
    assert rcv.window_field(free=4500) == 4000  # 500 more is below the SWS threshold: edge stays
    assert rcv.window_field(free=6000) == 6000 and rcv.adv == 6100
    rcv.take(1000)
    assert not rcv.ack_due
    rcv.take(1000)
    assert rcv.ack_due and rcv.nxt == 2100
    rcv.acked()
    assert rcv.unacked == 0 and rcv.last_ack_sent == 2100


def test_receive_queue_sack_blocks_put_the_dsack_first_once():
    rx = ReceiveQueue(ooo_bytes=10_000, max_ooo_blocks=8)
    rx.ooo.add(300, b"x" * 100)
    rx.dsack = (50, 60)
    assert rx.sack_block_count() == 2
    assert rx.sack_blocks(limit=3) == [(50, 60), (300, 400)]
    assert rx.sack_blocks(limit=3) == [(300, 400)]
    rx.take(b"a" * 200)
    assert rx.take_ready(200) == 0 and rx.take_ready(300) == 100 and len(rx.data) == 300
    assert rx.read(250) == b"a" * 200 + b"x" * 50 and rx.urgent_pending(400) == 0
    rx.shutdown()
    rx.take(b"late")
    assert rx.read(10) == b""


# -- scoreboard and recovery -------------------------------------------------------------
def test_scoreboard_marks_holes_below_the_is_lost_boundary():
    board = Scoreboard()
    # SND.UNA 0, SND.NXT 10000; the peer SACKs three separate segments above a hole.
    blocks = [(2000, 3000), (4000, 5000), (6000, 7000)]
    assert board.take_sack(blocks, una=0, nxt=10_000) == 3000
    assert board.first_sacked(default=10_000) == 2000
    boundary = board.lost_boundary(dupthresh=3, mss=1000)
    # (DupThresh - 1) * SMSS = 2000 SACKed bytes lie above 2999 (RFC 6675 IsLost).
    assert boundary == 2999
    board.mark_unsacked_lost(0, boundary)
    assert board.lost.ranges() == [(0, 2000)] and board.has_unsent_loss
    assert board.next_retransmission(mss=1000) == (0, 1000)
    board.retransmitted(0, 1000, snd_nxt=10_000)
    assert board.pipe(10_000) == 10_000 - 3000 - 2000 + 1000
    board.acked_to(3000)
    assert board.sacked.total == 2000 and board.lost.total == 0 and board.retrans.total == 0


def test_lost_retransmission_is_found_when_later_data_is_sacked():
    board = Scoreboard()
    board.mark_lost(0, 1000)
    board.retransmitted(0, 1000, snd_nxt=5000)
    board.take_sack([(5000, 6000)], una=0, nxt=6000)  # sent after the retransmission
    assert board.detect_lost_retransmits(una=0) == 1 and board.has_unsent_loss


def test_undo_record_counts_dsacks_of_what_the_episode_resent():
    cc = NewReno(1000, 10)
    undo = UndoRecord()
    undo.start(cc, una=0, nxt=5000)
    undo.retransmitted(0, 1000, tsval=None)
    undo.retransmitted(1000, 2000, tsval=None)
    assert not undo.dsack_says_needless(6000, 7000, mss=1000)  # outside the episode
    assert not undo.dsack_says_needless(0, 1000, mss=1000)
    assert undo.dsack_says_needless(1000, 2000, mss=1000)
    saved = undo.take()
    assert saved is not cc and saved.cwnd == cc.cwnd and undo.saved_cc is None


def test_loss_recovery_phases():
    rec = LossRecovery()
    rec.dupacks, rec.dup_bytes = 3, 2000
    rec.enter(FAST, 9000)
    assert (rec.phase, rec.recover) == ("fast", 9000)
    rec.exit()
    assert rec.phase is None and rec.dupacks == 0 and rec.dup_bytes == 0


# -- limits ------------------------------------------------------------------------------
def test_challenge_acks_are_a_token_bucket_and_oow_acks_are_spaced():
    limits = AckLimits(burst=2)
    assert limits.challenge_allowed(0.0, rate=1.0, burst=2)
    assert limits.challenge_allowed(0.0, rate=1.0, burst=2)
    assert not limits.challenge_allowed(0.0, rate=1.0, burst=2)
    assert limits.challenge_allowed(1.0, rate=1.0, burst=2)
    assert limits.oow_ack_allowed(5.0, interval=0.5) and not limits.oow_ack_allowed(5.4, interval=0.5)
    assert limits.oow_ack_allowed(5.5, interval=0.5)


def test_cwnd_grows_only_while_it_limits_sending():
    use = CwndUse()
    use.note(una=0, nxt=3000, limited=False)
    assert not use.allows_growth(cwnd=10_000, ssthresh=5000)  # application-limited
    assert use.allows_growth(cwnd=4000, ssthresh=5000)  # slow start, under twice the flight
    use.note(una=0, nxt=10_000, limited=True)
    assert use.allows_growth(cwnd=10_000, ssthresh=5000)
    use.note(una=500, nxt=10_000, limited=False)  # the window it describes is not acked yet
    assert use.limited


# -- RTT timing ----------------------------------------------------------------------------
def test_timed_segment_gives_one_sample_and_karn_cancels_it():
    timed = TimedSegment()
    timed.start(1000, now=1.0)
    assert timed.sample(999, now=1.2) is None
    assert timed.sample(1000, now=1.25) == 0.25 and timed.seq is None
    timed.start(2000, now=2.0)
    timed.cancel()  # retransmitted: no sample from it
    assert timed.sample(2000, now=2.5) is None


def test_mark_lost_again_resends_what_mark_lost_leaves_alone():
    board = Scoreboard()
    board.mark_lost(0, 1000)
    board.retransmitted(0, 1000, snd_nxt=None)
    board.mark_lost(0, 2000)  # the resent part waits for its own ACK
    assert board.next_retransmission(mss=5000) == (1000, 2000)
    board.mark_lost_again(0, 1000)  # a probe or a zero window: send it again
    assert board.next_retransmission(mss=5000) == (0, 2000)


def test_newreno_dupacks_inflate_and_partial_acks_deflate():
    rec = LossRecovery()
    rec.count_dupack(1000, outstanding=2500)
    rec.count_dupack(1000, outstanding=2500)
    rec.count_dupack(1000, outstanding=2500)
    assert (rec.dupacks, rec.dup_bytes) == (3, 2500)  # never more than is out
    rec.count_dupack(0, outstanding=2500)  # with SACK only the count grows
    assert (rec.dupacks, rec.dup_bytes) == (4, 2500)
    rec.deflate(acked=2000, mss=1000)
    assert rec.dup_bytes == 1500
    rec.deflate(acked=5000, mss=1000)
    assert rec.dup_bytes == 0
    rec.enter("loss", 100)
    rec.dup_bytes = 700
    rec.exit_loss()
    assert (rec.phase, rec.dupacks, rec.dup_bytes) == (None, 0, 700)


def test_tail_probe_episodes():
    tlp = LossRecovery().tlp
    tlp.probe_with_new_data()
    assert tlp.force and not tlp.rtx and tlp.high is None
    tlp.sent_new_data(5000)
    assert not tlp.force and tlp.high == 5000
    tlp.episode_over()
    tlp.probe_with_retransmission(6000)
    assert tlp.rtx and tlp.high == 6000
    tlp.cancel()
    assert tlp.high is None and not tlp.force
