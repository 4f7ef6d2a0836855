"""The control socket on a running switch's loop: permissions, the client, and
clients that misbehave (garbage, oversized, half-open, not reading, too many)
while the switch keeps switching."""
from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from nicdev.net import control_server
from nicdev.net.background import BackgroundSwitch
from nicdev.net.control import ControlHandler
from nicdev.net.control_client import (ControlClient, ControlConnectError, ControlRequestError,
                                       find_switches)
from nicdev.net.control_server import ControlPathError, ControlServer, default_control_path
from nicdev.net.portspec import PortSpecError, parse_port_spec
from nicdev.net.qmp_link import QmpLinkNotifier, qmp_set_link, QmpLinkError

from support.fake_qmp import FakeQmp
from support.switch_ports import BCAST, A, FakePort, frame
from support.waiting import wait_for


class Lab:
    def __init__(self, path: str) -> None:
        self.bg = BackgroundSwitch()
        self.p1 = self.bg.add_port(FakePort("p1"))
        self.p2 = self.bg.add_port(FakePort("p2"))
        self.server = ControlServer(ControlHandler(self.bg.switch), path)
        self.bg.call(lambda: self.server.start(self.bg.loop))

    def forwards(self) -> bool:
        """A frame from p1 still reaches p2."""
        before = len(self.p2.sent)
        self.bg.call(lambda: self.p1.deliver(frame(BCAST, A)))
        return len(self.p2.sent) == before + 1

    def close(self) -> None:
        self.bg.call(self.server.close)
        self.bg.close()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(str(tmp_path / "ctl" / "switch.sock"))
    yield lab
    lab.close()


def raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)          # blocking: a full backlog waits instead of failing
    sock.settimeout(5)
    return sock


def read_line(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return json.loads(data)


def test_socket_is_0600_in_a_0700_directory_and_removed_on_close(tmp_path):
    path = tmp_path / "ctl" / "switch.sock"
    lab = Lab(str(path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    finally:
        lab.close()
    assert not path.exists() and not path.parent.exists()


def test_a_directory_open_to_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    server = ControlServer(ControlHandler(None), str(shared / "s.sock"))
    with pytest.raises(ControlPathError, match="open to others .mode 755.: use a private directory"):
        server.start(None)


def test_a_file_in_the_way_is_refused_and_a_stale_socket_replaced(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "file").write_text("x")
    with pytest.raises(ControlPathError, match="exists and is not a socket"):
        ControlServer(ControlHandler(None), str(tmp_path / "d" / "file")).start(None)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "d" / "stale.sock"))
    stale.close()                       # bound, never listening: what a killed switch leaves
    lab = Lab(str(tmp_path / "d" / "stale.sock"))
    try:
        with ControlClient(str(tmp_path / "d" / "stale.sock")) as client:
            assert len(client.ports()) == 2
        with pytest.raises(ControlPathError, match="already listening"):
            ControlServer(ControlHandler(None), str(tmp_path / "d" / "stale.sock")).start(None)
    finally:
        lab.close()


def test_default_path_is_per_process_under_the_runtime_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_control_path(1234) == str(tmp_path / "mnet" / "switch-1234.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = "/run/mnet" if os.geteuid() == 0 else f"/tmp/mnet-{os.geteuid()}"
    assert default_control_path(7) == f"{expected}/switch-7.sock"


def test_find_switches_lists_the_live_sockets(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert find_switches() == []
    lab = Lab(default_control_path())
    try:
        assert find_switches() == [default_control_path()]
    finally:
        lab.close()


def test_the_client_has_one_method_per_op(lab):
    with ControlClient(lab.server.path) as client:
        assert [p["name"] for p in client.ports()] == ["p1", "p2"]
        assert client.link("p2", False) == {"port": "p2", "link": False, "qmp": None}
        assert not lab.forwards()
        client.link("p2", True)
        assert lab.forwards()
        assert client.counters()["ports"]["p2"]["tx_frames"] == 1
        assert client.impair("p1", "loss=1%")["impairment"]["out"]["impairment"] == "loss 1%"
        client.impair("p1", None)
        with pytest.raises(ControlRequestError, match="no port named 'zz'"):
            client.link("zz", True)
        with pytest.raises(ControlRequestError, match="not supported by port 'p1'"):
            client.fault("p1", "stall-tx")
        assert client.ports()                        # the connection survives an error reply


def test_no_switch_is_a_connect_error(tmp_path):
    with pytest.raises(ControlConnectError, match="no switch listening at .*no such socket"):
        ControlClient(str(tmp_path / "none.sock")).ports()


def test_garbage_lines_get_error_replies_and_the_switch_keeps_working(lab):
    sock = raw(lab.server.path)
    for line in (b"garbage", b"\x00\xff\xfe", b"{", b"[]", b'{"op": "reboot"}', b'{"op":"link","port":1}'):
        sock.sendall(line + b"\n")
        reply = read_line(sock)
        assert reply["ok"] is False and reply["error"], line
        assert lab.forwards()
    sock.sendall(b'{"op": "ports"}\n')
    assert read_line(sock)["ok"] is True
    sock.close()


def test_an_oversized_request_is_answered_and_the_next_one_served(lab):
    sock = raw(lab.server.path)
    sock.sendall(b"x" * (200 * 1024))
    assert "request longer than 65536 bytes" in read_line(sock)["error"]
    assert lab.forwards()
    sock.sendall(b"x" * 1000 + b'\n{"op": "ports"}\n')
    assert read_line(sock)["ok"] is True           # the rest of the long line was skipped
    sock.close()


def test_a_half_open_client_is_answered_and_dropped(lab, monkeypatch):
    monkeypatch.setattr(control_server, "PARTIAL_TIMEOUT", 0.1)
    sock = raw(lab.server.path)
    sock.sendall(b'{"op": "po')
    assert "not finished within" in read_line(sock)["error"]
    assert sock.recv(10) == b""
    sock.close()
    assert lab.server.dropped_clients == 1 and lab.forwards()


def test_a_client_that_does_not_read_is_dropped(lab, monkeypatch):
    monkeypatch.setattr(control_server, "MAX_PENDING", 64 * 1024)
    sock = raw(lab.server.path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = b'{"op": "counters"}\n' * 200
    try:
        for _ in range(200):
            sock.sendall(request)
    except OSError:
        pass                                        # the switch hung up on us: what we wanted
    wait_for(lambda: lab.server.dropped_clients == 1, "the slow client to be dropped")
    sock.close()
    assert lab.forwards()
    with ControlClient(lab.server.path) as client:
        assert client.ports()


def test_a_client_that_half_closes_still_gets_its_replies(lab):
    sock = raw(lab.server.path)
    sock.sendall(b'{"op": "ports"}\n{"op": "counters"}\n')
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert [json.loads(line)["ok"] for line in data.splitlines()] == [True, True]
    wait_for(lambda: lab.server.clients == 0, "the server to close the finished client")
    sock.close()


def test_too_many_clients_are_turned_away(lab, monkeypatch):
    monkeypatch.setattr(control_server, "MAX_CLIENTS", 2)
    held = [raw(lab.server.path) for _ in range(2)]
    wait_for(lambda: lab.server.clients == 2, "two clients")
    extra = raw(lab.server.path)
    assert "too many control clients" in read_line(extra)["error"]
    extra.close()
    for sock in held:
        sock.close()
    wait_for(lambda: lab.server.clients == 0, "the held clients to go")
    with ControlClient(lab.server.path) as client:
        assert client.ports()


def test_many_clients_at_once(lab):
    socks = [raw(lab.server.path) for _ in range(20)]
    for sock in socks:
        sock.sendall(b'{"op": "ports"}\n')
    assert all(read_line(sock)["ok"] for sock in socks)
    for sock in socks:
        sock.close()


# -- telling a QEMU guest through QMP ------------------------------------------------------------
def test_qmp_set_link_talks_qmp(tmp_path):
    server = FakeQmp(tmp_path / "qmp.sock")
    try:
        qmp_set_link(server.path, "net0-dev", False)
        assert server.commands == [("qmp_capabilities", {}), ("set_link", {"name": "net0-dev", "up": False})]
        server.replies["set_link"] = lambda a: ("error", "DeviceNotFound", "Device 'x' not found")
        with pytest.raises(QmpLinkError, match="set_link failed: DeviceNotFound: Device 'x' not found"):
            qmp_set_link(server.path, "x", True)
    finally:
        server.close()
    with pytest.raises(QmpLinkError, match="cannot reach QMP"):
        qmp_set_link(str(tmp_path / "none.sock"), "net0-dev", True)


def test_the_notifier_works_off_the_loop_and_keeps_the_outcome(tmp_path):
    server = FakeQmp(tmp_path / "qmp.sock")
    try:
        notifier = QmpLinkNotifier(server.path, "dev9")
        notifier(False)
        notifier(True)
        assert notifier.wait_idle(10)
        assert [c for c in server.commands if c[0] == "set_link"] == [
            ("set_link", {"name": "dev9", "up": False}), ("set_link", {"name": "dev9", "up": True})]
        assert notifier.last.startswith("guest link up")
    finally:
        server.close()
    broken = QmpLinkNotifier(str(tmp_path / "none.sock"))
    broken(False)
    assert broken.wait_idle(10) and broken.last.startswith("QMP set_link failed: cannot reach QMP")


def test_port_spec_qmp_keys():
    spec = parse_port_spec("vm=vhost-user:/tmp/a.sock,qmp=/tmp/vm-qmp.sock,qmp_device=nic1")
    assert spec.params["qmp"] == "/tmp/vm-qmp.sock" and spec.params["qmp_device"] == "nic1"
    with pytest.raises(PortSpecError, match="qmp_device needs qmp=PATH"):
        parse_port_spec("vm=vhost-user:/tmp/a.sock,qmp_device=nic1")
    with pytest.raises(PortSpecError, match="unknown key 'qmp'"):
        parse_port_spec("t=tap:tap9,qmp=/tmp/q.sock")


# -- tracing through the socket, and `mnet trace live` ------------------------------------------
def test_trace_ops_on_the_real_switch(lab):
    with ControlClient(lab.server.path) as client:
        assert client.trace("p1", True) == {"port": "p1", "on": True}
        client.link("p1", False)
        client.link("p1", True)
        lab.bg.call(lambda: lab.p1.set_link(True))
        reply = client.trace_read(since=0)
        kinds = [(r["port"], r["kind"]) for r in reply["records"]]
        assert kinds[0] == ("p1", "trace") and ("p1", "link") in kinds
        assert [r["up"] for r in reply["records"] if r["kind"] == "link"] == [False, True, True]
        assert client.trace_read(since=reply["next"])["records"] == []
        client.trace(None, False)
        with pytest.raises(ControlRequestError, match="no port named 'zz'"):
            client.trace("zz", True)


def test_trace_live_prints_the_records_as_they_come(lab, capsys):
    from mnet.cli.main import main

    with ControlClient(lab.server.path) as client:
        client.trace("p2", True)
        client.link("p2", False)                    # before live started: only with --from-start
        lab.bg.loop.call_later(0.3, lambda: lab.p2.set_link(True))
        status = main(["trace", "live", f"--control={lab.server.path}", "--from-start", "--duration", "1.0",
                       "--kind", "link"])
        out = capsys.readouterr().out.splitlines()
        assert status == 0 and len(out) == 2, out
        assert out[0].split()[1:] == ["p2", "*", "link", "down"] and out[1].split()[1:] == ["p2", "*", "link", "up"]
        lab.bg.loop.call_later(0.3, lambda: lab.p2.set_link(False))
        assert main(["trace", "live", f"--control={lab.server.path}", "--duration", "1.0", "--kind", "link",
                     "--port", "p2"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and out[0].endswith("p2 * link down"), out


def test_trace_live_start_traces_and_stops_again(lab, capsys):
    from mnet.cli.main import main

    lab.bg.loop.call_later(0.3, lambda: lab.p1.set_link(False))
    assert main(["trace", "live", f"--control={lab.server.path}", "--start", "--port", "p1", "--duration", "1.0",
                 "--kind", "link"]) == 0
    assert capsys.readouterr().out.strip().endswith("p1 * link down")
    assert not lab.bg.call(lambda: lab.p1.tracer.on)
    assert main(["trace", "live", "--control", str(lab.server.path) + ".none", "--duration", "1"]) == 1
    assert "no switch listening at" in capsys.readouterr().err
