"""The listening socket: path rules, one front-end at a time, reset on disconnect."""
import os
import socket
import stat

import pytest

from nicdev.net.loop import EventLoop
from nicdev.vhost_user.backend import VhostUserBackend
from nicdev.vhost_user.messages import Message
from nicdev.vhost_user.protocol import Request
from nicdev.vhost_user.server import SocketInUseError, SocketPathError, VhostUserServer

from support.vhost_user_guest import Frontend


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def backend():
    return VhostUserBackend(1 << 32, 1 << 3, 2)


def run_until(loop, cond, timeout=5.0, what="condition"):
    loop.run(until=cond, timeout=timeout)
    assert cond(), f"timed out waiting for {what}"


def test_private_directory_when_no_path(loop, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    server = VhostUserServer(backend(), name="vm/0")
    server.start(loop)
    directory = os.path.dirname(server.path)
    assert os.path.dirname(directory) == str(tmp_path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert os.path.basename(server.path) == "vm_0.sock"
    server.close()
    assert not os.path.exists(directory)


def test_given_path_mode_and_cleanup(loop, tmp_path):
    path = str(tmp_path / "a.sock")
    server = VhostUserServer(backend(), path)
    server.start(loop)
    assert server.path == path and stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    server.close()
    assert not os.path.exists(path)


def test_path_in_use(loop, tmp_path):
    path = str(tmp_path / "busy.sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(1)
    try:
        with pytest.raises(SocketInUseError, match="socket path in use"):
            VhostUserServer(backend(), path).start(loop)
        assert os.path.exists(path)        # the other process's socket is left alone
    finally:
        other.close()


def test_stale_socket_is_replaced(loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(path)
    gone.close()                           # the file stays, nobody listens
    server = VhostUserServer(backend(), path)
    server.start(loop)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(path)
    probe.close()
    server.close()


def test_non_socket_at_path_is_refused(loop, tmp_path):
    path = tmp_path / "file"
    path.write_text("precious")
    with pytest.raises(SocketPathError, match="not a socket"):
        VhostUserServer(backend(), str(path)).start(loop)
    assert path.read_text() == "precious"


def test_path_too_long(tmp_path):
    with pytest.raises(SocketPathError, match="longer than"):
        VhostUserServer(backend(), str(tmp_path / ("x" * 120)))


def test_one_frontend_at_a_time_and_reconnect(loop, tmp_path):
    path = str(tmp_path / "one.sock")
    be = backend()
    server = VhostUserServer(be, path)
    server.start(loop)
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.connect(path)
    run_until(loop, lambda: server.connected, what="first front-end")
    second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    second.connect(path)
    run_until(loop, lambda: server.refused == 1, what="second front-end refused")
    second.settimeout(5)
    assert second.recv(16) == b""          # closed on it
    second.close()
    fe = Frontend(first, pump=lambda: loop.run_once(0.01))
    assert fe.call(Request.GET_FEATURES) == 1 << 32 | 1 << 30
    fe.call(Request.SET_FEATURES, 1 << 32)
    run_until(loop, lambda: be.acked_features == 1 << 32, what="SET_FEATURES")
    first.close()
    run_until(loop, lambda: not server.connected, what="disconnect")
    assert be.acked_features == 0          # state reset for the next front-end
    assert server.last_disconnect == "peer closed the connection"
    third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    third.connect(path)
    fe = Frontend(third, pump=lambda: loop.run_once(0.01))
    assert fe.call(Request.GET_FEATURES) == 1 << 32 | 1 << 30
    assert server.connections == 2
    third.close()
    server.close()


def test_protocol_error_closes_the_connection_with_a_reason(loop, tmp_path, caplog):
    path = str(tmp_path / "bad.sock")
    server = VhostUserServer(backend(), path)
    server.start(loop)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.send(Message(Request.GET_FEATURES).encode()[:8] + b"\xff\xff\xff\xff")   # size 4 GiB
    run_until(loop, lambda: server.last_error is not None, what="protocol error")
    assert "limit" in server.last_error
    assert "protocol error" in caplog.text
    sock.settimeout(5)
    assert sock.recv(16) == b""
    sock.close()
    assert not server.connected
    server.close()
