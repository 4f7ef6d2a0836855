"""poll() and Poller.poll() take their timeout in milliseconds, as poll(2) and select.poll:
None or negative waits forever, 0 looks once (on a virtual clock: no real waiting)."""
import pytest

from stack import LoopbackNicPair, PollEvent, SocketType, Stack, VirtualClock
from stack.socket_api import Poller, poll
from support.tcp_sockets import WAIT_MS, Call


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def stacks(clock):
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24", clock=clock).start()
    b = Stack(pair.b, "10.0.0.2/24", clock=clock).start()
    yield a, b
    a.stop()
    b.stop()
    pair.close()


def _udp_server(st, port=5353):
    s = st.socket(SocketType.DATAGRAM)
    s.bind(("0.0.0.0", port))
    return s


def _poll_with_poller(sock, timeout):
    p = Poller()
    p.register(sock, PollEvent.READ)
    try:
        return p.poll(timeout)
    finally:
        p.close()


@pytest.mark.parametrize("wait", [lambda s, t: poll([s], PollEvent.READ, t), _poll_with_poller],
                         ids=["poll", "Poller.poll"])
def test_the_timeout_is_in_milliseconds(stacks, clock, wait):
    _, b = stacks
    server = _udp_server(b)
    start = clock.now()
    call = Call(clock, lambda: wait(server, 250))
    assert clock.wait_for_sleepers(1), "the poll did not block"
    clock.advance_to(start + 0.2)
    assert not call.done(0.05), "200 ms of a 250 ms timeout: still waiting"
    clock.advance_to(start + 0.25)
    assert call.done(), "250 ms of a 250 ms timeout: it ran out"
    assert call.error is None and call.result == []
    assert 0.2 <= call.ended_at - start < 1.0, "250 means 250 ms, not 250 s"
    server.close()


@pytest.mark.parametrize("forever", [None, -1, -0.5])
@pytest.mark.parametrize("wait", [lambda s, t: poll([s], PollEvent.READ, t), _poll_with_poller],
                         ids=["poll", "Poller.poll"])
def test_none_or_negative_waits_forever(stacks, clock, wait, forever):
    a, b = stacks
    server = _udp_server(b)
    start = clock.now()
    call = Call(clock, lambda: wait(server, forever))
    assert clock.wait_for_sleepers(1), "the poll did not block"
    clock.advance_to(start + 3600)
    assert not call.done(0.05), f"timeout={forever!r} gave up after an hour"
    with a.socket() as client:
        client.send_to(b"x", "10.0.0.2:5353")
    assert call.done(), "the datagram did not end the wait"
    assert call.error is None and call.result == [(server, PollEvent.READ)]
    server.close()


def test_zero_looks_once_and_a_bad_timeout_is_refused(stacks):
    _, b = stacks
    server = _udp_server(b)
    assert poll([server], PollEvent.READ, 0) == []
    assert _poll_with_poller(server, 0) == []
    for bad in ("10", True, float("nan")):
        with pytest.raises(TypeError, match="milliseconds"):
            poll([server], PollEvent.READ, bad)
        with pytest.raises(TypeError, match="milliseconds"):
            _poll_with_poller(server, bad)
    assert poll([], PollEvent.READ, 0) == []
    with pytest.raises(ValueError, match="forever"):
        poll([], PollEvent.READ, -1)
    server.close()


def test_a_generous_bound_still_returns_at_once_when_ready(stacks):
    a, b = stacks
    server = _udp_server(b)
    with a.socket() as client:
        client.send_to(b"x", "10.0.0.2:5353")
    assert poll([server], PollEvent.READ, WAIT_MS) == [(server, PollEvent.READ)]
    server.close()
