"""Run-to-completion: a caller blocked on a socket drives the stack's NIC itself.

The stack under test ("a") runs on a VirtualClock that no test moves, so its
own thread has no timer to run and nothing wakes it but input on the NIC,
which it stops watching while a caller drives: every frame that reaches a
blocked caller must then have been taken in on a caller's thread. The peer
("b") runs on the monotonic clock. Every wait is bounded and says what it
waited for; nothing asserts on timing.
"""
import errno
import threading

import pytest

from stack import LoopbackNic, LoopbackNicPair, SocketType, Stack, VirtualClock
from support.waiting import wait_for

WAIT = 5.0


class RecordingNic(LoopbackNic):
    """A loopback NIC that records which thread took each received frame in."""

    def __init__(self, mac):
        super().__init__(mac)
        self.takers: list[str] = []

    def receive(self, max=64):
        frames = super().receive(max)
        self.takers += [threading.current_thread().name] * len(frames)
        return frames


@pytest.fixture
def pair():
    nics = LoopbackNicPair()
    recording = RecordingNic(nics.a.mac)
    nics.b.peer, recording.peer = recording, nics.b
    clock = VirtualClock()
    a = Stack(recording, "10.0.0.1/24", clock=clock).start()
    b = Stack(nics.b, "10.0.0.2/24").start()
    yield a, b, recording, clock
    a.stop()
    b.stop()
    recording.close()
    nics.close()


def bound(st, port, timeout=WAIT):
    s = st.socket()
    s.bind(f"0.0.0.0:{port}")
    s.set_timeout(timeout)
    return s


def start(name, target):
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def test_a_blocked_recv_takes_its_reply_in_itself(pair):
    a, b, nic, clock = pair
    sock = bound(a, 7000)
    got = {}
    reader = start("reader", lambda: got.update(data=sock.recv_from(100)))
    assert clock.wait_for_sleepers(1), "the reader never blocked"
    wait_for(lambda: a._drive.busy, "the blocked reader to drive the NIC")
    nic.takers.clear()  # (b's gratuitous ARP at its start may have come in before)
    with b.socket() as sender:
        sender.send_to(b"ping", "10.0.0.1:7000")
    reader.join(WAIT)
    assert not reader.is_alive(), "the blocked recv never got the datagram"
    sock.close()
    assert got["data"][0] == b"ping"
    # b's ARP request, then the datagram: all taken in by the reader, none by the stack's thread.
    assert nic.takers and set(nic.takers) == {"reader"}, f"frames taken in by {nic.takers}"


def test_many_threads_blocked_at_once_each_get_their_own(pair):
    a, b, nic, clock = pair
    count = 8
    socks = [bound(a, 7100 + i) for i in range(count)]
    got: dict[int, object] = {}

    def reader(i):
        try:
            got[i] = socks[i].recv(100)
        except OSError as exc:
            got[i] = exc

    threads = [start(f"reader-{i}", lambda i=i: reader(i)) for i in range(count)]
    assert clock.wait_for_sleepers(count), f"only {clock.sleepers} of {count} readers blocked"
    wait_for(lambda: a._drive.busy, "one reader to drive the NIC")
    nic.takers.clear()  # (b's gratuitous ARP at its start may have come in before)
    sender = b.socket()
    for i in reversed(range(count)):
        sender.send_to(f"to {i}".encode(), f"10.0.0.1:{7100 + i}")
    for t in threads:
        t.join(WAIT)
    assert not [t.name for t in threads if t.is_alive()], f"readers still blocked; got {got}"
    for sock in [sender, *socks]:
        sock.close()
    assert got == {i: f"to {i}".encode() for i in range(count)}
    assert nic.takers and all(n.startswith("reader-") for n in nic.takers), f"frames taken in by {nic.takers}"


def test_the_drive_passes_on_when_its_caller_is_served(pair):
    a, b, nic, clock = pair
    first, second = bound(a, 7200), bound(a, 7201)
    got = {}
    t1 = start("first", lambda: got.update(first=first.recv(100)))
    wait_for(lambda: a._drive.busy, "the first reader to drive")
    t2 = start("second", lambda: got.update(second=second.recv(100)))
    assert clock.wait_for_sleepers(2), "the second reader never blocked"
    sender = b.socket()
    sender.send_to(b"one", "10.0.0.1:7200")
    t1.join(WAIT)
    assert not t1.is_alive() and got["first"] == b"one"
    # Nobody drives now: the second reader sleeps on its condition, the thread has the NIC back.
    sender.send_to(b"two", "10.0.0.1:7201")
    t2.join(WAIT)
    assert not t2.is_alive(), "the second reader was not served after the driver left"
    for sock in (sender, first, second):
        sock.close()
    assert got["second"] == b"two"


@pytest.mark.parametrize("kind", [SocketType.DATAGRAM, SocketType.STREAM])
def test_close_from_another_thread_wakes_the_driving_caller(pair, kind):
    a, b, nic, clock = pair
    sock = a.socket(kind)
    if kind is SocketType.STREAM:
        sock.bind("0.0.0.0:7300")
        sock.listen()
        call = sock.accept
    else:
        sock.bind("0.0.0.0:7300")
        call = lambda: sock.recv(100)  # noqa: E731
    sock.set_timeout(None)
    errors = []

    def blocked():
        try:
            call()
        except OSError as exc:
            errors.append(exc.errno)

    t = start("blocked", blocked)
    wait_for(lambda: a._drive.busy, "the blocked call to drive the NIC")
    sock.close()
    t.join(WAIT)
    assert not t.is_alive(), "close() did not wake the caller that drove the NIC"
    assert errors == [errno.EBADF]
    assert not a._drive.busy, "the drive was not given back"


def test_stop_while_a_caller_drives(pair):
    a, b, nic, clock = pair
    sock = bound(a, 7400, timeout=None)
    errors = []

    def blocked():
        try:
            sock.recv(100)
        except OSError as exc:
            errors.append(exc.errno)

    t = start("blocked", blocked)
    wait_for(lambda: a._drive.busy, "the blocked recv to drive the NIC")
    a.stop()
    t.join(WAIT)
    assert not t.is_alive(), "stop() did not wake the caller that drove the NIC"
    assert errors == [errno.EBADF]
    assert a._drive.closed, "the drive's descriptors outlived the stack"


def test_a_nic_failure_on_the_driving_thread_reaches_every_socket(pair):
    a, b, nic, clock = pair
    driver, waiter = bound(a, 7500), bound(a, 7501)
    errors = {}

    def blocked(name, sock):
        try:
            sock.recv(100)
        except OSError as exc:
            errors[name] = exc.errno

    t1 = start("driver", lambda: blocked("driver", driver))
    wait_for(lambda: a._drive.busy, "the first reader to drive")
    t2 = start("waiter", lambda: blocked("waiter", waiter))
    assert clock.wait_for_sleepers(2), "the second reader never blocked"

    def broken(max=64):
        raise RuntimeError("device fell off the bus")

    nic.receive = broken
    with b.socket() as sender:
        sender.send_to(b"x", "10.0.0.1:7500")  # input: the driver's receive now fails
    for t in (t1, t2):
        t.join(WAIT)
    driver.close()
    waiter.close()
    assert not t1.is_alive() and not t2.is_alive(), f"callers still blocked; errors {errors}"
    assert errors == {"driver": errno.ENETDOWN, "waiter": errno.ENETDOWN}
    assert isinstance(a.failure, RuntimeError)


def test_a_descriptor_asked_for_late_shows_what_came_before(pair):
    """Readiness descriptors are kept up to date only once fileno() was asked for
    (a socket used with blocking calls alone costs no system calls): the first
    fileno() must show what is already there."""
    import select

    a, b, nic, clock = pair
    sock = bound(a, 7600)
    assert select.select([sock], [], [], 0)[0] == [], "readable with nothing queued"
    quiet = bound(a, 7601)
    with b.socket() as sender:
        sender.send_to(b"early", "10.0.0.1:7601")
    wait_for(lambda: a.counters().get("udp", {}).get("rx", 0) >= 1, "the datagram to arrive")
    assert select.select([quiet], [], [], 0)[0] == [quiet], "data that came before fileno() was not shown"
    assert quiet.recv(100) == b"early"
    assert select.select([quiet], [], [], 0)[0] == [], "still readable after the queue emptied"
    sock.close()
    quiet.close()
