"""A whole session through a VhostUserPort: a test front-end (socket + memfd +
driver rings) sends what QEMU 7.2 sends, frames go both ways, it disconnects
and reconnects and carries on. And a hostile front-end cannot hurt a neighbour."""
import os
import socket

import pytest

from nicdev.net.loop import EventLoop
from nicdev.net.device import DEVICE_FEATURES
from nicdev.net.device_datapath import RX_BACKLOG_FRAMES
from nicdev.net.errors import PortError
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.vhost_user.messages import VringFile
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES, Request

from support.vhost_user_guest import Frontend, GuestNic, GuestRam

FEATURES = DEVICE_FEATURES | 1 << F_PROTOCOL_FEATURES


def frame(n, fill=0x5A, src=1):
    return b"\x02\x00\x00\x00\x00\x99" + bytes([2, 0, 0, 0, 0, src]) + b"\x08\x00" + bytes([fill]) * (n - 14)


class Session:
    """A port on a loop, with a guest that can (re)connect to it."""

    def __init__(self, loop, path, name="vm0"):
        self.loop = loop
        self.port = VhostUserPort(name, path)
        self.got = []
        self.port.attach(lambda port, f, meta: self.got.append(f))
        self.port.start(loop)
        self.ram = GuestRam()
        self.nic = GuestNic(self.ram)
        self.fe = None

    def pump(self):
        self.loop.run_once(0.01)

    def run_until(self, cond, what, timeout=5.0):
        self.loop.run(until=cond, timeout=timeout)
        assert cond(), f"timed out waiting for {what}; port status: {self.port.status}"

    def connect(self, bases=(0, 0)):
        if self.fe:
            self.fe.close()         # a new front-end: the old one's connection goes
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.port.socket_path)
        self.fe = Frontend(sock, pump=self.pump)
        offered = self.fe.connect(self.nic)
        assert offered == FEATURES
        self.fe.start(self.nic, offered, bases=bases)
        self.run_until(lambda: "rings running" in self.port.status, "rings to run")

    def close(self):
        if self.fe:
            self.fe.close()
        self.port.close()
        self.nic.close()
        self.ram.close()


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


@pytest.fixture
def session(loop, tmp_path):
    s = Session(loop, str(tmp_path / "vm0.sock"))
    yield s
    s.close()


def exchange(s, tag):
    """Guest -> port and port -> guest, checked end to end."""
    sent = [frame(60, tag), frame(1514, tag + 1)]
    s.nic.send(*sent)
    s.run_until(lambda: len(s.got) == 2, "guest frames at the port")
    assert s.got == sent
    s.got.clear()
    s.run_until(lambda: s.nic.tx_completed() or s.nic.tx.in_flight == 0, "TX buffers back")
    s.nic.post_rx(16, 2048)
    big = bytes(range(256)) * 35 + bytes([tag]) * 40
    assert s.port.transmit(frame(64, tag)) and s.port.transmit(big)
    received = []
    s.run_until(lambda: received.extend(s.nic.received()) or len(received) == 2, "frames in the guest")
    assert received == [frame(64, tag), big]


def test_full_session_with_reconnect(session):
    s = session
    assert s.port.status.startswith("waiting for frontend on ")
    s.connect()
    assert s.port.status.startswith("connected, features ") and s.port.status.endswith("rings running")
    exchange(s, 1)

    # use up the receive buffers and the backlog: then a frame is dropped and counted
    delivered = 0
    while s.port.transmit(frame(60)):
        delivered += 1
    assert delivered == 10 + RX_BACKLOG_FRAMES     # 16 posted, 6 taken by exchange()
    assert s.port.counters.tx_dropped == 1
    assert s.port.counters.errors == {"no_rx_buffers": 1}
    received = []
    s.run_until(lambda: received.extend(s.nic.received()) or len(received) == 10, "the last 10 frames")
    s.nic.post_rx(RX_BACKLOG_FRAMES, 2048)         # the guest's kick releases the backlog
    s.run_until(lambda: received.extend(s.nic.received()) or len(received) == delivered, "the backlog")

    # QEMU stops the device, then goes away
    bases = s.fe.stop()
    assert bases[1] == s.nic.tx.avail_idx and bases[0] == s.nic.rx.avail_idx
    s.fe.close()
    s.run_until(lambda: "waiting" in s.port.status, "disconnect")
    assert not s.port.transmit(frame(60))
    assert s.port.counters.errors["rx_ring_not_started"] == 1

    # ... and comes back: same guest memory and rings, fresh eventfds and socket
    s.nic.new_eventfds()
    s.connect(bases=bases)
    exchange(s, 7)
    assert s.port.counters.rx_frames == 4 and s.port.counters.tx_frames >= 4
    assert s.port.server.connections == 2


def test_kick_wakes_the_port_without_polling(session):
    s = session
    s.connect()
    s.nic.send(frame(100))
    s.run_until(lambda: s.got, "the kicked frame")
    assert s.port.device.counters.tx_kicks >= 1


def test_kick_without_fd_means_the_port_polls(session):
    s = session
    s.connect()
    s.fe.call(Request.SET_VRING_KICK, VringFile(1, no_fd=True))
    kicks = s.port.device.counters.tx_kicks
    gpa = s.ram.alloc(12 + 60)
    s.ram.mem.write(gpa, bytes(12) + frame(60, 4))
    s.nic.tx.add(s.ram.mem, [(gpa, 72)], [], (gpa, 72))
    s.nic.tx.publish(s.ram.mem)          # published, never kicked
    s.run_until(lambda: s.got == [frame(60, 4)], "the polled frame")
    assert s.port.device.counters.tx_kicks == kicks
    s.fe.stop()
    assert not s.port.device._timers      # polling ends with the ring


def test_adopted_socketpair_frontend(loop, tmp_path):
    port = VhostUserPort("pair", str(tmp_path / "pair.sock"))
    got = []
    port.attach(lambda p, f, meta: got.append(f))
    port.start(loop)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    port.server.adopt(ours)
    ram = GuestRam()
    nic = GuestNic(ram)
    try:
        fe = Frontend(theirs, pump=lambda: loop.run_once(0.01))
        fe.start(nic, fe.connect(nic))
        nic.send(frame(99, 8))
        loop.run(until=lambda: got, timeout=5)
        assert got == [frame(99, 8)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            with pytest.raises(RuntimeError, match="already connected"):
                port.server.adopt(extra)
    finally:
        theirs.close()
        port.close()
        nic.close()
        ram.close()


def test_hostile_frontend_does_not_disturb_a_neighbour(loop, tmp_path, caplog):
    good = Session(loop, str(tmp_path / "good.sock"), "good")
    bad = Session(loop, str(tmp_path / "bad.sock"), "bad")
    try:
        good.connect()
        bad.connect()
        # the bad front-end sends garbage
        bad.fe.sock.send(b"\x05\x00\x00\x00\x01\x00\x00\x00\x48\x00\x00\x00" + b"\xee" * 72)
        good.nic.send(frame(60, 3))
        good.run_until(lambda: good.got and bad.port.server.last_error, "good traffic and the bad disconnect")
        assert "waiting for frontend" in bad.port.status
        assert "protocol error" in bad.port.server.last_disconnect
        assert "memory table has" in bad.port.server.last_error
        assert "closing the connection" in caplog.text
        assert bad.fe.sock.recv(16) == b""
        good.got.clear()
        exchange(good, 9)
        # the bad port takes a new front-end
        bad.nic.new_eventfds()
        bad.connect(bases=(bad.nic.rx.avail_idx, bad.nic.tx.avail_idx))
        exchange(bad, 11)
    finally:
        good.close()
        bad.close()


def test_hostile_guest_breaks_its_own_ring_only(loop, tmp_path):
    a = Session(loop, str(tmp_path / "a.sock"), "a")
    b = Session(loop, str(tmp_path / "b.sock"), "b")
    try:
        a.connect()
        b.connect()
        # guest a offers a TX buffer outside its memory
        a.nic.tx.add(a.ram.mem, [(0x9000_0000, 100)], [], None)
        a.nic.tx.publish(a.ram.mem)
        a.nic.tx.should_kick(a.ram.mem)
        os.write(a.nic.kick[1], (1).to_bytes(8, "little"))
        a.run_until(lambda: "broken" in a.port.status, "a's ring to break")
        assert a.port.status.startswith("broken: tx ring: chain 0: buffer 0x90000000+100 is not in guest memory")
        exchange(b, 5)
    finally:
        a.close()
        b.close()


def test_socket_in_use_is_a_port_error(loop, tmp_path):
    path = str(tmp_path / "x.sock")
    first = VhostUserPort("one", path)
    first.start(loop)
    try:
        second = VhostUserPort("two", path)
        with pytest.raises(PortError, match="socket path in use"):
            second.start(loop)
    finally:
        first.close()


def test_port_without_path_makes_a_private_socket(loop):
    port = VhostUserPort("p")
    port.start(loop)
    try:
        assert port.socket_path.endswith("/p.sock")
        assert port.status == f"waiting for frontend on {port.socket_path}"
    finally:
        port.close()
