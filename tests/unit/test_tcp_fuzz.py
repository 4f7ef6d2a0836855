"""Hypothesis: random segments and calls into a connection in every state.

Whatever arrives, the engine must not raise, and its bookkeeping must stay
consistent: SND.UNA <= SND.NXT, the scoreboard inside the window, RCV.NXT
inside what was advertised, every emitted segment encodable on the wire.
"""
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.listener import TcpListener
from stack.tcp.seq import IsnGenerator
from stack.tcp.state import TcpState
from stack.tcp.testing import CLIENT, PEER_ISS, SERVER, SegmentDriver, active_driver, established_driver
from stack.wire.tcp import TcpFlags, TcpRepr

S = TcpState
MASK = 0xFFFFFFFF


def _config(options: bool):
    if options:
        return TcpConfig(rcvbuf=20000, sndbuf=20000, max_ooo_blocks=8)
    return TcpConfig(rcvbuf=20000, sndbuf=20000, sack=False, timestamps=False, window_scaling=False)


def make(state: str, options: bool) -> SegmentDriver:
    """A driver whose connection is in ``state`` (reached through real segments)."""
    cfg = _config(options)
    if state == "SYN_SENT":
        d = active_driver(cfg)
        d.out()
        return d
    if state == "SYN_RECEIVED":
        lst = TcpListener(SERVER, 4, cfg, IsnGenerator(bytes(32)))
        syn = TcpRepr(CLIENT[1], SERVER[1], PEER_ISS, 0, TcpFlags.SYN, 65535, mss=1460)
        if options:
            syn.window_scale, syn.sack_permitted, syn.timestamps = 7, True, (1000, 0)
        d = SegmentDriver(lst.on_syn(SERVER[0], CLIENT, syn, 0.0), PEER_ISS)
        d.out()
        return d
    d = established_driver(cfg, peer_mss=500)
    d.conn.send(b"x" * 3000)
    d.out()
    if state == "ESTABLISHED":
        return d
    if state == "CLOSE_WAIT":
        d.feed("F.", seq=1, ack=1)
    elif state == "LAST_ACK":
        d.feed("F.", seq=1, ack=1)
        d.conn.close()
    else:
        d.conn.shutdown_write()
        d.out()  # the FIN goes out
        if state == "FIN_WAIT_2":
            d.feed(".", seq=1, ack=3002)
        elif state == "CLOSING":
            d.feed("F.", seq=1, ack=1)
        elif state == "TIME_WAIT":
            d.feed("F.", seq=1, ack=3002)
    d.out()
    assert d.conn.state.name == state, (d.conn.state, state)
    return d


STATES = ["SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"]

u32 = st.integers(0, MASK)
near = st.integers(-70000, 70000)
segment = st.tuples(
    st.just("seg"),
    st.one_of(near.map(lambda x: ("rcv", x)), u32.map(lambda x: ("abs", x))),
    st.one_of(near.map(lambda x: ("snd", x)), u32.map(lambda x: ("abs", x))),
    st.integers(0, 255),  # flags
    st.integers(0, 0xFFFF),  # window
    st.integers(0, 1500),  # payload length
    st.one_of(st.none(), st.tuples(u32, u32)),  # timestamps
    st.lists(st.tuples(near, near), max_size=4),  # SACK blocks near SND.UNA
    st.one_of(st.none(), st.integers(0, 0xFFFF)),  # MSS option
    st.one_of(st.none(), st.integers(0, 255)),  # window scale
    st.integers(0, 0xFFFF),  # urgent pointer
)
action = st.one_of(
    segment,
    segment,
    segment,
    st.tuples(st.just("advance"), st.floats(0.0, 200.0)),
    st.tuples(st.just("send"), st.integers(0, 5000)),
    st.tuples(st.just("recv"), st.integers(0, 5000)),
    st.tuples(st.sampled_from(["close", "shutdown_write", "shutdown_read", "abort", "keepalive", "nodelay"])),
)


def build(d: SegmentDriver, a) -> TcpRepr:
    _, seqspec, ackspec, flags, window, _n, ts, sack, mss, ws, urg = a
    c = d.conn
    seq = (c.rcv.nxt + seqspec[1]) & MASK if seqspec[0] == "rcv" else seqspec[1]
    ack = (c.snd.una + ackspec[1]) & MASK if ackspec[0] == "snd" else ackspec[1]
    r = TcpRepr(c.remote[1], c.local[1], seq, ack, TcpFlags(flags), window, urg)
    r.timestamps = ts
    r.sack_blocks = tuple(((c.snd.una + x) & MASK, (c.snd.una + y) & MASK) for x, y in sack[: 3 if ts else 4])
    r.mss = mss
    r.window_scale = ws
    return r


def check_invariants(c: TcpConnection) -> None:
    assert isinstance(c.state, TcpState)
    assert c.snd.una <= c.snd.nxt
    if c.state is not S.CLOSED:  # (CLOSED drops the buffers and keeps the numbers)
        data_end = c.snd.data_end
        assert c.snd.nxt <= data_end + 1
        assert c.snd.una <= data_end + 1
    assert len(c.snd.buf) <= c.config.sndbuf
    if c.irs is not None:
        assert c.rcv.nxt >= c.irs + 1
        if c.state is not S.CLOSED:
            assert c.rcv.nxt <= c.rcv.adv + 1
    for rs in (c.scoreboard.sacked, c.scoreboard.lost, c.scoreboard.retrans):
        for s, e in rs:
            assert c.snd.una <= s < e <= c.snd.nxt
    for s, e in c.scoreboard.retrans:
        assert c.scoreboard.lost.covered(s, e) == e - s
    for s, e in c.scoreboard.lost:
        assert c.scoreboard.sacked.covered(s, e) == 0
    assert c._pipe() >= 0
    assert c.cc.cwnd >= c.cc.mss
    assert c.rx.ooo.total <= c.config.ooo_bytes
    at = c.poll_at()
    assert at is None or isinstance(at, float)


def run_actions(d: SegmentDriver, actions) -> None:
    c = d.conn
    for a in actions:
        kind = a[0]
        if kind == "seg":
            c.receive_segment(build(d, a), bytes(a[5]), d.now)
        elif kind == "advance":
            d.now += a[1]
        elif kind == "send":
            try:
                c.send(b"s" * a[1])
            except OSError:
                pass
        elif kind == "recv":
            c.recv(a[1])
        elif kind == "keepalive":
            c.configure(keepalive=True, keepalive_idle=1.0, keepalive_interval=1.0)
        elif kind == "nodelay":
            c.configure(nodelay=True)
        else:
            getattr(c, kind)()
        check_invariants(c)
        for seg, payload in c.poll(d.now):
            assert 0 <= seg.seq <= MASK and 0 <= seg.ack <= MASK and 0 <= seg.window <= 0xFFFF
            wire = seg.emit(payload, CLIENT[0], SERVER[0])  # options must fit, fields must encode
            assert TcpRepr.parse(wire, CLIENT[0], SERVER[0])[0].seq == seg.seq
        check_invariants(c)
        at = c.poll_at()
        assert at is None or at > d.now, "poll left work due now: the caller would spin"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("options", [True, False], ids=["options", "plain"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(action, min_size=1, max_size=25))
def test_random_input_never_breaks_a_connection(state, options, actions):
    d = make(state, options)
    run_actions(d, actions)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), u32, u32, st.integers(0, 40)), max_size=20))
def test_random_segments_at_a_listener_child_never_raise(segs):
    lst = TcpListener(SERVER, 1, TcpConfig(), IsnGenerator(bytes(32)))
    syn = TcpRepr(CLIENT[1], SERVER[1], PEER_ISS, 0, TcpFlags.SYN, 65535)
    conn = lst.on_syn(SERVER[0], CLIENT, syn, 0.0)
    now = 0.0
    for flags, seq, ack, n in segs:
        conn.receive_segment(TcpRepr(CLIENT[1], SERVER[1], seq, ack, TcpFlags(flags), 1000), b"z" * n, now)
        now += 0.3
        conn.poll(now)
        check_invariants(conn)
    assert lst.embryonic + lst.pending <= 1


def test_blind_in_window_guessing_does_not_reset_or_inject():
    """A blind attacker spraying RSTs, SYNs and data across the window (RFC 5961)."""
    d = established_driver(TcpConfig(timestamps=False))
    c = d.conn
    for off in range(2, 262144, 997):
        d.feed("R", seq=off)
        d.feed("S", seq=off)
        d.feed("P.", seq=off, ack=10**6, data=b"evil")  # an ACK for data never sent
        d.out()
    assert c.state is S.ESTABLISHED and c.error is None
    assert c.recv(100) == b""
    assert c.stats["challenge_ack_suppressed"] > 0  # the answers were rate-limited


def test_invariants_hold_after_a_lossy_bulk_transfer():
    from stack.testing.tcp_link import LinkConfig, LinkPair

    impaired = dict(delay=0.005, loss=0.08, reorder=0.05, duplicate=0.03)
    pair = LinkPair(up=LinkConfig(**impaired), down=LinkConfig(**impaired), seed=99)
    server = pair.establish()
    data = bytes(range(256)) * 2000
    sent = 0
    got = bytearray()

    def step():
        nonlocal sent
        if sent < len(data):
            sent += pair.client.send(data[sent : sent + 8192])
        got.extend(server.recv(65536))
        check_invariants(pair.client)
        check_invariants(server)
        return len(got) == len(data)

    pair.run(step)
    assert bytes(got) == data
    assert IPv4Address("10.0.0.1") == CLIENT[0]
