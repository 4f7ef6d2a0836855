"""Opening connections: active, passive (listener, backlog), simultaneous; SYN-SENT rules.

Each test feeds exact segments and checks the exact segments and timers
that come out (relative sequence numbers, tcpdump-style flags).
"""
import errno
from ipaddress import IPv4Address

import pytest

from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.listener import SOMAXCONN, TcpListener
from stack.tcp.seq import IsnGenerator
from stack.tcp.state import TcpState
from stack.tcp.testing import (
    CLIENT,
    PEER_ISS,
    SERVER,
    SegmentDriver,
    active_driver,
    established_driver,
    plain_config,
)
from stack.wire.tcp import TcpFlags, TcpRepr

KEY = bytes(range(32))


# -- active open ------------------------------------------------------------------------------


def test_active_open_plain():
    d = active_driver()
    assert d.conn.state is TcpState.SYN_SENT
    assert d.out() == ["[S] seq=0 win=65535 len=0 mss=1460"]
    assert d.conn.poll_at() == 1.0  # RFC 6298 initial RTO
    d.now = 0.05
    d.feed("S.", seq=0, ack=1, mss=1400)
    assert d.conn.state is TcpState.ESTABLISHED and d.conn.connected
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0"]
    assert d.conn.snd_mss == 1400
    assert d.conn.rtt.srtt == pytest.approx(0.05)  # the SYN's round trip was timed
    assert d.conn.poll_at() is None  # nothing outstanding, no timer
    assert d.conn.writable and not d.conn.readable


def test_active_open_offers_and_negotiates_all_options():
    d = active_driver(TcpConfig())
    assert d.out() == ["[S] seq=0 win=65535 len=0 mss=1460 ws=3 sackok ts=0,0"]
    d.now = 0.02
    d.feed("S.", seq=0, ack=1, mss=1460, window_scale=7, sack_permitted=True, ts=(900, 0))
    c = d.conn
    assert (c.ts_ok, c.sack_ok, c.snd.wscale, c.rcv.wscale) == (True, True, 7, 3)
    assert c.snd_mss == 1460 - 12  # MUST-16: the timestamp option takes room
    assert c.ts_recent == 900
    assert d.out() == ["[.] seq=1 ack=1 win=32768 len=0 ts=20,900"]
    assert c.info().options == ("ts", "sack", "wscale:7,3")


def test_peer_without_options_gets_none_and_the_default_mss():
    d = active_driver(TcpConfig())
    d.out()
    d.feed("S.", seq=0, ack=1, ts=None)
    c = d.conn
    assert (c.ts_ok, c.sack_ok, c.snd.wscale, c.rcv.wscale) == (False, False, 0, 0)
    assert c.snd_mss == 536  # MUST-15
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0"]


def test_mss_option_follows_the_mtu():
    d = active_driver(plain_config(mtu=9000))
    assert d.out() == ["[S] seq=0 win=65535 len=0 mss=8960"]
    d.feed("S.", seq=0, ack=1, mss=9000)
    assert d.conn.snd_mss == 8960  # min(peer's MSS, our MTU - 40)


def test_tiny_peer_mss_is_clamped():
    d = active_driver()
    d.out()
    d.feed("S.", seq=0, ack=1, mss=1)
    assert d.conn.snd_mss == 48


def test_syn_retransmissions_back_off_then_etimedout():
    d = active_driver()
    d.out()
    sent = d.advance(200)
    assert [t for t, _ in sent] == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
    assert all(s == "[S] seq=0 win=65535 len=0 mss=1460" for _, s in sent)
    assert d.conn.state is TcpState.CLOSED
    assert d.conn.error == errno.ETIMEDOUT
    assert d.conn.writable and d.conn.readable  # poll wakes up to see the error


def test_syn_retries_are_configurable():
    d = active_driver(plain_config(syn_retries=1))
    d.out()
    assert [t for t, _ in d.advance(10)] == [1.0]
    assert d.conn.error == errno.ETIMEDOUT and d.now == 10


def test_soft_icmp_error_is_reported_on_timeout():
    d = active_driver(plain_config(syn_retries=0))
    d.out()
    d.conn.icmp_error(errno.EHOSTUNREACH)
    assert d.conn.state is TcpState.SYN_SENT  # MUST-56: not aborted by it
    d.advance(2)
    assert d.conn.error == errno.EHOSTUNREACH


def test_hard_icmp_error_aborts_the_attempt():
    d = active_driver()
    d.out()
    d.conn.icmp_error(errno.ECONNREFUSED, hard=True)
    assert d.conn.state is TcpState.CLOSED and d.conn.error == errno.ECONNREFUSED


def test_rto_after_a_retransmitted_syn_is_three_seconds():
    d = active_driver()
    d.out()
    d.advance(1.5)  # one retransmission at 1.0
    d.feed("S.", seq=0, ack=1)
    d.out()
    assert d.conn.rtt.srtt is None  # Karn: no sample from a retransmitted SYN
    assert d.conn.rtt.rto == 3.0  # RFC 6298 5.7


def test_rst_answering_our_syn_is_connection_refused():
    d = active_driver()
    d.out()
    d.feed("R.", seq=0, ack=1)
    assert d.conn.state is TcpState.CLOSED and d.conn.error == errno.ECONNREFUSED
    assert d.out() == []
    with pytest.raises(ConnectionRefusedError):
        d.conn.send(b"x")


def test_rst_in_syn_sent_needs_an_acceptable_ack():
    d = active_driver()
    d.out()
    d.feed("R", seq=0)  # no ACK: dropped (RFC 9293 3.10.7.3)
    d.feed("R.", seq=0, ack=7)  # wrong ACK: dropped, no RST back
    assert d.conn.state is TcpState.SYN_SENT
    assert d.out() == []


def test_bad_ack_in_syn_sent_gets_a_reset():
    d = active_driver()
    d.out()
    d.feed("S.", seq=0, ack=7)
    assert d.out() == ["[R] seq=7 win=0 len=0"]
    d.feed(".", seq=0, ack=0)  # acks nothing we sent (SEG.ACK =< ISS)
    assert d.out() == ["[R] seq=0 win=0 len=0"]
    assert d.conn.state is TcpState.SYN_SENT


def test_segment_without_syn_in_syn_sent_is_dropped():
    d = active_driver()
    d.out()
    d.feed(".", seq=0, ack=1)
    assert d.conn.state is TcpState.SYN_SENT and d.out() == []


def test_data_in_the_syn_ack_is_received():
    d = active_driver()
    d.out()
    d.feed("S.", seq=0, ack=1, data=b"hi")
    assert d.conn.recv(10) == b"hi"
    # Reading 2 bytes does not move the right edge (receiver SWS avoidance).
    assert d.out() == ["[.] seq=1 ack=3 win=65533 len=0"]


def test_data_queued_before_the_handshake_goes_after_it():
    d = active_driver()
    assert d.conn.send(b"early") == 5
    assert d.out() == ["[S] seq=0 win=65535 len=0 mss=1460"]  # no data on the SYN
    d.feed("S.", seq=0, ack=1)
    assert d.out() == ["[P.] seq=1 ack=1 win=65535 len=5"]


# -- simultaneous open (MUST-10) --------------------------------------------------------------


def test_simultaneous_open_by_syn_ack():
    d = active_driver()
    d.out()
    d.feed("S", seq=0, mss=1460)
    assert d.conn.state is TcpState.SYN_RECEIVED
    assert d.out() == ["[S.] seq=0 ack=1 win=65535 len=0 mss=1460"]
    d.feed("S.", seq=0, ack=1)  # the peer's SYN,ACK (figure 8, line 6)
    assert d.conn.state is TcpState.ESTABLISHED
    assert d.out() == []


def test_simultaneous_open_by_plain_ack():
    d = active_driver()
    d.out()
    d.feed("S", seq=0)
    d.out()
    d.feed(".", seq=1, ack=1)
    assert d.conn.state is TcpState.ESTABLISHED


def test_simultaneous_open_rst_is_refused_and_syn_ack_retransmits():
    d = active_driver()
    d.out()
    d.feed("S", seq=0)
    d.out()
    assert d.advance(1.5) == [(1.0, "[S.] seq=0 ack=1 win=65535 len=0 mss=1460")]
    d.feed("R", seq=1)
    assert d.conn.state is TcpState.CLOSED and d.conn.error == errno.ECONNREFUSED


# -- passive open ---------------------------------------------------------------------------------


def _syn(**opts):
    r = TcpRepr(CLIENT[1], SERVER[1], PEER_ISS, 0, TcpFlags.SYN, 64240)
    for k, v in opts.items():
        setattr(r, k, v)
    return r


def passive(config=None, iss=1000, **opts):
    conn = TcpConnection.from_syn(SERVER, CLIENT, _syn(**opts), iss, 0.0, config or plain_config())
    return SegmentDriver(conn, PEER_ISS)


def test_passive_open_answers_with_syn_ack_and_establishes():
    d = passive(mss=1460)
    assert d.conn.state is TcpState.SYN_RECEIVED
    assert d.out() == ["[S.] seq=0 ack=1 win=65535 len=0 mss=1460"]
    assert d.conn.poll_at() == 1.0
    d.now = 0.03
    d.feed(".", seq=1, ack=1, window=1000)
    assert d.conn.state is TcpState.ESTABLISHED
    assert d.conn.snd.wnd == 1000 and d.conn.rtt.srtt == pytest.approx(0.03)
    assert d.out() == [] and d.conn.poll_at() is None


def test_syn_ack_mirrors_the_options_the_peer_offered():
    d = passive(TcpConfig(), mss=1460, window_scale=7, sack_permitted=True, timestamps=(100, 0))
    assert d.out() == ["[S.] seq=0 ack=1 win=65535 len=0 mss=1460 ws=3 sackok ts=0,100"]
    d = passive(TcpConfig(), mss=1460, sack_permitted=True)
    assert d.out() == ["[S.] seq=0 ack=1 win=65535 len=0 mss=1460 sackok"]
    d = passive(TcpConfig(rcvbuf=60000), window_scale=2)
    assert d.out() == ["[S.] seq=0 ack=1 win=60000 len=0 mss=1460 ws=0"]  # scale 0 still answers WS


def test_lost_syn_ack_is_resent_on_a_repeated_syn_and_by_timer():
    d = passive()
    d.out()
    d.feed("S", seq=0)
    assert d.out() == ["[S.] seq=0 ack=1 win=65535 len=0 mss=1460"]
    assert [t for t, _ in d.advance(100)] == [1.0, 3.0, 7.0, 15.0, 31.0]
    assert d.conn.state is TcpState.CLOSED and d.conn.error is None  # just forgotten


def test_rst_in_syn_received_returns_to_listen():
    d = passive()
    d.out()
    d.feed("R", seq=1)
    assert d.conn.state is TcpState.CLOSED and d.conn.error is None


def test_bad_ack_in_syn_received_gets_a_reset():
    d = passive()
    d.out()
    d.feed(".", seq=1, ack=50)
    assert d.out() == ["[R] seq=50 win=0 len=0"]
    assert d.conn.state is TcpState.SYN_RECEIVED


def test_data_on_the_final_ack_is_taken():
    d = passive()
    d.out()
    d.feed("P.", seq=1, ack=1, data=b"GET /")
    assert d.conn.state is TcpState.ESTABLISHED and d.conn.recv(100) == b"GET /"


def test_new_syn_in_syn_received_drops_the_embryo():
    d = passive()
    d.out()
    d.feed("S", seq=100)  # another SYN, in window: back to LISTEN
    assert d.conn.state is TcpState.CLOSED


# -- the listener -----------------------------------------------------------------------------


def _listener(backlog=1, **kw):
    return TcpListener(SERVER, backlog, plain_config(), IsnGenerator(KEY), **kw)


def _client(n):
    return (IPv4Address("10.0.0.1"), 40000 + n)


def _handshake(lst, n, now=0.0):
    syn = TcpRepr(_client(n)[1], SERVER[1], PEER_ISS, 0, TcpFlags.SYN, 64240)
    conn = lst.on_syn(SERVER[0], _client(n), syn, now)
    if conn is None:
        return None
    d = SegmentDriver(conn, PEER_ISS, now)
    d.out()
    d.feed(".", seq=1, ack=1)
    return conn


def test_listener_accept_queue_and_isn():
    lst = _listener(backlog=1)
    conn = _handshake(lst, 1)
    assert conn.state is TcpState.ESTABLISHED and lst.pending == 1 and lst.readable
    assert conn.iss == IsnGenerator(KEY).isn(SERVER[0], 80, _client(1)[0], _client(1)[1], 0.0)
    assert lst.accept() is conn and lst.accept() is None and not lst.readable


def test_backlog_bounds_the_accept_queue_like_linux():
    # Linux counts the queue full when it holds MORE than backlog entries.
    lst = _listener(backlog=0)
    first = _handshake(lst, 1)
    assert first.state is TcpState.ESTABLISHED  # listen(0) still queues one
    assert lst.pending == 1 and lst.accept_queue_full
    assert lst.on_syn(SERVER[0], _client(2), _syn(), 0.0) is None  # SYNs dropped now
    assert lst.stats["syn_drop_accept_queue_full"] == 1
    lst.accept()
    assert _handshake(lst, 3).state is TcpState.ESTABLISHED
    lst = _listener(backlog=2)
    assert [_handshake(lst, n) is not None for n in range(4)] == [True, True, True, False]


def test_final_ack_dropped_while_accept_queue_full():
    lst = _listener(backlog=0)
    drivers = []
    for n in (1, 2):  # both SYNs arrive while the accept queue is empty
        d = SegmentDriver(lst.on_syn(SERVER[0], _client(n), _syn(), 0.0), PEER_ISS)
        d.out()
        drivers.append(d)
    drivers[0].feed(".", seq=1, ack=1)
    drivers[1].feed(".", seq=1, ack=1)
    late = drivers[1].conn
    assert lst.pending == 1 and late.state is TcpState.SYN_RECEIVED  # its ACK was dropped
    assert late.stats["drop_accept_queue_full"] == 1
    assert drivers[1].advance(1.5) == [(1.0, "[S.] seq=0 ack=1 win=65535 len=0 mss=1460")]
    lst.accept()
    drivers[1].feed(".", seq=1, ack=1)  # the client's next segment: now there is room
    assert late.state is TcpState.ESTABLISHED and lst.accept() is late


def test_syn_queue_bound_drops_a_syn_flood():
    lst = _listener(backlog=10, max_syn_backlog=3)
    got = [lst.on_syn(SERVER[0], _client(n), _syn(), 0.0) for n in range(10)]
    assert sum(c is not None for c in got) == 3
    assert lst.embryonic == 3 and lst.stats["syn_drop_syn_queue_full"] == 7
    # Half-open connections time out and free their places.
    for c in got[:3]:
        SegmentDriver(c, PEER_ISS).advance(100)
    assert lst.embryonic == 0
    assert lst.on_syn(SERVER[0], _client(99), _syn(), 100.0) is not None


def test_the_syn_queue_grows_with_the_backlog_as_in_linux():
    # Linux (cookies on) bounds the SYN queue by the listener's backlog: a server that asks for
    # SOMAXCONN takes a burst of 1,000 handshakes whole, without falling back to cookies.
    big = _listener(backlog=SOMAXCONN)
    got = [big.on_syn(SERVER[0], _client(n), _syn(), 0.0) for n in range(1000)]
    assert all(c is not None for c in got) and big.embryonic == 1000 and not big.syn_queue_full
    assert big.info().max_syn_backlog == SOMAXCONN
    # A small backlog keeps a small SYN queue; beyond it, SYNs get cookies (or are dropped).
    # (as many as its accept queue takes: backlog + 1, full only above the backlog).
    small = _listener(backlog=8)
    got = [small.on_syn(SERVER[0], _client(n), _syn(), 0.0) for n in range(12)]
    assert sum(c is not None for c in got) == 9 and small.syn_queue_full
    assert small.stats["syn_drop_syn_queue_full"] == 3 and small.info().max_syn_backlog == 9
    # The stack-wide max_syn_backlog still caps it (the memory half-open connections take).
    capped = _listener(backlog=SOMAXCONN, max_syn_backlog=100)
    assert capped.syn_queue_bound == 100


def test_duplicate_syn_makes_no_second_connection():
    lst = _listener()
    assert lst.on_syn(SERVER[0], _client(1), _syn(), 0.0) is not None
    assert lst.on_syn(SERVER[0], _client(1), _syn(), 0.0) is None


def test_backlog_is_clamped_to_somaxconn():
    assert _listener(backlog=-1).backlog == SOMAXCONN
    assert _listener(backlog=10**6).backlog == SOMAXCONN
    lst = _listener(backlog=5)
    lst.listen(7)
    assert lst.backlog == 7


def test_closing_the_listener_resets_queued_connections():
    lst = _listener(backlog=5)
    done = _handshake(lst, 1)
    half = lst.on_syn(SERVER[0], _client(2), _syn(), 0.0)
    SegmentDriver(half, PEER_ISS).out()
    victims = lst.close()
    assert set(victims) == {done, half}
    for conn in victims:
        assert conn.state is TcpState.CLOSED
        out = conn.poll(0.0)
        assert len(out) == 1 and out[0][0].flags == TcpFlags.RST
    assert lst.on_syn(SERVER[0], _client(3), _syn(), 0.0) is None and lst.readable


def test_rst_on_embryo_frees_its_syn_queue_slot():
    lst = _listener()
    conn = lst.on_syn(SERVER[0], _client(1), _syn(), 0.0)
    d = SegmentDriver(conn, PEER_ISS)
    d.out()
    d.feed("R", seq=1)
    assert lst.embryonic == 0 and lst.stats["embryonic_dropped"] == 1


def test_established_helper_consumes_the_handshake():
    d = established_driver(TcpConfig())
    assert d.conn.state is TcpState.ESTABLISHED and d.out() == []


def test_unacceptable_segment_in_syn_received_gets_an_ack_and_no_busy_loop():
    d = passive()
    d.out()
    d.feed(".", seq=90000, ack=1)
    assert d.out() == ["[.] seq=1 ack=1 win=65535 len=0"]
    assert d.conn.poll_at() == 1.0  # just the SYN-ACK timer


def test_iss_floor_after_time_wait():
    lst = _listener()
    plain = IsnGenerator(KEY).isn(SERVER[0], 80, _client(1)[0], _client(1)[1], 0.0)
    floor = (plain + 1_000_000) & 0xFFFFFFFF
    conn = lst.on_syn(SERVER[0], _client(1), _syn(), 0.0, iss_floor=floor)
    assert conn.iss == floor  # the clock alone would have gone below the old SND.NXT
    plain2 = IsnGenerator(KEY).isn(SERVER[0], 80, _client(2)[0], _client(2)[1], 0.0)
    conn2 = lst.on_syn(SERVER[0], _client(2), _syn(), 0.0, iss_floor=(plain2 - 10) & 0xFFFFFFFF)
    assert conn2.iss == plain2  # a floor the clock already passed changes nothing


# -- SYN cookies (RFC 4987) ----------------------------------------------------------------------


def _syn_from(n, seq=PEER_ISS, mss=1460):
    return TcpRepr(_client(n)[1], SERVER[1], seq, 0, TcpFlags.SYN, 64240, mss=mss)


def test_syn_cookie_answers_when_the_syn_queue_is_full():
    lst = TcpListener(SERVER, 8, plain_config(), IsnGenerator(KEY), max_syn_backlog=1, cookie_key=KEY)
    assert lst.on_syn(SERVER[0], _client(1), _syn_from(1), 0.0) is not None
    assert lst.syn_queue_full and lst.on_syn(SERVER[0], _client(2), _syn_from(2), 0.0) is None
    synack = lst.cookie_synack(SERVER[0], _client(2), _syn_from(2, mss=1300), 10.0)
    assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == PEER_ISS + 1
    assert synack.mss == 1460 and synack.window_scale is None and not synack.sack_permitted
    assert synack.seq >> 27 == 0 and (synack.seq >> 25) & 3 == 1  # time slot 0, MSS 1220
    assert lst.embryonic == 1  # nothing was kept for it
    ack = TcpRepr(_client(2)[1], SERVER[1], PEER_ISS + 1, (synack.seq + 1) & 0xFFFFFFFF, TcpFlags.ACK, 5000)
    conn = lst.on_cookie_ack(SERVER[0], _client(2), ack, 20.0)
    assert conn is not None and conn.state is TcpState.ESTABLISHED
    assert conn.snd_mss == 1220 and conn.snd.wnd == 5000 and not (conn.ts_ok or conn.sack_ok)
    assert lst.accept() is conn and conn.iss == synack.seq


def test_invalid_or_stale_cookies_are_refused():
    lst = TcpListener(SERVER, 8, plain_config(), IsnGenerator(KEY), max_syn_backlog=1, cookie_key=KEY)
    lst.on_syn(SERVER[0], _client(1), _syn_from(1), 0.0)
    synack = lst.cookie_synack(SERVER[0], _client(2), _syn_from(2), 0.0)

    def ack(n, ackno, now):
        a = TcpRepr(_client(n)[1], SERVER[1], PEER_ISS + 1, ackno & 0xFFFFFFFF, TcpFlags.ACK, 5000)
        return lst.on_cookie_ack(SERVER[0], _client(n), a, now)

    assert ack(2, synack.seq + 2, 1.0) is None  # a guessed cookie
    assert ack(3, synack.seq + 1, 1.0) is None  # someone else's cookie
    assert ack(2, synack.seq + 1, 200.0) is None  # too old (and no cookies sent lately)
    assert lst.stats["cookie_invalid"] == 2
    assert ack(2, synack.seq + 1, 100.0) is not None  # the next 64 s slot is still fine


def test_no_cookies_when_disabled_or_quiet():
    lst = TcpListener(SERVER, 8, plain_config(), IsnGenerator(KEY), max_syn_backlog=1, syncookies=False)
    assert lst.cookie_synack(SERVER[0], _client(2), _syn_from(2), 0.0) is None
    lst = TcpListener(SERVER, 8, plain_config(), IsnGenerator(KEY))
    a = TcpRepr(_client(2)[1], SERVER[1], PEER_ISS + 1, 12345, TcpFlags.ACK, 5000)
    assert lst.on_cookie_ack(SERVER[0], _client(2), a, 0.0) is None  # no cookie was ever sent


def test_a_good_cookie_with_the_accept_queue_full_is_dropped_not_refused():
    from stack.tcp.listener import COOKIE_QUEUE_FULL

    lst = TcpListener(SERVER, 0, plain_config(), IsnGenerator(KEY), max_syn_backlog=1, cookie_key=KEY)
    lst.on_syn(SERVER[0], _client(1), _syn_from(1), 0.0)
    synack2 = lst.cookie_synack(SERVER[0], _client(2), _syn_from(2), 0.0)
    synack3 = lst.cookie_synack(SERVER[0], _client(3), _syn_from(3), 0.0)

    def ack(n, synack):
        a = TcpRepr(_client(n)[1], SERVER[1], PEER_ISS + 1, (synack.seq + 1) & 0xFFFFFFFF, TcpFlags.ACK, 5000)
        return lst.on_cookie_ack(SERVER[0], _client(n), a, 1.0)

    first = ack(2, synack2)
    assert first is not None and lst.accept_queue_full  # backlog 0: one waits, the queue is full
    assert ack(3, synack3) is COOKIE_QUEUE_FULL  # good cookie, no room: dropped (the peer tries again)
    assert lst.stats["cookie_drop_accept_queue_full"] == 1
    bad = TcpRepr(_client(3)[1], SERVER[1], PEER_ISS + 1, (synack3.seq + 7) & 0xFFFFFFFF, TcpFlags.ACK, 5000)
    assert lst.on_cookie_ack(SERVER[0], _client(3), bad, 1.0) is None  # a bad cookie is still refused
    assert lst.accept() is first
    again = ack(3, synack3)  # the peer's next segment: now there is room
    assert again is not None and again.state is TcpState.ESTABLISHED
