"""A stack's control socket and `mnet monitor` against it, in process: the
`snapshot` op, bad requests (a clear one-line error each, and the server
keeps serving), the socket's permissions, the default path, and the CLI's
output and errors."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from mnet.apps.monitor.control import MAX_SOCKET_ROWS, StackControlHandler
from mnet.apps.monitor.live import CLEAR
from mnet.apps.monitor.server import StackControlServer, default_stack_control_path, find_stacks
from mnet.cli.main import main
from nicdev.net.control import MAX_REQUEST
from nicdev.net.control_client import ControlClient, ControlConnectError
from nicdev.net.control_server import ControlPathError
from stack import IpAddress, LoopbackNicPair, SocketType, Stack


def reply(handler: StackControlHandler, line: bytes) -> dict:
    out = handler.handle(line)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    return json.loads(out)


@pytest.mark.parametrize("line, error", [
    (b"not json", "request is not JSON (one JSON object per line)"),
    (b"[1, 2]", 'request must be a JSON object, {"op": ...}'),
    (b'{"cmd": "snapshot"}', 'request needs "op", a string'),
    (b'{"op": 7}', 'request needs "op", a string'),
    (b'{"op": "reboot"}', "unknown op 'reboot'; ops: snapshot, ops"),
    (b'{"op": "snapshot", "view": "ss"}', "snapshot: unknown argument 'view'"),
    (b"{" * (MAX_REQUEST + 10), f"request longer than {MAX_REQUEST} bytes"),
])
def test_bad_requests_get_one_line_errors(line, error):
    handler = StackControlHandler(lambda: pytest.fail("no snapshot for a bad request"))
    assert reply(handler, line) == {"ok": False, "error": error}


def test_snapshot_and_ops_and_a_failing_snapshot():
    assert reply(StackControlHandler(lambda: {"time": 1.5}), b'{"op": "snapshot"}\n') == {
        "ok": True, "snapshot": {"time": 1.5}}
    assert reply(StackControlHandler(dict), b'{"op": "ops"}') == {"ok": True, "ops": ["snapshot", "ops"]}

    def broken():
        raise RuntimeError("the stack's lock\nis gone")

    assert reply(StackControlHandler(broken), b'{"op": "snapshot"}') == {
        "ok": False, "error": "internal error: RuntimeError: the stack's lock is gone"}


def test_a_huge_socket_table_is_cut_and_says_how_much():
    rows = [{"netid": "tcp"}] * (MAX_SOCKET_ROWS + 7)
    snap = reply(StackControlHandler(lambda: {"sockets": list(rows)}), b'{"op": "snapshot"}')["snapshot"]
    assert len(snap["sockets"]) == MAX_SOCKET_ROWS and snap["sockets_left_off"] == 7


@pytest.fixture
def running(tmp_path):
    """A stack with a TCP connection open, and its control server at tmp_path/ctl/stack.sock."""
    nic_a, nic_b = LoopbackNicPair()
    with Stack(nic_a, "10.0.0.1/24") as a, Stack(nic_b, "10.0.0.2/24") as b:
        listener = b.socket(SocketType.STREAM)
        listener.bind(IpAddress.any(7))
        listener.listen()
        client = a.socket(SocketType.STREAM)
        client.connect(IpAddress.parse("10.0.0.2:7"))
        peer, _ = listener.accept()
        with StackControlServer(b, str(tmp_path / "ctl" / "stack.sock")) as server:
            yield b, server
        peer.close()        # (held open till here: a dropped socket is closed)
        client.close()


def raw_exchange(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(data)
        return sock.makefile("rb").readline()


def test_the_server_answers_snapshots_and_survives_garbage(running):
    stack, server = running
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) == 0o700
    for garbage in (b"\x00\xff garbage\n", b'{"op": "shutdown"}\n', b"{" * (MAX_REQUEST + 100) + b"\n"):
        answer = json.loads(raw_exchange(server.path, garbage))
        assert answer["ok"] is False and answer["error"], answer
    with ControlClient(server.path, 5, peer="stack") as client:
        snap = client.request("snapshot")["snapshot"]
        again = client.request("snapshot")["snapshot"]       # one connection, many requests
    assert [s["state"] for s in snap["sockets"] if s["netid"] == "tcp"] == ["LISTEN", "ESTABLISHED"]
    assert again["time"] >= snap["time"] and stack.running


def test_a_second_server_on_a_live_path_is_refused_in_one_line(running):
    stack, server = running
    with pytest.raises(ControlPathError, match=r"^a stack is already listening on .*: give another --control PATH$"):
        StackControlServer(stack, server.path).start()


def test_no_stack_at_a_path_is_one_clear_error(tmp_path):
    with pytest.raises(ControlConnectError, match=r"^no stack listening at .*nothing\.sock \(no such socket\)$"):
        ControlClient(str(tmp_path / "nothing.sock"), 5, peer="stack").request("snapshot")


def test_mnet_monitor_once_prints_the_tables(running, capsys):
    stack, server = running
    assert main(["monitor", "--control", server.path, "--once", "--view", "ss"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Netid  State")
    assert " ESTABLISHED " in out and "10.0.0.2:7 " in out
    assert main(["monitor", "--control", server.path]) == 0
    assert "== rings ==" in capsys.readouterr().out


def test_mnet_monitor_finds_the_one_stack_in_the_default_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert main(["monitor", "--once"]) == 1
    assert capsys.readouterr().err == (f"mnet monitor: no stack listening in {tmp_path}/mnet: start `mnet stack`, "
                                       "or give --control PATH\n")
    nic_a, _ = LoopbackNicPair()
    with Stack(nic_a, "10.0.0.1/24") as stack, StackControlServer(stack) as server:
        assert server.path == default_stack_control_path() == f"{tmp_path}/mnet/stack-{os.getpid()}.sock"
        assert find_stacks() == [server.path]
        assert main(["monitor", "--view", "ip"]) == 0
        assert "inet 10.0.0.1/24" in capsys.readouterr().out


def test_mnet_monitor_errors_are_one_line(tmp_path, capsys):
    assert main(["monitor", "--control", str(tmp_path / "gone.sock")]) == 1
    assert capsys.readouterr().err == f"mnet monitor: no stack listening at {tmp_path}/gone.sock (no such socket)\n"
    assert main(["monitor", "--control", "x.sock", "--interval", "-1"]) == 2
    assert capsys.readouterr().err == "mnet monitor: bad --interval -1: give a number of seconds above 0\n"


def _live_monitor(path: str, **popen):
    return subprocess.Popen([sys.executable, "-m", "mnet.cli.main", "monitor", "--control", path,
                             "--interval", "0.1", "--view", "ip"], stdin=subprocess.DEVNULL, **popen)


def test_live_mode_redraws_a_terminal_and_ctrl_c_exits_0(running):
    _, server = running
    leader, follower = pty.openpty()
    proc = _live_monitor(server.path, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(CLEAR.encode()) < 2 and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        assert seen.count(CLEAR.encode()) >= 2, f"two redraws within 20 s, got: {seen[-2000:]!r}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()
        os.close(leader)
    assert b"inet 10.0.0.2/24" in seen and f"stack at {server.path} at ".encode() in seen


def test_live_mode_into_a_pipe_that_closes_ends_quietly(running):
    _, server = running
    proc = _live_monitor(server.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()            # the first refresh's stamp line
        proc.stdout.close()                       # like `| head -1`
        assert proc.wait(20) == 0
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()
    assert first.startswith(f"--- stack at {server.path} at ".encode()), first
    assert err == b"", err
