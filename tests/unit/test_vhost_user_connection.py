"""Message framing over a unix socket: partial reads, fds, EOF, garbage."""
import os
import socket
import struct

import pytest

from nicdev.vhost_user.connection import Connection, ConnectionClosed
from nicdev.vhost_user.messages import MemoryTable, Message, ProtocolError, VringFile
from nicdev.vhost_user.protocol import FLAG_REPLY, VERSION, Request


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.setblocking(False)
    yield a, Connection(b)
    a.close()
    b.close()


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def fd_is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_whole_message_with_fds(pair):
    peer, conn = pair
    r, w = os.pipe()
    msg = Message(Request.SET_VRING_KICK, VERSION, VringFile(1), [r])
    socket.send_fds(peer, [msg.encode()], [r])
    got = conn.read_message()
    assert got.request == Request.SET_VRING_KICK and got.payload == VringFile(1)
    assert len(got.fds) == 1 and got.fds[0] != r
    os.write(w, b"x")
    assert os.read(got.fds[0], 1) == b"x"          # really the same pipe
    for fd in (r, w, *got.fds):
        os.close(fd)


def test_byte_by_byte_arrival(pair):
    peer, conn = pair
    memfd = os.memfd_create("t")
    os.ftruncate(memfd, 4096)
    data = Message(Request.SET_MEM_TABLE, VERSION, MemoryTable([(0, 4096, 0x10000, 0)]), [memfd]).encode()
    socket.send_fds(peer, [data[:1]], [memfd])      # the fds come with the first byte
    assert conn.read_message() is None
    for i in range(1, len(data)):
        peer.send(data[i:i + 1])
        got = conn.read_message()
        assert (got is None) == (i < len(data) - 1)
    assert got.payload == MemoryTable([(0, 4096, 0x10000, 0)]) and len(got.fds) == 1
    os.close(got.fds[0])
    os.close(memfd)


def test_back_to_back_messages_keep_their_own_fds(pair):
    peer, conn = pair
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    socket.send_fds(peer, [Message(Request.SET_VRING_CALL, VERSION, VringFile(0), [w1]).encode()], [w1])
    peer.send(Message(Request.GET_FEATURES).encode())
    socket.send_fds(peer, [Message(Request.SET_VRING_CALL, VERSION, VringFile(1), [w2]).encode()], [w2])
    first, second, third = conn.read_message(), conn.read_message(), conn.read_message()
    assert conn.read_message() is None
    assert (first.payload.index, len(first.fds)) == (0, 1)
    assert second.request == Request.GET_FEATURES and second.fds == []
    assert (third.payload.index, len(third.fds)) == (1, 1)
    os.write(third.fds[0], b"2")
    assert os.read(r2, 1) == b"2"
    for fd in (r1, w1, r2, w2, *first.fds, *third.fds):
        os.close(fd)


def test_clean_eof(pair):
    peer, conn = pair
    peer.close()
    with pytest.raises(ConnectionClosed, match="peer closed the connection$"):
        conn.read_message()


def test_eof_mid_message_closes_its_fds(pair):
    peer, conn = pair
    r, w = os.pipe()
    data = Message(Request.SET_VRING_KICK, VERSION, VringFile(0), [r]).encode()
    socket.send_fds(peer, [data[:14]], [r])
    assert conn.read_message() is None
    received = list(conn._fds)
    peer.close()
    with pytest.raises(ConnectionClosed, match="middle of a message"):
        conn.read_message()
    assert received and not any(fd_is_open(fd) for fd in received)
    os.close(r)
    os.close(w)


def test_garbage_header_is_a_protocol_error(pair):
    peer, conn = pair
    peer.send(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProtocolError, match="version|unknown"):
        conn.read_message()


def test_oversized_payload_is_refused_from_the_header(pair):
    peer, conn = pair
    peer.send(struct.pack("<III", Request.SET_FEATURES, VERSION, 1 << 30))
    with pytest.raises(ProtocolError, match="limit"):
        conn.read_message()


def test_wrong_fds_are_closed_with_the_message(pair):
    peer, conn = pair
    r, w = os.pipe()
    before = open_fds()
    socket.send_fds(peer, [Message(Request.GET_FEATURES).encode()], [r])
    with pytest.raises(ProtocolError, match="expected 0"):
        conn.read_message()
    assert open_fds() == before          # the received copy was closed
    os.close(r)
    os.close(w)


def test_too_many_fds(pair):
    peer, conn = pair
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(12)]
    before = open_fds()
    socket.send_fds(peer, [Message(Request.GET_FEATURES).encode()], fds)
    with pytest.raises(ProtocolError, match="more than 9 file descriptors"):
        conn.read_message()
    assert open_fds() == before
    for fd in fds:
        os.close(fd)


def test_send_reply_and_peer_that_does_not_read(pair):
    peer, conn = pair
    conn.send(Message(Request.GET_FEATURES, VERSION | FLAG_REPLY, 7))
    assert peer.recv(64) == struct.pack("<IIIQ", 1, 5, 8, 7)
    with pytest.raises(ProtocolError, match="does not read"):
        for _ in range(1_000_000):
            conn.send(Message(Request.GET_FEATURES, VERSION | FLAG_REPLY, 7))


def test_send_to_a_closed_peer(pair):
    peer, conn = pair
    peer.close()
    with pytest.raises(ConnectionClosed):
        conn.send(Message(Request.GET_FEATURES, VERSION | FLAG_REPLY, 7))
