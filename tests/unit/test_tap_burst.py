"""A TAP port moves frames in bursts: what the kernel queued is read in one
call and handed to the switch as one burst; a burst from the switch is
written in one call; on both data paths (C system-call loops and plain
os.read/os.write), with the same counters and errors."""
from __future__ import annotations

import errno
import os
import socket

import pytest

from nicdev.net import fd_burst
from nicdev.net.loop import EventLoop
from nicdev.net.switch import Switch
from nicdev.net.tap_port import VNET_HDR_LEN
from nicdev.virtio import kernels
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_NEEDS_CSUM, NetHdr
from nicdev.virtio.offload import GSO_TCPV4, FrameMeta

from support.offload_frames import tcp4_frame
from support.paired_tap import PairedTap
from support.switch_ports import BCAST, A, C, RecordingPort, frame

TSO = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)


@pytest.fixture(params=["c", "python"] if kernels.use_c() else ["python"])
def datapath(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(fd_burst.kernels, "use_c", lambda: False)
    return request.param


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(70000))
        except BlockingIOError:
            return got


@pytest.mark.parametrize("vnet_hdr", [True, False])
def test_what_the_kernel_queued_reaches_the_switch_as_one_burst(datapath, loop, vnet_hdr):
    switch = Switch(loop)
    try:
        tap = switch.add_port(PairedTap("tap", vnet_hdr=vnet_hdr))
        dst = switch.add_port(RecordingPort("dst", bursts=True, gso=True))
        head = bytes(VNET_HDR_LEN) if vnet_hdr else b""
        frames = [frame(BCAST, A, bytes([i]) * 46) for i in range(5)]
        for f in frames:
            tap.kernel.send(head + f)
        tap.kernel.send(b"\x01")                       # a short header, or a runt for the switch
        loop.run(until=lambda: dst.calls, timeout=5)
        assert dst.calls == [[(f, None) for f in frames]]
        if vnet_hdr:
            assert tap.counters.errors == {"short vnet header": 1} and switch.counters.malformed == 0
        else:
            assert switch.counters.malformed == 1
        assert tap.counters.rx_frames == (5 if vnet_hdr else 6)
    finally:
        switch.close()


def test_a_burst_from_the_switch_goes_to_the_kernel_with_headers(datapath, loop):
    switch = Switch(loop)
    try:
        src = switch.add_port(RecordingPort("src"))
        tap = switch.add_port(PairedTap("tap"))
        big = tcp4_frame(bytes(3000))
        src.deliver_burst([(frame(BCAST, C), None), (big, TSO), (frame(BCAST, C), None)])
        got = drain(tap.kernel)
        assert got == [bytes(VNET_HDR_LEN) + frame(BCAST, C),
                       NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16).pack(VNET_HDR_LEN) + big,
                       bytes(VNET_HDR_LEN) + frame(BCAST, C)]
        assert tap.counters.tx_frames == 3 and tap.counters.tx_bytes == 120 + len(big)
    finally:
        switch.close()


def test_refused_writes_are_counted_as_transmit_counts_them(datapath):
    tap = PairedTap("tap", vnet_hdr=False)
    try:
        tap._fd = tap._pair_fd
        fd = os.open("/dev/null", os.O_RDONLY)         # every write: EBADF
        real, tap._fd = tap._fd, fd
        try:
            assert tap.transmit_burst([(frame(BCAST, A), None)] * 2) == 0
        finally:
            tap._fd = real
            os.close(fd)
        assert tap.counters.tx_dropped == 2 and tap.counters.errors == {"write failed: Bad file descriptor": 2}
        # a full queue (EAGAIN) is a drop without an error reason
        with socket.socket(fileno=os.dup(tap._fd)) as same:
            same.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent = tap.transmit_burst([(frame(BCAST, A, bytes(1000)), None)] * 64)
        assert 0 < sent < 64 and tap.counters.tx_dropped == 2 + 64 - sent and len(tap.counters.errors) == 1
        assert len(drain(tap.kernel)) == sent
    finally:
        tap.close()


def test_a_closed_port_drops_a_burst(datapath):
    tap = PairedTap("tap")
    tap.kernel.close()
    assert tap.transmit_burst([(frame(BCAST, A), None)] * 3) == 0 and tap.counters.tx_dropped == 3
    os.close(tap._pair_fd)


def test_a_read_error_stops_the_port_after_the_frames_before_it(datapath, loop):
    tap = PairedTap("tap", vnet_hdr=False)
    got = []
    tap.attach(lambda p, f, m: got.append(f))
    tap.start(loop)
    tap.kernel.send(frame(BCAST, A))
    loop.remove_reader(tap._fd)
    real = tap._reader.read
    tap._reader.read = lambda fd: (real(fd)[0], errno.EIO)
    tap._on_readable()
    assert got == [frame(BCAST, A)] and not tap.link_up
    assert "failed: read failed: Input/output error" in tap.status
    tap.kernel.close()
