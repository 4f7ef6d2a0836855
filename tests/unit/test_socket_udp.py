"""UDP sockets on two running stacks joined by a LoopbackNicPair."""
import errno
import select
import selectors
import threading
import time

import pytest

import stack
from stack import (
    Impairment,
    LoopbackNic,
    NicOffloads,
    IpAddress,
    LoopbackNicPair,
    PollEvent,
    Shutdown,
    Socket,
    SocketOption,
    SocketType,
    Stack,
    VirtualClock,
)
from stack.arp_cache import ArpCache
from stack.udp import EPHEMERAL_PORTS
from stack.wire import EthernetRepr, EtherType, Ipv4Repr
from support.tcp_sockets import Call

WAIT = 5.0  # generous bound for anything that should take milliseconds
WAIT_MS = int(WAIT * 1000)  # poll() takes milliseconds


@pytest.fixture
def nics():
    pair = LoopbackNicPair()
    yield pair
    pair.close()


@pytest.fixture
def stacks(nics):
    a = Stack(nics.a, "10.0.0.1/24").start()
    b = Stack(nics.b, "10.0.0.2/24").start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def virtual_stacks(nics, clock):
    """The two stacks on one virtual clock: time moves only when the test says so."""
    a = Stack(nics.a, "10.0.0.1/24", clock=clock).start()
    b = Stack(nics.b, "10.0.0.2/24", clock=clock).start()
    yield a, b
    a.stop()
    b.stop()


def server_on(st, port=5353):
    s = st.socket(SocketType.DATAGRAM)
    s.bind(IpAddress.parse(f"0.0.0.0:{port}"))
    s.set_timeout(WAIT)
    return s


def test_send_to_recv_from_addresses(stacks):
    a, b = stacks
    server = server_on(b)
    client = a.socket()
    client.set_timeout(WAIT)
    assert client.send_to(b"question", IpAddress.new_v4(10, 0, 0, 2, 5353)) == 8
    data, sender = server.recv_from(2048)
    assert data == b"question"
    assert sender.ip == IpAddress.parse("10.0.0.1:0").ip
    assert sender.port == client.local_address().port
    assert EPHEMERAL_PORTS[0] <= sender.port <= EPHEMERAL_PORTS[1], "implicit ephemeral bind"
    server.send_to(b"answer", sender)
    data, peer = client.recv_from(2048)
    assert (data, peer) == (b"answer", IpAddress.parse("10.0.0.2:5353"))
    for sock in (server, client):
        sock.close()


def test_recv_truncates_to_bufsize_and_accepts_string_and_tuple_addresses(stacks):
    a, b = stacks
    server = server_on(b)
    client = a.socket()
    client.send_to(b"0123456789", "10.0.0.2:5353")
    client.send_to(b"abc", ("10.0.0.2", 5353))
    assert server.recv(4) == b"0123"
    assert server.recv(100) == b"abc", "the rest of a datagram is discarded, like UDP"
    for sock in (server, client):
        sock.close()


def test_big_datagram_fragmented_over_mtu_1500(stacks):
    a, b = stacks
    server = server_on(b)
    payload = bytes(i % 251 for i in range(8000))
    with a.socket() as sender:
        sender.send_to(payload, "10.0.0.2:5353")
    assert server.recv(65535) == payload
    counters = b.counters()
    assert counters["ipv4"]["reassembled"] == 1
    assert a.counters()["ipv4"]["tx_fragments"] == 6
    assert max_frame_seen_ok(a)
    server.close()


def max_frame_seen_ok(st) -> bool:
    # The NIC drops (and counts) anything over its MTU; nothing was dropped.
    return st.counters()["nic"].get("tx_drop_oversize", 0) == 0


def test_lost_fragment_means_no_datagram(nics):
    a = Stack(nics.a, "10.0.0.1/24").start()
    b = Stack(nics.b, "10.0.0.2/24").start()
    try:
        server = server_on(b)
        client = a.socket()
        client.send_to(b"warm-up", "10.0.0.2:5353")  # resolve ARP first
        assert server.recv(100) == b"warm-up"
        frag_count = [0]

        def lose_second_fragment(frame: bytes) -> bool:
            eth, payload = EthernetRepr.parse(frame)
            if eth.ethertype != EtherType.IPV4:
                return False
            ip, _ = Ipv4Repr.parse(payload)
            if ip.is_fragment:
                frag_count[0] += 1
                return frag_count[0] == 2
            return False

        nics.a.impairment = Impairment(loss=lose_second_fragment)
        client.send_to(bytes(5000), "10.0.0.2:5353")
        client.send_to(b"after", "10.0.0.2:5353")
        assert server.recv(100) == b"after", "the incomplete datagram never shows up"
        assert b.counters()["ipv4"]["rx_fragments"] == 3
    finally:
        a.stop()
        b.stop()


def test_blocking_recv_is_woken_by_arrival(stacks):
    a, b = stacks
    server = server_on(b)
    server.set_timeout(None)
    got = []
    t = threading.Thread(target=lambda: got.append(server.recv(100)))
    t.start()
    time.sleep(0.05)  # let it block (the result is the same if it has not yet)
    with a.socket() as sender:
        sender.send_to(b"wake up", "10.0.0.2:5353")
    t.join(WAIT)
    assert not t.is_alive() and got == [b"wake up"]
    server.close()


def test_timeout(virtual_stacks, clock):
    _, b = virtual_stacks
    server = server_on(b)
    server.set_timeout(0.2)
    assert server.get_timeout() == 0.2
    start = clock.now()
    call = Call(clock, lambda: server.recv(10))
    assert clock.wait_for_sleepers(1)
    clock.advance_to(start + 0.19)
    assert not call.done(0.05), "0.19 s of a 0.2 s timeout: still waiting"
    clock.advance_to(start + 0.2)
    assert call.done()
    elapsed = call.ended_at - start
    assert 0.19 <= elapsed < WAIT
    assert elapsed == 0.2, "the timeout ends exactly at its deadline"
    assert isinstance(call.error, TimeoutError)
    assert call.error.errno == errno.ETIMEDOUT
    server.close()


def test_nonblocking(stacks):
    a, b = stacks
    server = server_on(b)
    server.set_nonblocking(True)
    with pytest.raises(BlockingIOError) as exc:
        server.recv_from(10)
    assert exc.value.errno == errno.EAGAIN
    with a.socket() as sender:
        sender.send_to(b"x", "10.0.0.2:5353")
    wait_readable(server)
    assert server.recv(10) == b"x"
    server.set_nonblocking(False)
    assert server.get_timeout() is None
    with pytest.raises(ValueError):
        server.set_timeout(-1)
    server.close()


def wait_readable(sock, timeout=WAIT):
    r, _, _ = select.select([sock], [], [], timeout)
    assert r == [sock], f"{sock!r} did not become readable within {timeout} s"


def test_select_and_selectors_follow_readiness(stacks):
    a, b = stacks
    server = server_on(b)
    assert select.select([server], [], [], 0)[0] == []
    assert select.select([], [server], [], 0)[1] == [server], "UDP is always writable"
    client = a.socket()
    client.send_to(b"one", "10.0.0.2:5353")
    client.send_to(b"two", "10.0.0.2:5353")
    with selectors.DefaultSelector() as sel:
        sel.register(server, selectors.EVENT_READ)
        assert [k.fileobj for k, _ in sel.select(WAIT)] == [server]
        assert server.recv(10) == b"one"
        deadline = time.monotonic() + WAIT
        while server.recv(10) != b"two":
            assert time.monotonic() < deadline
        assert sel.select(0) == [], "drained: no longer readable"
    for sock in (server, client):
        sock.close()


def test_stack_poll_helper(virtual_stacks, clock):
    a, b = virtual_stacks
    s1, s2 = server_on(b, 1001), server_on(b, 1002)
    assert stack.poll([s1, s2], PollEvent.READ, timeout=0) == []
    start = clock.now()
    call = Call(clock, lambda: b.poll([s1, s2], PollEvent.READ, timeout=100))
    assert clock.wait_for_sleepers(1), "poll() blocked (its deadline taken at the start time)"
    clock.advance_to(start + 0.09)
    assert not call.done(0.05), "0.09 s of a 0.1 s timeout: still waiting"
    clock.advance_to(start + 0.1)
    assert call.done() and call.error is None
    assert call.result == []
    assert call.ended_at - start >= 0.09
    with a.socket() as sender:
        sender.send_to(b"x", "10.0.0.2:1002")
    assert stack.poll([s1, s2], PollEvent.READ, timeout=WAIT_MS) == [(s2, PollEvent.READ)]
    ready = stack.poll([s1, s2], [PollEvent.WRITE, PollEvent.READ], timeout=0)
    assert ready == [(s1, PollEvent.WRITE), (s2, PollEvent.READ)]
    s1.close()
    assert stack.poll([s1], PollEvent.READ, timeout=0) == [(s1, PollEvent.INVALID)]
    with pytest.raises(ValueError):
        stack.poll([s2], [PollEvent.READ, PollEvent.READ], timeout=0)
    with pytest.raises(ValueError):
        stack.poll([], PollEvent.READ)
    for sock in (s1, s2):
        sock.close()


def test_poll_for_write_only_does_not_spin_on_queued_data(stacks):
    a, b = stacks
    server = server_on(b)
    with a.socket() as sender:
        sender.send_to(b"x", "10.0.0.2:5353")
    wait_readable(server)
    # Queued data but only ERROR asked for: poll must time out, not return.
    assert stack.poll([server], PollEvent.ERROR, timeout=50) == []
    server.close()


def test_eaddrinuse_and_reuse_addr(stacks):
    _, b = stacks
    first = server_on(b, 7000)
    with pytest.raises(OSError) as exc, b.socket() as taken:
        taken.bind("10.0.0.2:7000")
    assert exc.value.errno == errno.EADDRINUSE
    r1, r2 = b.socket(), b.socket()
    for s in (r1, r2):
        s.set_option(SocketOption.REUSE_ADDR, True)
        s.bind("0.0.0.0:7001")
    assert r1.get_option(SocketOption.REUSE_ADDR) is True
    first.close()
    with b.socket() as again:
        again.bind("0.0.0.0:7000")  # free again after close
    for sock in (first, r1, r2):
        sock.close()


def test_bind_errors(stacks):
    _, b = stacks
    s = b.socket()
    with pytest.raises(OSError) as exc:
        s.bind("10.0.0.1:53")
    assert exc.value.errno == errno.EADDRNOTAVAIL
    s.bind("0.0.0.0:0")
    assert s.local_address().port != 0
    with pytest.raises(OSError) as exc:
        s.bind("0.0.0.0:0")
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        s.bind(5353)
    with pytest.raises(ValueError):
        s.bind("not-an-address:1")
    s.close()


def test_connected_socket_gets_connection_refused(stacks):
    a, b = stacks
    client = a.socket()
    client.set_timeout(WAIT)
    client.connect("10.0.0.2:9")
    assert client.peer_address() == IpAddress.parse("10.0.0.2:9")
    assert client.local_address().ip == IpAddress.parse("10.0.0.1").ip, "connect picks the source"
    client.send(b"anyone?")
    with pytest.raises(ConnectionRefusedError):
        client.recv(100)
    assert client.take_error() is None, "reported once"
    client.send(b"again?")
    deadline = time.monotonic() + WAIT
    while (err := client.take_error()) is None:
        assert time.monotonic() < deadline, "no second ICMP port unreachable"
        time.sleep(0.01)
    assert isinstance(err, ConnectionRefusedError)
    client.send(b"third")
    wait_readable(client)
    with pytest.raises(ConnectionRefusedError):
        client.send(b"the error comes out of send too")
    client.close()


def test_connected_socket_ignores_other_senders(stacks):
    a, b = stacks
    server = server_on(b)
    server.connect("10.0.0.1:4000")
    stranger = a.socket()
    stranger.send_to(b"not you", "10.0.0.2:5353")
    friend = a.socket()
    friend.bind("0.0.0.0:4000")
    friend.send_to(b"friend", "10.0.0.2:5353")
    assert server.recv(100) == b"friend"
    assert server.send(b"reply") == 5
    friend.set_timeout(WAIT)
    assert friend.recv_from(100) == (b"reply", IpAddress.parse("10.0.0.2:5353"))
    for sock in (server, stranger, friend):
        sock.close()


def test_arp_failure_gives_ehostunreach(nics, clock):
    a = Stack(nics.a, "10.0.0.1/24", arp_cache=ArpCache(retry_interval=0.05), clock=clock).start()
    try:
        s = a.socket()
        s.set_timeout(WAIT)
        start = clock.now()
        s.send_to(b"hello?", "10.0.0.99:53")
        with clock.flowing(), pytest.raises(OSError) as exc:
            s.recv_from(100)
        assert exc.value.errno == errno.EHOSTUNREACH
        assert clock.now() - start >= 0.14, "three tries 50 ms apart"
        assert a.counters()["arp"]["tx_request"] == 3
    finally:
        a.stop()


def test_no_route_and_message_size_errors(stacks):
    a, _ = stacks
    s = a.socket()
    with pytest.raises(OSError) as exc:
        s.send_to(b"x", "192.0.2.1:53")
    assert exc.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as exc:
        s.send_to(bytes(65508), "10.0.0.2:53")
    assert exc.value.errno == errno.EMSGSIZE
    with pytest.raises(OSError) as exc:
        s.send(b"x")
    assert exc.value.errno == errno.EDESTADDRREQ
    with pytest.raises(OSError) as exc:
        s.peer_address()
    assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(PermissionError):
        s.send_to(b"x", "255.255.255.255:67")
    s.close()


def test_broadcast_with_option(stacks):
    a, b = stacks
    server = server_on(b, 67)
    s = a.socket()
    s.set_option(SocketOption.BROADCAST, True)
    s.send_to(b"discover", "255.255.255.255:67")
    assert server.recv(100) == b"discover"
    for sock in (server, s):
        sock.close()


def test_loopback_inside_one_stack(stacks):
    a, _ = stacks
    server = server_on(a, 8080)
    client = a.socket()
    client.send_to(b"local", "127.0.0.1:8080")
    client.send_to(b"own", "10.0.0.1:8080")
    assert server.recv_from(100) == (b"local", IpAddress("127.0.0.1", client.local_address().port))
    assert server.recv(100) == b"own"
    assert a.counters()["loopback"]["packets"] == 2
    for sock in (server, client):
        sock.close()


def test_options_and_ttl_on_the_wire(nics, stacks):
    a, b = stacks
    s = a.socket()
    assert s.get_option(SocketOption.TTL) == 64
    s.set_option(SocketOption.TTL, 7)
    s.set_option(SocketOption.RECEIVE_BUFFER_SIZE, 4096)
    s.set_option(SocketOption.SEND_BUFFER_SIZE, 8192)
    assert (s.get_option(SocketOption.RECEIVE_BUFFER_SIZE), s.get_option(SocketOption.SEND_BUFFER_SIZE)) == (4096, 8192)
    assert s.get_option(SocketOption.BROADCAST) is False
    for option, value in [
        (SocketOption.TTL, 0),
        (SocketOption.TTL, 256),
        (SocketOption.RECEIVE_BUFFER_SIZE, 0),
        (SocketOption.REUSE_ADDR, "yes"),
    ]:
        with pytest.raises(OSError) as exc:
            s.set_option(option, value)
        assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        s.set_option("TTL", 5)
    assert exc.value.errno == errno.ENOPROTOOPT
    seen = []
    nics.a.impairment = Impairment(loss=lambda f: seen.append(f) and False)
    server = server_on(b)
    s.send_to(b"ttl", "10.0.0.2:5353")
    assert server.recv(10) == b"ttl"
    ttls = [Ipv4Repr.parse(p)[0].ttl for e, p in map(EthernetRepr.parse, seen) if e.ethertype == EtherType.IPV4]
    assert ttls == [7]
    for sock in (s, server):
        sock.close()


def test_receive_buffer_option_limits_queue(stacks):
    a, b = stacks
    server = server_on(b)
    server.set_option(SocketOption.RECEIVE_BUFFER_SIZE, 1000)
    client = a.socket()
    client.send_to(b"warm-up", "10.0.0.2:5353")  # resolve ARP first
    assert server.recv(100) == b"warm-up"
    for i in range(20):
        client.send_to(bytes(200), "10.0.0.2:5353")
    client.send_to(b"x", "10.0.0.2:5354")  # closed port: its ICMP error is our marker
    client.connect("10.0.0.2:5354")
    client.set_timeout(WAIT)
    with pytest.raises(ConnectionRefusedError):
        client.recv(1)  # by now b has processed all 20
    server.set_nonblocking(True)
    got = 0
    while True:
        try:
            server.recv(1000)
            got += 1
        except BlockingIOError:
            break
    assert got == 4, "accepted while below 1000 bytes (200 + 64 charged each)"
    assert b.counters()["udp"]["drop.receive buffer full"] == 16
    for sock in (server, client):
        sock.close()


def test_shutdown(stacks):
    a, b = stacks
    s = a.socket()
    with pytest.raises(OSError) as exc:
        s.shutdown(Shutdown.READ)
    assert exc.value.errno == errno.ENOTCONN
    s.connect("10.0.0.2:5353")
    s.shutdown(Shutdown.READ)
    assert s.recv(10) == b"", "end of input, no blocking"
    wait_readable(s)
    s.shutdown(Shutdown.WRITE)
    with pytest.raises(BrokenPipeError):
        s.send(b"x")
    assert stack.poll([s], PollEvent.READ, 0) == [(s, PollEvent.READ | PollEvent.HANGUP)]
    with pytest.raises(ValueError):
        s.shutdown(0)
    s.close()


def test_close_wakes_blocked_receiver_with_ebadf(stacks):
    _, b = stacks
    server = server_on(b)
    server.set_timeout(None)
    errors = []

    def reader():
        try:
            server.recv(10)
        except OSError as exc:
            errors.append(exc.errno)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    server.close()
    t.join(WAIT)
    assert not t.is_alive() and errors == [errno.EBADF]
    assert server.fileno() == -1 and server.closed
    server.close()  # idempotent
    for call in (lambda: server.send_to(b"x", "10.0.0.1:1"), lambda: server.bind("0.0.0.0:1"), server.local_address):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EBADF
    server.close()


def test_context_manager_closes(stacks):
    a, _ = stacks
    with a.socket() as s:
        s.bind("0.0.0.0:6000")
    assert s.closed
    with a.socket() as again:
        again.bind("0.0.0.0:6000")


def test_many_threads_send_and_receive(stacks):
    a, b = stacks
    server = server_on(b)
    server.set_option(SocketOption.RECEIVE_BUFFER_SIZE, 1 << 20)
    # Resolve ARP first: 400 datagrams in a burst would overflow the queue of
    # packets waiting for the answer (and be dropped, as on Linux).
    with a.socket() as sender:
        sender.send_to(b"warm-up", "10.0.0.2:5353")
    assert server.recv(100) == b"warm-up"
    senders, per_sender = 4, 100
    received = []
    lock = threading.Lock()

    def receive():
        server.set_timeout(WAIT)
        while True:
            try:
                data = server.recv(100)
            except (TimeoutError, OSError):  # timed out, or closed under us (EBADF)
                return
            with lock:
                received.append(data)
                if len(received) == senders * per_sender:
                    return

    def send(n):
        with a.socket() as s:
            for i in range(per_sender):
                s.send_to(f"{n}:{i}".encode(), "10.0.0.2:5353")
                if i % 10 == 0:
                    time.sleep(0)  # interleave

    readers = [threading.Thread(target=receive) for _ in range(2)]
    writers = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(WAIT)
    deadline = time.monotonic() + WAIT
    while len(received) < senders * per_sender and time.monotonic() < deadline:
        time.sleep(0.01)
    server.close()  # releases the readers
    for t in readers:
        t.join(WAIT)
    assert sorted(received) == sorted(f"{n}:{i}".encode() for n in range(senders) for i in range(per_sender))
    server.close()


def test_protocol_must_match_the_type(stacks):
    a, _ = stacks
    with pytest.raises(OSError) as exc:
        Socket(SocketType.DATAGRAM, 6, stack=a)
    assert exc.value.errno == errno.EPROTONOSUPPORT
    with pytest.raises(TypeError):
        Socket("udp", stack=a)


def test_default_stack(stacks):
    a, b = stacks
    server = server_on(b)
    stack.set_default_stack(a)
    try:
        assert stack.get_default_stack() is a
        with Socket(SocketType.DATAGRAM) as s:
            s.send_to(b"seed style", IpAddress.new_v4(10, 0, 0, 2, 5353))
        assert server.recv(100) == b"seed style"
    finally:
        stack.set_default_stack(None)
    with pytest.raises(OSError) as exc:
        Socket(SocketType.DATAGRAM)
    assert exc.value.errno == errno.ENETDOWN
    server.close()


def test_stack_configuration_errors(nics):
    with pytest.raises(ValueError, match="prefix"):
        Stack(nics.a, "10.0.0.1")
    with pytest.raises(ValueError, match="gateway"):
        Stack(nics.a, "10.0.0.1/24", gateway="192.0.2.1")
    two = Stack(nics.a, ["10.0.0.1/24", "192.168.7.1/24"])
    assert [str(a) for a in two.iface.addresses] == ["10.0.0.1/24", "192.168.7.1/24"]
    two.stop()  # never started: releases its wake-up pipe


def test_stop_closes_sockets_and_refuses_new_ones(nics):
    a = Stack(nics.a, "10.0.0.1/24")
    s = a.socket()
    s.bind("0.0.0.0:53")  # binding before start is fine
    with a:
        assert a.running
    assert s.closed and not a.running
    with pytest.raises(OSError) as exc:
        a.socket()
    assert exc.value.errno == errno.ENETDOWN
    with pytest.raises(OSError):
        a.start()
    a.stop()  # idempotent
    s.close()


def test_stack_thread_failure_is_reported_to_sockets(nics):
    class BrokenNic(type(nics.a)):
        broken = False

        def receive(self, max=64):
            if self.broken:
                raise RuntimeError("device fell off the bus")
            return super().receive(max)

    broken = BrokenNic(nics.a.mac)
    nics.b.peer, broken.peer = broken, nics.b
    a = Stack(broken, "10.0.0.1/24").start()
    b = Stack(nics.b, "10.0.0.2/24").start()
    try:
        s = a.socket()
        s.bind("0.0.0.0:53")
        s.set_timeout(WAIT)
        broken.broken = True
        with b.socket() as sender:
            sender.send_to(b"x", "10.0.0.1:53")  # b's ARP request wakes a's thread
        with pytest.raises(OSError) as exc:
            s.recv(10)
        assert exc.value.errno == errno.ENETDOWN
        assert isinstance(a.failure, RuntimeError)
        for call in (lambda: s.send_to(b"x", "10.0.0.2:53"), a.socket):
            with pytest.raises(OSError) as exc:
                call()
            assert exc.value.errno == errno.ENETDOWN
    finally:
        a.stop()
        b.stop()
        broken.close()
    s.close()


def test_checksum_offload_end_to_end():
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM | NicOffloads.RX_CSUM_TRUSTED)
    with Stack(pair.a, "10.0.0.1/24") as a, Stack(pair.b, "10.0.0.2/24") as b:
        assert a.iface.tx_csum_offload
        server = server_on(b)
        with a.socket() as sender:
            sender.send_to(b"small", "10.0.0.2:5353")
        with a.socket() as sender:
            sender.send_to(bytes(3000), "10.0.0.2:5353")  # fragmented: checksummed in software
        assert server.recv(10) == b"small"
        assert server.recv(4000) == bytes(3000)
    pair.close()
    server.close()


def test_nic_without_descriptor_is_polled():
    class QuietNic(LoopbackNic):
        def fileno(self):
            return None

    pair = LoopbackNicPair()
    quiet = QuietNic(pair.b.mac)
    pair.a.peer, quiet.peer = quiet, pair.a
    with Stack(pair.a, "10.0.0.1/24") as a, Stack(quiet, "10.0.0.2/24") as b:
        server = server_on(b)
        with a.socket() as sender:
            sender.send_to(b"polled", "10.0.0.2:5353")
        assert server.recv(10) == b"polled"
    pair.close()
    quiet.close()
    server.close()
