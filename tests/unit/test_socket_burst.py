"""QEMU socket-netdev ports move frames in bursts: a stream peer's frames
from one read, a dgram port's datagrams from one recvmmsg, reach the switch
as one burst; a burst goes to a stream peer in one send (what the kernel
does not take queued in order) and to a dgram peer with sendmmsg. The dgram
port is tested on both data paths (C system calls, plain Python)."""
from __future__ import annotations

import socket

import pytest

from nicdev.net import fd_burst
from nicdev.net.loop import EventLoop
from nicdev.net.socket_port import DgramPort, StreamDecoder, StreamPort, encode_stream_frame
from nicdev.net.switch import Switch
from nicdev.virtio import kernels

from support.switch_ports import BCAST, A, RecordingPort, frame


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


def frames_of(count: int, size: int = 60) -> list[bytes]:
    return [frame(BCAST, A, i.to_bytes(4, "big") + bytes(size - 18)) for i in range(count)]


def test_a_stream_peers_frames_from_one_read_are_one_burst(loop, tmp_path):
    switch = Switch(loop)
    try:
        port = switch.add_port(StreamPort("s", str(tmp_path / "s.sock")))
        dst = switch.add_port(RecordingPort("dst", bursts=True))
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.connect(port.path)
        loop.run(until=lambda: port.connected, timeout=5)
        sent = frames_of(5)
        peer.sendall(b"".join(encode_stream_frame(f) for f in sent))
        loop.run(until=lambda: dst.sent, timeout=5)
        assert dst.calls == [[(f, None) for f in sent]]
        peer.close()
    finally:
        switch.close()


def test_a_burst_to_a_stream_peer_is_one_send_and_a_slow_peer_gets_it_in_order(loop, tmp_path):
    port = StreamPort("s", str(tmp_path / "s.sock"), sndbuf=4096)
    port.start(loop)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect(port.path)
    try:
        loop.run(until=lambda: port.connected, timeout=5)
        burst = frames_of(200, 1000)
        assert port.transmit_burst([(f, None) for f in burst] + [(b"", None)]) == 200
        assert port.counters.errors == {"unsendable frame length": 1} and port.counters.tx_dropped == 1
        assert port.pending_bytes > 0                       # the kernel took only part of it
        decoder, got = StreamDecoder(), []
        peer.setblocking(False)

        def read_all():
            try:
                got.extend(decoder.feed(peer.recv(1 << 16)))
            except BlockingIOError:
                pass
            return len(got) == 200

        loop.run(until=read_all, timeout=10)
        assert got == burst and port.counters.tx_frames == 200 and port.pending_bytes == 0
        # With frames still queued, a burst goes behind them.
        assert port.transmit_burst([(f, None) for f in frames_of(3)]) == 3
    finally:
        peer.close()
        port.close()


def test_a_stream_burst_without_a_peer_is_dropped(tmp_path):
    port = StreamPort("s", str(tmp_path / "s.sock"))
    assert port.transmit_burst([(f, None) for f in frames_of(4)]) == 0 and port.counters.tx_dropped == 4


def _udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def test_dgram_datagrams_are_one_burst_with_the_strangers_counted(datapath, loop):
    remote, stranger = _udp(), _udp()
    here = _udp()
    local = here.getsockname()
    here.close()
    switch = Switch(loop)
    try:
        port = switch.add_port(DgramPort("d", local, remote.getsockname()))
        dst = switch.add_port(RecordingPort("dst", bursts=True))
        sent = frames_of(6)
        for i, f in enumerate(sent):
            (stranger if i == 2 else remote).sendto(f, local)
        remote.sendto(b"", local)
        loop.run(until=lambda: dst.sent, timeout=5)
        loop.run(timeout=0.05)
        assert [f for call in dst.calls for f, _ in call] == sent[:2] + sent[3:]
        assert port.counters.errors == {"datagram from unexpected sender": 1, "empty datagram": 1}
        assert port.counters.rx_dropped == 2 and port.counters.rx_frames == 5
        # ... and back with one sendmmsg
        assert port.transmit_burst([(f, None) for f in sent]) == 6
        remote.settimeout(5)
        assert [remote.recv(2000) for _ in sent] == sent
        assert port.counters.tx_frames == 6
        assert port.transmit_burst([(bytes(70000), None)]) == 0
        assert port.counters.errors["frame too large for a datagram"] == 1
    finally:
        switch.close()
        remote.close()
        stranger.close()


def test_dgram_burst_to_a_missing_unix_peer_is_counted(datapath, loop, tmp_path):
    port = DgramPort("d", str(tmp_path / "ours"), str(tmp_path / "theirs"))
    port.start(loop)
    try:
        assert port.transmit_burst([(f, None) for f in frames_of(3)]) == 0
        assert port.counters.tx_dropped == 3 and port.peer_missing and not port.counters.errors
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind(str(tmp_path / "theirs"))
        assert port.transmit_burst([(f, None) for f in frames_of(2)]) == 2 and not port.peer_missing
        peer.close()
    finally:
        port.close()
