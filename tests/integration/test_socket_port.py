"""StreamPort and DgramPort against Python peers speaking QEMU's framing, and against QEMU itself.

The QEMU test needs no guest: `-M none` with a stream netdev and a dgram
netdev joined by a QEMU hub, so a frame we send into one comes back out of
the other, each leg using QEMU's own framing code.
"""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from nicdev.net.errors import PortError
from nicdev.net.loop import EventLoop
from nicdev.net.socket_port import DgramPort, StreamDecoder, StreamPort, encode_stream_frame

pytestmark = pytest.mark.integration


def eth(n: int, size: int = 60) -> bytes:
    """A broadcast frame whose payload says which one it is."""
    head = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5"
    return head + n.to_bytes(4, "big") + bytes([n & 0xFF]) * (size - 18)


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def collect(port):
    got: list[bytes] = []
    port.attach(lambda p, frame, meta: got.append(frame))
    return got


@pytest.fixture
def stream(loop, tmp_path):
    port = StreamPort("s", str(tmp_path / "s.sock"))
    got = collect(port)
    port.start(loop)
    yield port, got
    port.close()


class Peer:
    """A Python stand-in for QEMU's stream netdev client."""

    def __init__(self, loop, path: str) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.decoder = StreamDecoder()
        self.frames: list[bytes] = []
        self.eof = False
        loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.eof = True
            self.loop.remove_reader(self.sock.fileno())
            return
        self.frames += self.decoder.feed(data)

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def close(self) -> None:
        if not self.eof:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def wait(loop, cond, what: str, timeout: float = 5.0) -> None:
    loop.run(until=cond, timeout=timeout)
    assert cond(), f"timed out after {timeout} s waiting for {what}"


def test_stream_frames_both_ways_with_partial_reads(loop, stream):
    port, got = stream
    peer = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the peer to be accepted")
    assert port.status == f"peer connected on {port.path}"
    data = b"".join(encode_stream_frame(eth(i, 60 + i * 100)) for i in range(3))
    # dribble the bytes so frames and even length prefixes straddle reads
    for cut in (2, 5, 70, 200, len(data)):
        peer.send(data[:cut])
        data = data[cut:] if cut < len(data) else b""
        loop.run_once(0.05)
        if not data:
            break
    wait(loop, lambda: len(got) == 3, "three frames from the peer")
    assert got == [eth(i, 60 + i * 100) for i in range(3)]
    for i in range(3):
        assert port.transmit(eth(10 + i)) is True
    wait(loop, lambda: len(peer.frames) == 3, "three frames at the peer")
    assert peer.frames == [eth(10 + i) for i in range(3)]
    c = port.counters
    assert (c.rx_frames, c.tx_frames, c.tx_dropped, c.errors) == (3, 3, 0, {})
    peer.close()


def test_slow_peer_partial_writes_and_bounded_queue(loop, tmp_path):
    # A small kernel send buffer makes the kernel take records in pieces.
    port = StreamPort("s", str(tmp_path / "slow.sock"), max_pending=200_000, sndbuf=8192)
    port.start(loop)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(port.path)
        wait(loop, lambda: port.connected, "the peer to be accepted")
        # The peer reads nothing yet: the kernel buffers fill, then our queue,
        # then frames are dropped (counted), never blocking the loop.
        accepted, rejected, queued_seen = [], 0, 0
        for i in range(3000):
            frame = eth(i, 60 + (i * 337) % 9000)
            if port.transmit(frame):
                accepted.append(frame)
            else:
                rejected += 1
            queued_seen = max(queued_seen, port.pending_bytes)
        assert rejected > 0, "the queue never filled: test did not exercise the bound"
        assert 0 < queued_seen <= 200_000 + 4 + 9060
        assert port.counters.tx_dropped == rejected
        # Now the peer drains; every accepted frame must arrive whole and in order.
        client.setblocking(False)
        dec, frames = StreamDecoder(), []

        def drain():
            try:
                frames.extend(dec.feed(client.recv(1 << 16)))
            except BlockingIOError:
                pass

        loop.add_reader(client.fileno(), drain)
        wait(loop, lambda: len(frames) >= len(accepted) and port.pending_bytes == 0,
             f"{len(accepted)} frames at the slow peer", timeout=20)
        loop.remove_reader(client.fileno())
        assert frames == accepted and dec.error is None
        assert port.partial_writes > 0, "no partial write happened: test did not exercise them"
        assert port.counters.tx_frames == len(accepted)
        client.close()
    finally:
        port.close()


def test_peer_goes_away_and_the_next_one_is_served(loop, stream):
    port, got = stream
    first = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the first peer")
    first.send(encode_stream_frame(eth(1)))
    wait(loop, lambda: got == [eth(1)], "a frame from the first peer")
    first.close()
    wait(loop, lambda: not port.connected, "the port to notice the first peer left")
    assert "no peer (last: peer closed the connection)" in port.status
    assert port.transmit(eth(2)) is False and port.counters.tx_dropped == 1
    second = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the second peer")
    second.send(encode_stream_frame(eth(3)))
    assert port.transmit(eth(4)) is True
    wait(loop, lambda: len(got) == 2 and second.frames == [eth(4)], "frames with the second peer")
    assert got[1] == eth(3) and port.connections == 2
    second.close()


def test_second_peer_is_refused_while_one_is_connected(loop, stream):
    port, got = stream
    first = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the first peer")
    intruder = Peer(loop, port.path)
    wait(loop, lambda: intruder.eof, "the second peer to be hung up on")
    assert port.counters.errors == {"second peer refused": 1}
    port.transmit(eth(5))
    wait(loop, lambda: first.frames == [eth(5)], "the first peer still being served")
    first.close()
    intruder.close()


@pytest.mark.parametrize("bad_length", [0, 65550, 0x7FFFFFFF])
def test_malformed_length_closes_only_that_connection(loop, stream, bad_length):
    port, got = stream
    peer = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the peer")
    peer.send(encode_stream_frame(eth(1)) + bad_length.to_bytes(4, "big") + b"\x00" * 64)
    wait(loop, lambda: peer.eof, "the port to hang up on the misbehaving peer")
    assert got == [eth(1)], "the good frame before the bad length was lost"
    assert port.counters.errors == {"bad frame length": 1} and port.counters.rx_dropped == 1
    assert f"bad frame length {bad_length}" in port.status
    peer.close()
    # the port itself is fine: the next peer works
    nxt = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the next peer")
    nxt.send(encode_stream_frame(eth(2)))
    wait(loop, lambda: got[-1:] == [eth(2)], "a frame from the next peer")
    nxt.close()


def test_frame_cut_short_by_disconnect_is_counted(loop, stream):
    port, got = stream
    peer = Peer(loop, port.path)
    wait(loop, lambda: port.connected, "the peer")
    peer.send(encode_stream_frame(eth(1))[:30])
    peer.close()
    wait(loop, lambda: not port.connected, "the disconnect")
    assert got == [] and port.counters.errors == {"truncated frame at disconnect": 1}


def test_socket_path_handling(loop, tmp_path):
    path = str(tmp_path / "p.sock")
    # a stale socket file from a dead process is replaced
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    port = StreamPort("s", path)
    port.start(loop)
    assert os.path.exists(path)
    # a live one is not
    other = StreamPort("t", path)
    with pytest.raises(PortError, match=f"port 't': {path} is in use by another program"):
        other.start(loop)
    port.close()
    assert not os.path.exists(path), "close() should remove the socket file"
    assert port.status == "closed"
    # neither is a regular file
    open(path, "w").close()
    with pytest.raises(PortError, match="exists and is not a socket"):
        StreamPort("s", path).start(loop)
    with pytest.raises(PortError, match="cannot bind .*No such file or directory"):
        StreamPort("s", str(tmp_path / "missing" / "x.sock")).start(loop)


def free_udp_port() -> int:
    return free_udp_ports(1)[0]


def free_udp_ports(n: int) -> list[int]:
    """`n` different free ports: each held until all are chosen (the kernel may hand
    out a port again the moment it is released)."""
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def test_dgram_over_udp(loop):
    ours, theirs = free_udp_ports(2)
    port = DgramPort("d", ("127.0.0.1", ours), ("127.0.0.1", theirs))
    got = collect(port)
    port.start(loop)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", theirs))
    peer.settimeout(5)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.sendto(eth(1), ("127.0.0.1", ours))
        peer.sendto(b"", ("127.0.0.1", ours))
        stranger.sendto(eth(9), ("127.0.0.1", ours))
        peer.sendto(eth(2, 1514), ("127.0.0.1", ours))
        wait(loop, lambda: len(got) == 2, "two frames from the peer")
        assert got == [eth(1), eth(2, 1514)]
        assert port.counters.errors == {"empty datagram": 1, "datagram from unexpected sender": 1}
        assert port.counters.rx_dropped == 2
        assert port.transmit(eth(3)) is True
        assert peer.recvfrom(70000) == (eth(3), ("127.0.0.1", ours))
        assert port.status == f"udp 127.0.0.1:{ours} <-> 127.0.0.1:{theirs}"
    finally:
        peer.close()
        stranger.close()
        port.close()


def test_dgram_over_unix_sockets(loop, tmp_path):
    ours, theirs = str(tmp_path / "ours.sock"), str(tmp_path / "theirs.sock")
    port = DgramPort("d", ours, theirs)
    got = collect(port)
    port.start(loop)
    try:
        # nobody at the remote yet: counted drop, said in the status
        assert port.transmit(eth(1)) is False
        assert port.counters.tx_dropped == 1 and port.status.endswith("no peer at remote")
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind(theirs)
        peer.settimeout(5)
        assert port.transmit(eth(2)) is True
        assert peer.recv(70000) == eth(2)
        peer.sendto(eth(3), ours)
        peer.sendto(b"\x00" * 70000, ours)           # larger than any frame
        wait(loop, lambda: got == [eth(3)] and port.counters.rx_dropped == 1, "a frame and a counted drop")
        assert port.counters.errors == {"oversized datagram": 1}
        assert port.status == f"unix {ours} <-> {theirs}"
        peer.close()
    finally:
        port.close()
    assert not os.path.exists(ours)


def test_dgram_bind_conflict_is_a_port_error(loop):
    ours = free_udp_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", ours))
    try:
        with pytest.raises(PortError, match=f"cannot bind 127.0.0.1:{ours}: Address already in use"):
            DgramPort("d", ("127.0.0.1", ours), ("127.0.0.1", free_udp_port())).start(loop)
    finally:
        holder.close()


# -- real QEMU ---------------------------------------------------------------
def qemu_hub(stream_path: str, dgram_args: str) -> subprocess.Popen:
    """QEMU with no machine, joining a stream netdev and a dgram netdev through a hub.

    Not `-S`: QEMU's net layer passes no packets while the VM is stopped.
    """
    return subprocess.Popen(
        ["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
         "-netdev", f"stream,id=s0,server=off,addr.type=unix,addr.path={stream_path}",
         "-netdev", f"dgram,id=d0,{dgram_args}",
         "-netdev", "hubport,id=h0,hubid=0,netdev=s0",
         "-netdev", "hubport,id=h1,hubid=0,netdev=d0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop_qemu(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=20)[1]


def exchange_through_qemu(loop, stream, s_got, dgram, d_got, tag: int) -> None:
    wait(loop, lambda: stream.connected, "QEMU to connect to the stream port", timeout=20)
    big = eth(tag, 1514)
    assert stream.transmit(big)
    wait(loop, lambda: big in d_got, "our stream frame to come back through QEMU's dgram netdev")
    small = eth(tag + 1, 60)
    assert dgram.transmit(small)
    wait(loop, lambda: small in s_got, "our dgram frame to come back through QEMU's stream netdev")


@pytest.mark.parametrize("transport", ["udp", "unix"])
def test_qemu_netdevs_carry_our_frames_and_reconnect(loop, tmp_path, transport):
    if transport == "udp":
        ours, theirs = free_udp_ports(2)
        dgram = DgramPort("d", ("127.0.0.1", ours), ("127.0.0.1", theirs))
        dgram_args = (f"local.type=inet,local.host=127.0.0.1,local.port={theirs},"
                      f"remote.type=inet,remote.host=127.0.0.1,remote.port={ours}")
    else:
        ours, theirs = str(tmp_path / "d-ours.sock"), str(tmp_path / "d-qemu.sock")
        dgram = DgramPort("d", ours, theirs)
        dgram_args = f"local.type=unix,local.path={theirs},remote.type=unix,remote.path={ours}"
    stream = StreamPort("s", str(tmp_path / "s.sock"))
    s_got, d_got = collect(stream), collect(dgram)
    stream.start(loop)
    dgram.start(loop)
    try:
        qemu = qemu_hub(stream.path, dgram_args)
        try:
            exchange_through_qemu(loop, stream, s_got, dgram, d_got, 100)
        finally:
            err = stop_qemu(qemu)
        assert "error" not in err.lower(), err
        wait(loop, lambda: not stream.connected, "the port to notice QEMU left")
        # a new QEMU on the same socket: the port takes it as the next peer
        qemu = qemu_hub(stream.path, dgram_args)
        try:
            exchange_through_qemu(loop, stream, s_got, dgram, d_got, 200)
        finally:
            stop_qemu(qemu)
        assert stream.connections == 2
        assert not stream.counters.errors and not dgram.counters.errors
    finally:
        stream.close()
        dgram.close()


def test_handler_closing_the_ports_mid_burst(loop, tmp_path):
    stream = StreamPort("s", str(tmp_path / "b.sock"))
    ours, theirs = free_udp_ports(2)
    dgram = DgramPort("d", ("127.0.0.1", ours), ("127.0.0.1", theirs))
    got = []

    def sink(port, frame, meta):
        got.append((port.name, frame))
        port.close()                    # e.g. the switch removing the port

    for port in (stream, dgram):
        port.attach(sink)
        port.start(loop)
    peer = Peer(loop, stream.path)
    wait(loop, lambda: stream.connected, "the peer")
    peer.send(encode_stream_frame(eth(1)) + encode_stream_frame(eth(2)))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", theirs))
    for i in (3, 4):
        udp.sendto(eth(i), ("127.0.0.1", ours))
    udp.close()
    wait(loop, lambda: len(got) == 2 and peer.eof, "one frame from each port, then the hang-up")
    loop.run(timeout=0.2)               # nothing else may arrive from the closed ports
    assert sorted(got) == [("d", eth(3)), ("s", eth(1))]
    assert not stream.counters.errors and not dgram.counters.errors
    assert stream.status == "closed" and dgram.status.endswith("closed")
    peer.close()
