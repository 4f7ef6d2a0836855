"""Public TCP snapshots: Socket.tcp_info() (connections and listeners), Stack.connections(),
Stack.tcp_listeners(), and their errors."""
import dataclasses
import errno
import threading
from ipaddress import IPv4Address

import pytest

from stack import Impairment, LoopbackNicPair, Shutdown, SocketType, Stack
from stack.tcp import TcpConfig, TcpInfo, TcpState
from stack.tcp.listener import ListenerInfo
from support.tcp_sockets import WAIT, listener, tcp_of
from support.waiting import wait_for

FAST = TcpConfig(initial_rto=0.2, syn_retries=3, time_wait=1.0)
A, B = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")


@pytest.fixture
def nics():
    pair = LoopbackNicPair()
    yield pair
    pair.close()


@pytest.fixture
def stacks(nics):
    a = Stack(nics.a, "10.0.0.1/24", tcp_config=FAST).start()
    b = Stack(nics.b, "10.0.0.2/24", tcp_config=FAST).start()
    yield a, b
    a.stop()
    b.stop()


def connect(st, port=7, local=None):
    c = st.socket(SocketType.STREAM)
    c.set_timeout(WAIT)
    if local is not None:
        c.bind(local)
    c.connect(("10.0.0.2", port))
    return c


def test_a_connections_snapshot_carries_the_engines_counters(stacks, nics):
    a, b = stacks
    lst = listener(b)
    client = connect(a)
    server, _ = lst.accept()
    server.set_timeout(WAIT)
    dropped = []

    def drop_first_data(frame):  # lose the first data segment once: one retransmission
        parsed = tcp_of(frame)
        if parsed is not None and parsed[2] and not dropped:
            dropped.append(frame)
            return True
        return False

    nics.a.impairment = Impairment(loss=drop_first_data)
    client.sendall(b"x" * 1000)
    got = b""
    while len(got) < 1000:
        got += server.recv(1000)
    wait_for(lambda: client.tcp_info().send_queue == 0, "everything acknowledged")

    info = client.tcp_info()
    assert isinstance(info, TcpInfo) and dropped
    assert info.state is TcpState.ESTABLISHED and info.state.name == "ESTABLISHED"
    assert info.local == (A, client.local_address().port) and info.remote == (B, 7)
    assert (info.send_queue, info.recv_queue, info.bytes_sent) == (0, 0, 1000)
    assert info.cwnd > 0 and info.srtt is not None
    assert info.retransmits >= 1 and info.counters["retransmits"] == info.retransmits, info.counters
    assert server.tcp_info().bytes_received == 1000

    # A snapshot: changing it changes nothing, and the next one is fresh.
    info.counters["retransmits"] = 999
    assert client.tcp_info().counters["retransmits"] == info.retransmits
    hash(info)  # still a hashable frozen snapshot (counters are left out of the hash)

    # The stack's table holds the same snapshot for the same connection.
    (listed,) = [i for i in a.connections() if i.local == info.local]
    assert (listed.state, listed.remote, listed.counters) == (info.state, info.remote, client.tcp_info().counters)
    for s in (client, server, lst):
        s.close()


def test_a_listeners_snapshot_counts_its_queues_and_syn_cookies(stacks, nics):
    a, b = stacks
    b.iface.tcp.max_syn_backlog = 1  # one half-open connection fills the SYN queue
    # ...and stays there: 0.2 s doubling 10 times is minutes, even on a loaded machine.
    b.iface.tcp.config = dataclasses.replace(b.iface.tcp.config, synack_retries=10)
    lst = listener(b, backlog=4)
    info = lst.tcp_info()
    assert isinstance(info, ListenerInfo) and info.state is TcpState.LISTEN
    assert (info.local, info.backlog, info.pending, info.embryonic, info.max_syn_backlog) == ((IPv4Address(0), 7), 4, 0, 0, 1)
    assert info.counters == {}

    # The first client's final ACK is lost (always), so its connection stays in the SYN queue...
    def drop_pure_acks_from_40001(frame):
        parsed = tcp_of(frame)
        return parsed is not None and parsed[1].src_port == 40001 and int(parsed[1].flags) == 0x10 and not parsed[2]

    nics.a.impairment = Impairment(loss=drop_pure_acks_from_40001)
    # (Both clients are kept: a socket dropped by its user is closed when collected.)
    first = connect(a, local="10.0.0.1:40001")
    wait_for(lambda: lst.tcp_info().embryonic == 1, "a half-open connection")
    # ...and the second one, meeting a full SYN queue, gets in by SYN cookie.
    second = connect(a, local="10.0.0.1:40002")
    wait_for(lambda: lst.tcp_info().pending == 1, "the cookie connection in the accept queue")

    (listed,) = b.tcp_listeners()
    for info in (lst.tcp_info(), listed):  # the socket's and the stack's views agree
        assert (info.state, info.local, info.backlog, info.pending, info.embryonic) == \
            (TcpState.LISTEN, (IPv4Address(0), 7), 4, 1, 1)
        for name, value in {"syn_received": 1, "syn_drop_syn_queue_full": 1, "syn_cookies_sent": 1,
                            "cookie_established": 1}.items():
            assert info.counters.get(name) == value, (name, info.counters)

    conn, _ = lst.accept()
    assert conn.tcp_info().counters.get("from_syn_cookie") == 1
    after = lst.tcp_info()
    assert after.pending == 0 and after.counters["accepted"] == 1

    lst.shutdown(Shutdown.READ)  # no longer listening: the counters stay readable
    closed = lst.tcp_info()
    assert closed.state is TcpState.CLOSED and closed.counters["accepted"] == 1 and closed.embryonic == 0
    for s in (conn, first, second, lst):
        s.close()


def test_tcp_info_errors(stacks):
    a, b = stacks
    fresh = a.socket(SocketType.STREAM)
    with pytest.raises(OSError) as exc:
        fresh.tcp_info()
    assert exc.value.errno == errno.ENOTCONN
    fresh.bind("0.0.0.0:0")
    with pytest.raises(OSError) as exc:
        fresh.tcp_info()
    assert exc.value.errno == errno.ENOTCONN, "bound, not connected"

    refused = a.socket(SocketType.STREAM)
    refused.set_timeout(WAIT)
    with pytest.raises(ConnectionRefusedError):
        refused.connect("10.0.0.2:9")  # nobody listens there
    with pytest.raises(OSError) as exc:
        refused.tcp_info()
    assert exc.value.errno == errno.ENOTCONN, "the failed attempt was reported and forgotten"

    udp = a.socket(SocketType.DATAGRAM)
    with pytest.raises(OSError) as exc:
        udp.tcp_info()
    assert exc.value.errno == errno.ENOPROTOOPT, "not a TCP socket"

    lst = listener(b)
    for sock in (fresh, udp, lst):
        sock.close()
        with pytest.raises(OSError) as exc:
            sock.tcp_info()
        assert exc.value.errno == errno.EBADF


def test_snapshots_can_be_taken_from_another_thread_while_data_flows(stacks):
    a, b = stacks
    lst = listener(b)
    client = connect(a)
    server, _ = lst.accept()
    server.set_timeout(WAIT)
    size = 1_000_000
    done = threading.Event()
    seen = []
    errors = []

    def watch():
        try:
            while not done.is_set():
                seen.append(client.tcp_info().bytes_acked)
                server.tcp_info()
                a.connections()
                b.tcp_listeners()
        except Exception as exc:  # reported below: a snapshot must never fail mid-transfer
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sender = threading.Thread(target=client.sendall, args=(bytes(size),))
        sender.start()
        got = 0
        while got < size:
            got += len(server.recv(65536))
        sender.join(WAIT)
        wait_for(lambda: client.tcp_info().bytes_acked == size, "everything acknowledged")
    finally:
        done.set()
        watcher.join(WAIT)
    assert errors == []
    assert len(seen) > 1 and seen == sorted(seen), "bytes_acked only grows"
    for s in (client, server, lst):
        s.close()
