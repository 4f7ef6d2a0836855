"""Frames to and from descriptors in bursts (nicdev.net.fd_burst): the C
system-call loops and the plain Python ones give the same frames, the same
flags and the same errnos, on socketpairs (one datagram = one frame, as on
a TAP) and on UDP and unix datagram sockets."""
from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

from nicdev.net import fd_burst
from nicdev.net.fd_burst import DgramReader, DgramWriter, FdReader, FdWriter, pack_sockaddr
from nicdev.virtio import kernels

PATHS = ["c", "python"] if kernels.use_c() else ["python"]


@pytest.fixture(params=PATHS)
def datapath(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(fd_burst.kernels, "use_c", lambda: False)
    return request.param


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_reader_takes_frames_up_to_the_burst_and_stops_when_empty(datapath, pair):
    ours, theirs = pair
    sent = [bytes([i]) * (60 + i * 100) for i in range(5)]
    for f in sent:
        theirs.send(f)
    reader = FdReader(2048, 3)
    assert reader.read(ours.fileno()) == (sent[:3], 0)
    assert reader.read(ours.fileno()) == (sent[3:], 0)
    assert reader.read(ours.fileno()) == ([], 0)


def test_reader_cuts_a_frame_at_the_slot_size(datapath, pair):
    ours, theirs = pair
    theirs.send(b"x" * 500)
    assert FdReader(100, 4).read(ours.fileno()) == ([b"x" * 100], 0)


def test_reader_reports_a_failing_read(datapath):
    fd = os.open("/", os.O_RDONLY)
    try:
        assert FdReader(64, 4).read(fd) == ([], errno.EISDIR)
    finally:
        os.close(fd)


def test_writer_writes_each_record_and_reports_per_record_errors(datapath, pair):
    ours, theirs = pair
    records = [b"a" * 60, b"bb" * 700, b"c" * 14]
    assert FdWriter(8).write(ours.fileno(), records) is None
    theirs.setblocking(False)
    assert [theirs.recv(4096) for _ in records] == records
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        assert FdWriter(8).write(fd, records) == [errno.EBADF] * 3
    finally:
        os.close(fd)


def test_writer_on_a_full_socket_goes_on_past_refused_records(datapath, pair):
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    records = [bytes([i % 256]) * 1000 for i in range(64)]
    errs = FdWriter(64).write(ours.fileno(), records)
    assert errs is not None and set(errs) <= {0, errno.EAGAIN} and errno.EAGAIN in errs
    theirs.setblocking(False)
    got = []
    while True:
        try:
            got.append(theirs.recv(4096))
        except BlockingIOError:
            break
    assert got == [r for r, e in zip(records, errs) if e == 0]


def test_writer_takes_more_records_than_its_burst_and_heads_before_frames(datapath, pair):
    ours, theirs = pair
    frames = [bytes([i]) * 20 for i in range(10)]
    heads = [b"H%d" % i for i in range(10)]
    assert FdWriter(4).write(ours.fileno(), frames, heads) is None
    assert FdWriter(4).write(ours.fileno(), frames[:3]) is None
    theirs.setblocking(False)
    assert [theirs.recv(100) for _ in range(13)] == [h + f for h, f in zip(heads, frames)] + frames[:3]


def _udp(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_datagrams_are_flagged_by_sender(datapath, host):
    ours, remote, stranger = _udp(host), _udp(host), _udp(host)
    try:
        here = ours.getsockname()[:2]
        remote.sendto(b"one", here)
        stranger.sendto(b"two", here)
        remote.sendto(b"three", here)
        reader = DgramReader(65536, 8, remote.getsockname()[:2])
        frames, flags, err = reader.read(ours)
        assert (frames, flags, err) == ([b"one", b"two", b"three"], [True, False, True], 0)
        assert reader.read(ours) == ([], [], 0)
        writer = DgramWriter(8, remote.getsockname()[:2])
        assert writer.send(ours, [b"back", b"again"]) is None
        assert [remote.recv(100) for _ in range(2)] == [b"back", b"again"]
    finally:
        for s in (ours, remote, stranger):
            s.close()


def test_unix_datagrams_by_path_and_a_missing_peer(datapath, tmp_path):
    def bound(name):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(tmp_path / name))
        s.setblocking(False)
        return s

    ours, remote, stranger = bound("ours"), bound("remote"), bound("remote2")
    anonymous = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for sock, data in ((remote, b"a"), (stranger, b"b"), (anonymous, b"c"), (remote, b"d" * 3000)):
            sock.sendto(data, str(tmp_path / "ours"))
        frames, flags, err = DgramReader(2000, 8, str(tmp_path / "remote")).read(ours)
        assert frames == [b"a", b"b", b"c", b"d" * 2000] and flags == [True, False, False, True] and err == 0
        missing = DgramWriter(8, str(tmp_path / "nobody"))
        assert missing.send(ours, [b"x", b"y"]) == [errno.ENOENT, errno.ENOENT]
    finally:
        for s in (ours, remote, stranger, anonymous):
            s.close()


def test_packed_addresses_are_the_kernels_sockaddrs():
    assert pack_sockaddr(("127.0.0.1", 5000)) == (socket.AF_INET.to_bytes(2, sys.byteorder) + b"\x13\x88\x7f\0\0\1"
                                                  + bytes(8))
    assert len(pack_sockaddr(("::1", 5000))) == 28
    assert pack_sockaddr("/tmp/x") == socket.AF_UNIX.to_bytes(2, sys.byteorder) + b"/tmp/x\0"
