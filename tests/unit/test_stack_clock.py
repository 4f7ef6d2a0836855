"""The stack's clocks: a VirtualClock moves only when told, and wakes whoever waits on it."""
import errno
import threading
import time

import pytest

from stack import LoopbackNicPair, MonotonicClock, SocketOption, Stack, VirtualClock
from support.tcp_sockets import Call


def test_virtual_time_moves_only_when_advanced():
    clock = VirtualClock(10.0)
    assert clock.now() == 10.0 == clock.now()
    clock.advance(0.5)
    clock.advance_to(12.0)
    assert clock.now() == 12.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.advance_to(11.0)


def test_a_waiter_wakes_at_its_deadline_and_not_before():
    clock = VirtualClock()
    cond = threading.Condition()

    def wait_until_two():
        with cond:
            while clock.now() < 2.0:
                clock.wait(cond, 2.0)

    call = Call(clock, wait_until_two)
    assert clock.wait_for_sleepers(1)
    clock.advance(1.999)
    assert not call.done(0.05), "1.999 s: still waiting"
    clock.advance_to(2.0)
    assert call.done() and call.ended_at == 2.0
    assert clock.sleepers == 0


def test_a_notify_wakes_a_waiter_without_time_passing():
    clock = VirtualClock()
    cond = threading.Condition()
    flag = []

    def wait_for_flag():
        with cond:
            while not flag:
                clock.wait(cond, None)

    call = Call(clock, wait_for_flag)
    assert clock.wait_for_sleepers(1)
    with cond:
        flag.append(1)
        cond.notify_all()
    assert call.done() and call.ended_at == 0.0


def test_a_past_deadline_does_not_wait():
    clock = VirtualClock(5.0)
    cond = threading.Condition()
    with cond:
        clock.wait(cond, 5.0)  # returns at once: nothing to wait for
    assert clock.sleepers == 0


def test_the_monotonic_clock_waits_in_real_time():
    clock = MonotonicClock()
    cond = threading.Condition()
    start = clock.now()
    with cond:
        clock.wait(cond, start + 0.01)
    assert clock.now() > start and clock.timeout(None) is None and clock.timeout(start) == 0.0


@pytest.fixture
def virtual_stacks():
    clock = VirtualClock()
    nics = LoopbackNicPair()
    a = Stack(nics.a, "10.0.0.1/24", clock=clock).start()
    b = Stack(nics.b, "10.0.0.2/24", clock=clock).start()
    yield clock, a, b
    a.stop()
    b.stop()
    nics.close()


def test_a_recv_timeout_ends_exactly_at_its_virtual_deadline(virtual_stacks):
    clock, a, _ = virtual_stacks
    sock = a.socket()
    sock.bind("0.0.0.0:5353")
    sock.set_timeout(2.0)
    call = Call(clock, lambda: sock.recv(100))
    assert clock.wait_for_sleepers(1)
    clock.advance(1.5)
    assert not call.done(0.05), "1.5 s of a 2 s timeout: still waiting"
    clock.advance_to(2.0)
    assert call.done()
    assert isinstance(call.error, TimeoutError) and call.error.errno == errno.ETIMEDOUT
    assert call.ended_at == 2.0


def test_a_blocked_recv_returns_when_the_datagram_comes(virtual_stacks):
    clock, a, b = virtual_stacks
    server = b.socket()
    server.bind("0.0.0.0:5353")
    server.set_timeout(2.0)
    call = Call(clock, lambda: server.recv(100))
    assert clock.wait_for_sleepers(1)
    with a.socket() as client:
        client.send_to(b"now", "10.0.0.2:5353")
    assert call.done() and call.result == b"now" and call.ended_at == 0.0
    server.close()


def test_settle_waits_for_the_stack_threads_and_flowing_time_fires_their_timers(virtual_stacks):
    clock, a, _ = virtual_stacks
    clock.advance(1.0)
    assert clock.settle(), "both stack threads looked at t=1.0"
    sock = a.socket()
    sock.set_timeout(10.0)
    sock.send_to(b"anyone?", "10.0.0.99:53")  # ARP: three tries 1 s apart, then EHOSTUNREACH
    with clock.flowing():
        with pytest.raises(OSError) as exc:
            sock.recv(100)
    assert exc.value.errno == errno.EHOSTUNREACH
    assert 4.0 <= clock.now() < 11.0, "ARP gave up after 3 s of virtual time, before the recv timeout"
    assert a.counters()["arp"]["tx_request"] == 3


def test_settle_waits_until_what_one_stack_sent_the_other_has_answered(virtual_stacks):
    clock, a, _ = virtual_stacks
    sock = a.socket()
    sock.connect("10.0.0.2:9")
    sock.send(b"closed port")  # ARP, the datagram, then an ICMP port unreachable
    assert clock.settle(), "both stacks quiet at t=0"
    assert sock.get_option(SocketOption.ERROR) == errno.ECONNREFUSED, "the answer was taken in at t=0"
    assert clock.now() == 0.0
    sock.close()


def test_pass_time_fires_each_timer_at_its_time(virtual_stacks):
    clock, a, _ = virtual_stacks
    sock = a.socket()
    sock.send_to(b"anyone?", "10.0.0.99:53")  # ARP: tries at 0, 1 and 2 s, gives up at 3 s
    clock.pass_time(2.5)
    assert clock.now() == 2.5 and a.counters()["arp"]["tx_request"] == 3
    assert sock.get_option(SocketOption.ERROR) == 0, "2.5 s: still trying"
    clock.pass_time(0.5)
    assert sock.get_option(SocketOption.ERROR) == errno.EHOSTUNREACH, "3 s: given up"
    sock.close()


def test_flowing_time_stops_when_the_blocking_call_returns(virtual_stacks):
    clock, a, _ = virtual_stacks
    sock = a.socket()
    sock.bind("0.0.0.0:5353")
    sock.set_timeout(1.0)
    with clock.flowing():
        with pytest.raises(TimeoutError):
            sock.recv(100)
        ended = clock.now()
        time.sleep(0.05)  # not a synchronisation: real time that must not turn into virtual time
        assert clock.now() == ended == 1.0, "time moves only while the block's thread is blocked on the clock"
    sock.close()


def test_runtimes_that_never_get_quiet_are_a_clear_failure():
    clock = VirtualClock()
    clock.attach(lambda: None, lambda: True)  # a runtime that always has input waiting
    clock.idle(lambda: None, 0.0)
    assert not clock.settle(limit=0.05)
    with pytest.raises(RuntimeError, match="not quiet within 0.05 s"):
        clock.pass_time(1.0, limit=0.05)
    cond = threading.Condition()
    with pytest.raises(RuntimeError, match="not quiet within 0.05 s"):
        with clock.flowing(limit=0.05), cond:
            clock.wait(cond, 0.1)  # time still goes on: the call is not left hanging
    assert clock.now() > 0.0
