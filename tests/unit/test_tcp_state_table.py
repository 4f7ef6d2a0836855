"""The state machine of RFC 9293 figure 5 as data (stack.tcp.state), and the engine following it."""
import pytest

from stack.tcp.connection import TcpConnection
from stack.tcp.state import AFTER_CLOSE, AFTER_FIN, AFTER_FIN_ACKED, TRANSITIONS, TcpState
from stack.tcp.testing import active_driver, established_driver

S = TcpState


@pytest.fixture
def moves(monkeypatch):
    """Every state change a connection makes, as (from, to) pairs."""
    seen = []
    set_state = TcpConnection._set_state

    def recording(conn, st):
        seen.append((conn.state, st))
        set_state(conn, st)

    monkeypatch.setattr(TcpConnection, "_set_state", recording)
    return seen


def test_the_tables_are_figure_5():
    assert AFTER_CLOSE == {S.ESTABLISHED: S.FIN_WAIT_1, S.CLOSE_WAIT: S.LAST_ACK}
    assert AFTER_FIN[S.ESTABLISHED] is S.CLOSE_WAIT and AFTER_FIN[S.FIN_WAIT_1] is S.CLOSING
    assert AFTER_FIN[S.FIN_WAIT_2] is S.TIME_WAIT
    assert AFTER_FIN_ACKED == {S.FIN_WAIT_1: S.FIN_WAIT_2, S.CLOSING: S.TIME_WAIT, S.LAST_ACK: S.CLOSED}
    assert all((s, S.CLOSED) in TRANSITIONS for s in S)
    assert (S.TIME_WAIT, S.ESTABLISHED) not in TRANSITIONS and (S.LISTEN, S.SYN_SENT) not in TRANSITIONS


def test_active_close(moves):
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed(".", seq=1, ack=2)
    d.feed("F.", seq=1, ack=2)
    d.advance(61)
    assert moves == [
        (S.SYN_SENT, S.ESTABLISHED),
        (S.ESTABLISHED, S.FIN_WAIT_1),
        (S.FIN_WAIT_1, S.FIN_WAIT_2),
        (S.FIN_WAIT_2, S.TIME_WAIT),
        (S.TIME_WAIT, S.CLOSED),
    ]
    assert set(moves) <= TRANSITIONS


def test_passive_close(moves):
    d = established_driver()
    d.feed("F.", seq=1, ack=1)
    d.conn.close()
    d.out()
    d.feed(".", seq=2, ack=2)
    assert moves[1:] == [(S.ESTABLISHED, S.CLOSE_WAIT), (S.CLOSE_WAIT, S.LAST_ACK), (S.LAST_ACK, S.CLOSED)]
    assert set(moves) <= TRANSITIONS


def test_simultaneous_close_and_fin_with_the_ack_of_ours(moves):
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=1)  # the peer's FIN crossed ours
    d.feed(".", seq=2, ack=2)
    assert moves[1:] == [(S.ESTABLISHED, S.FIN_WAIT_1), (S.FIN_WAIT_1, S.CLOSING), (S.CLOSING, S.TIME_WAIT)]
    moves.clear()
    d = established_driver()
    d.conn.close()
    d.out()
    d.feed("F.", seq=1, ack=2)  # the peer's FIN acknowledges ours
    assert moves[1:] == [(S.ESTABLISHED, S.FIN_WAIT_1), (S.FIN_WAIT_1, S.FIN_WAIT_2), (S.FIN_WAIT_2, S.TIME_WAIT)]
    assert set(moves) <= TRANSITIONS


def test_simultaneous_open_and_reset(moves):
    d = active_driver()
    d.out()
    d.feed("S", seq=0)
    d.out()
    d.feed("S.", seq=0, ack=1)
    d.feed("R", seq=1)
    assert moves == [(S.SYN_SENT, S.SYN_RECEIVED), (S.SYN_RECEIVED, S.ESTABLISHED), (S.ESTABLISHED, S.CLOSED)]
    assert set(moves) <= TRANSITIONS
