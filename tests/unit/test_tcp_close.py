"""Closing: active, passive, simultaneous, half-close, TIME-WAIT, abort, resets on close."""
import errno

from stack.tcp.state import TcpState
from stack.tcp.testing import established_driver, plain_config

S = TcpState


def test_active_close_through_time_wait():
    d = established_driver()
    d.conn.close()
    assert d.conn.state is S.FIN_WAIT_1
    assert d.out() == ["[F.] seq=1 ack=1 win=65535 len=0"]
    assert d.conn.poll_at() == d.now + 0.2  # the FIN is retransmitted on RTO
    d.feed(".", seq=1, ack=2)
    assert d.conn.state is S.FIN_WAIT_2 and d.conn.all_acked
    d.now = 1.0
    d.feed("F.", seq=1, ack=2)
    assert d.conn.state is S.TIME_WAIT
    # The FIN took one sequence number; the right edge stays (65535 - 1).
    assert d.out() == ["[.] seq=2 ack=2 win=65534 len=0"]
    assert d.conn.poll_at() == 61.0  # 2*MSL (MUST-13)
    d.now = 30.0
    d.feed("F.", seq=1, ack=2)  # the peer did not get our ACK: again, and restart
    assert d.out() == ["[.] seq=2 ack=2 win=65534 len=0"]
    assert d.conn.poll_at() == 90.0
    assert d.advance(59.9) == [] and d.conn.state is S.TIME_WAIT
    d.advance(0.2)
    assert d.conn.state is S.CLOSED and d.conn.finished and d.conn.error is None


def test_time_wait_length_is_configurable():
    d = established_driver(plain_config(time_wait=5.0))
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=2)
    d.out()
    assert d.conn.poll_at() == d.now + 5.0
    d.advance(5)
    assert d.conn.state is S.CLOSED


def test_fin_retransmitted_until_acked():
    d = established_driver()
    d.conn.close()
    d.out()
    sent = d.advance(0.7)
    assert sent == [(0.21, "[F.] seq=1 ack=1 win=65535 len=0"), (0.61, "[F.] seq=1 ack=1 win=65535 len=0")]


def test_passive_close_through_last_ack():
    d = established_driver()
    d.feed("F.", seq=1, ack=1)
    c = d.conn
    assert c.state is S.CLOSE_WAIT and c.eof and c.readable and c.recv(10) == b""
    assert d.out() == ["[.] seq=1 ack=2 win=65534 len=0"]  # a FIN is ACKed at once
    assert c.send(b"bye") == 3  # the other direction still works (half-close)
    assert d.out() == ["[P.] seq=1 ack=2 win=65534 len=3"]
    c.close()
    assert c.state is S.LAST_ACK
    assert d.out() == ["[F.] seq=4 ack=2 win=65534 len=0"]  # a FIN needs no Nagle wait
    d.feed(".", seq=2, ack=4)
    assert d.out() == []
    d.feed(".", seq=2, ack=5)
    assert c.state is S.CLOSED and c.error is None and c.finished


def test_close_wait_fin_goes_with_the_last_data():
    d = established_driver(plain_config(nodelay=True))
    d.feed("F.", seq=1, ack=1)
    d.out()
    d.conn.send(b"tail")
    d.conn.close()
    assert d.out() == ["[FP.] seq=1 ack=2 win=65534 len=4"]


def test_simultaneous_close_through_closing():
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=1)  # the peer's FIN crossed ours
    assert d.conn.state is S.CLOSING
    assert d.out() == ["[.] seq=2 ack=2 win=65534 len=0"]
    d.feed(".", seq=2, ack=2)
    assert d.conn.state is S.TIME_WAIT


def test_fin_that_acks_our_fin_goes_straight_to_time_wait():
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=2)
    assert d.conn.state is S.TIME_WAIT
    assert d.out() == ["[.] seq=2 ack=2 win=65534 len=0"]


def test_half_close_keeps_receiving():
    d = established_driver()
    d.conn.shutdown_write()
    d.out()
    d.feed(".", seq=1, ack=2)
    assert d.conn.state is S.FIN_WAIT_2
    d.feed("P.", seq=1, ack=2, data=b"more data")
    assert d.conn.recv(100) == b"more data" and not d.conn.eof
    d.feed("F.", seq=10, ack=2)
    assert d.conn.eof and d.conn.state is S.TIME_WAIT
    assert d.conn.poll_at() == 0.0  # the FIN is acknowledged immediately
    assert d.out()[-1] == "[.] seq=2 ack=11 win=65525 len=0"


def test_shutdown_write_is_not_an_orphan_fin_wait_2_lasts():
    d = established_driver()
    d.conn.shutdown_write()
    d.out()
    d.feed(".", seq=1, ack=2)
    assert d.advance(1000) == [] and d.conn.state is S.FIN_WAIT_2


def test_orphaned_fin_wait_2_times_out():
    d = established_driver(plain_config(fin_wait2_timeout=30.0))
    d.conn.close()
    d.out()
    d.feed(".", seq=1, ack=2)
    assert d.out() == [] and d.conn.poll_at() == d.now + 30.0
    d.advance(30)
    assert d.conn.state is S.CLOSED


def test_send_after_shutdown_is_epipe():
    d = established_driver()
    d.conn.shutdown_write()
    try:
        d.conn.send(b"x")
    except BrokenPipeError:
        pass
    else:
        raise AssertionError("send after shutdown_write must fail with EPIPE")


def test_close_with_unread_data_resets():
    d = established_driver()
    d.feed("P.", seq=1, ack=1, data=b"unread")
    d.out()
    d.conn.close()
    assert d.conn.state is S.CLOSED
    assert d.out() == ["[R] seq=1 win=0 len=0"]
    assert d.conn.stats["rst_unread_data"] == 1


def test_data_after_close_is_answered_by_reset():
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("P.", seq=1, ack=2, data=b"late")
    assert d.conn.state is S.CLOSED
    assert d.out() == ["[R] seq=2 win=0 len=0"]


def test_abort_sends_reset_when_synchronized():
    d = established_driver()
    d.conn.send(b"pending")
    d.conn.abort()
    assert d.out() == ["[R] seq=1 win=0 len=0"]
    assert d.conn.state is S.CLOSED and d.conn.send_queue == 0


def test_abort_and_close_in_syn_sent_are_silent():
    from stack.tcp.testing import active_driver

    for how in ("abort", "close", "shutdown_write"):
        d = active_driver()
        d.out()
        getattr(d.conn, how)()
        assert d.conn.state is S.CLOSED and d.out() == []


def test_close_in_syn_received_waits_for_the_handshake():
    from stack.tcp.testing import active_driver

    d = active_driver()
    d.out()
    d.feed("S", seq=0)  # simultaneous open
    d.out()
    d.conn.close()
    assert d.conn.state is S.SYN_RECEIVED and d.out() == []
    d.feed(".", seq=1, ack=1)
    assert d.conn.state is S.FIN_WAIT_1
    assert d.out() == ["[F.] seq=1 ack=1 win=65535 len=0"]


def test_reset_in_established_is_econnreset():
    d = established_driver()
    d.feed("R", seq=1)
    c = d.conn
    assert c.state is S.CLOSED and c.error == errno.ECONNRESET
    assert c.readable and c.eof and c.take_error() == errno.ECONNRESET and c.error is None


def test_reset_in_last_ack_and_time_wait_just_closes():
    d = established_driver()
    d.feed("F.", seq=1, ack=1)
    d.conn.close()
    d.out()
    d.feed("R", seq=2)
    assert d.conn.state is S.CLOSED and d.conn.error is None
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=2)
    d.out()
    d.feed("R", seq=2)
    assert d.conn.state is S.CLOSED and d.conn.error is None


def test_time_wait_accepts_a_newer_syn_only():
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=2)
    assert d.conn.may_reopen(d.segment("S", seq=100000))
    assert not d.conn.may_reopen(d.segment("S", seq=0))
    assert not d.conn.may_reopen(d.segment("S.", seq=100000))


def test_time_wait_reopen_uses_timestamps_when_negotiated():
    from stack.tcp.config import TcpConfig

    d = established_driver(TcpConfig())
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=2)
    assert d.conn.may_reopen(d.segment("S", seq=0, ts=(d.peer_ts + 5, 0)))
    assert not d.conn.may_reopen(d.segment("S", seq=100000, ts=(d.peer_ts - 5, 0)))
