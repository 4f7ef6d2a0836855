"""The guest side of the command channel (guest.init.CHANNEL_SCRIPT), run on the host.

busybox sh runs the real script with a pty standing in for /dev/ttyS1; a
thread plays QEMU's part, relaying between the pty and a unix socket, and
GuestChannel talks to that socket. No QEMU, no root.
"""

import os
import pty
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from guest.channel import GuestChannel
from guest.errors import GuestChannelError, GuestTimeout
from guest.init import CHANNEL_SCRIPT


class PtyBridge(threading.Thread):
    """Like QEMU's `-chardev socket,server=on`: serial port bytes <-> one socket client."""

    def __init__(self, master: int, path: str):
        super().__init__(daemon=True)
        self.master = master
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.stop = threading.Event()
        self.start()

    def run(self):
        conn = None
        while not self.stop.is_set():
            watch = [self.master] + ([conn] if conn else [self.server])
            ready, _, _ = select.select(watch, [], [], 0.1)
            for fd in ready:
                if fd is self.server:
                    conn, _ = self.server.accept()
                elif fd is conn:
                    data = conn.recv(65536)
                    if not data:
                        conn.close()
                        conn = None
                    else:
                        os.write(self.master, data)
                else:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:
                        return
                    if conn is not None:  # like QEMU: nobody connected, bytes are lost
                        conn.sendall(data)
        if conn:
            conn.close()


@pytest.fixture
def guest(tmp_path):
    """Start the channel script; yield the socket path and the script's console log."""
    applets = tmp_path / "bin"
    applets.mkdir()
    subprocess.run(["busybox", "--install", "-s", str(applets)], check=True)
    script = tmp_path / "channel"
    script.write_text(CHANNEL_SCRIPT)
    master, slave = pty.openpty()
    slave_name = os.ttyname(slave)
    console = tmp_path / "console.log"
    env = {"PATH": str(applets), "MNET_CHANNEL_DEV": slave_name, "MNET_PROFILE": "/nonexistent",
           "MNET_CHANNEL_WORK": str(tmp_path / "work")}
    with open(console, "wb") as log:
        proc = subprocess.Popen([str(applets / "sh"), str(script)], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    # Our copy of the slave stays open: with no slave open at all (before the
    # script opens it) reads on the master fail with EIO.
    bridge = PtyBridge(master, str(tmp_path / "cmd.sock"))
    deadline = time.monotonic() + 10
    while b"ready" not in console.read_bytes():
        assert proc.poll() is None, f"channel script exited: {console.read_text()}"
        assert time.monotonic() < deadline, f"channel script not ready: {console.read_text()}"
        time.sleep(0.02)
    yield str(tmp_path / "cmd.sock"), console
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(5)
    bridge.stop.set()
    bridge.join(5)
    bridge.server.close()
    os.close(master)
    os.close(slave)


@pytest.fixture
def ready_channel():
    """Opens a GuestChannel on a socket path and waits for the script; closes them all at the end."""
    opened = []

    def ready(sock) -> GuestChannel:
        channel = GuestChannel(sock)
        opened.append(channel)
        channel.wait_ready(timeout=10)
        return channel

    yield ready
    for channel in opened:
        channel.close()


def wait_until_no_command_runs(work, timeout=10):
    """Wait for every command directory of the channel script to go (it goes when the command has ended)."""
    deadline = time.monotonic() + timeout
    while running := sorted(p.name for p in work.glob("cmd-*")):
        assert time.monotonic() < deadline, f"guest commands still running after {timeout}s: {running}"
        time.sleep(0.02)


def test_ready_marker_names_the_device(guest):
    _, console = guest
    assert "mnet-guest: command channel on pts/" in console.read_text()


def test_status_and_merged_output(guest, ready_channel):
    channel = ready_channel(guest[0])
    result = channel.run("echo hello; echo oops >&2; exit 3", timeout=10)
    assert (result.status, result.output) == (3, "hello\noops\n")
    assert channel.run("true", timeout=10).output == ""
    assert channel.run("", timeout=10).status == 0


def test_stdin_is_dev_null_and_quoting_survives(guest, ready_channel):
    channel = ready_channel(guest[0])
    assert channel.run("cat; echo \"done $((6*7))\" 'a  b' \\$HOME", timeout=10).output == "done 42 a  b $HOME\n"
    multi = channel.run("for i in 1 2; do\n  echo line$i\ndone\n", timeout=10)
    assert multi.output == "line1\nline2\n"


def test_binary_output_arrives_intact(guest, ready_channel):
    channel = ready_channel(guest[0])
    result = channel.run("i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done", timeout=20)
    assert result.output_bytes == bytes(range(256))


def test_large_output(guest, ready_channel):
    channel = ready_channel(guest[0])
    result = channel.run("seq 1 40000", timeout=30)
    assert result.output == "".join(f"{i}\n" for i in range(1, 40001))


def test_background_command_and_concurrent_commands(guest, ready_channel):
    channel = ready_channel(guest[0])
    started = time.monotonic()
    # This script runs on the host here, not in a guest: stop exactly the
    # sleep we started (by pid), never anything else that sleeps.
    background = channel.run("sleep 30 > /dev/null 2>&1 & echo $!", timeout=10)
    assert background.output.strip().isdigit(), background.output
    assert time.monotonic() - started < 5
    slow = channel.start("sleep 1; echo slow")
    assert channel.run("echo fast", timeout=10).output == "fast\n"
    assert channel.wait(slow, timeout=10).output == "slow\n"
    os.kill(int(background.output), signal.SIGTERM)


def test_kill_on_timeout_stops_the_whole_command(guest, ready_channel, tmp_path):
    channel = ready_channel(guest[0])
    marker = tmp_path / "survived"
    with pytest.raises(GuestTimeout, match="did not finish"):
        channel.run(f"sleep 1 & sleep 1.5; touch {marker}", timeout=0.3)
    # The PONG proves the guest has read the RUN and the KILL (it reads lines
    # in order); the command's directory goes only once its shell has exited,
    # so after that the shell can no longer touch the marker.
    channel.wait_ready(timeout=10)
    wait_until_no_command_runs(tmp_path / "work")
    assert not marker.exists()
    assert channel.run("echo still here", timeout=10).output == "still here\n"


def test_garbage_and_reconnect(guest, ready_channel):
    sock, _ = guest
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(sock)
    raw.sendall(b"hello there\nRUN\nRUN x!y abc\nPING\n\x00\x01\x02\nRUN bad1 %%%notbase64\n")
    raw.settimeout(10)
    reply = b""
    while b"\n" not in reply:
        reply += raw.recv(100)
    assert reply == b"ERR bad1 bad-base64\n"
    raw.close()
    channel = ready_channel(sock)  # a new host connection works as before
    assert channel.run("echo ok", timeout=10).output == "ok\n"


def test_duplicate_id_is_refused(guest):
    sock, _ = guest
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(sock)
    raw.sendall(b"RUN d1 c2xlZXAgMQ==\nRUN d1 dHJ1ZQ==\n")  # "sleep 1" twice under one id
    raw.settimeout(10)
    reply = b""
    while b"END d1" not in reply:
        reply += raw.recv(1000)
    assert reply.startswith(b"ERR d1 duplicate-id\nBEGIN d1\nEND d1 0\n")
    raw.close()


def test_closed_socket_reported_after_guest_goes_away(guest, ready_channel, tmp_path):
    channel = ready_channel(guest[0])
    channel.close()
    with pytest.raises(GuestChannelError, match="wait_ready"):
        channel.run("true")


def test_kill_reports_status_143(guest, ready_channel):
    sock, _ = guest
    ready_channel(sock).close()  # the script is listening
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(sock)
    # One KILL, right behind the RUN: it reaches the guest before the command
    # has started, and must not be lost ("sleep 10" would end with status 0).
    raw.sendall(b"RUN k1 c2xlZXAgMTA=\nKILL k1\n")
    raw.settimeout(8)  # less than the 10 s the sleep would run
    reply = b""
    while b"END k1" not in reply:
        try:
            data = raw.recv(1000)
        except socket.timeout:
            pytest.fail(f"no END within 8 s after KILL: {reply!r}")
        assert data, f"socket closed before END: {reply!r}"
        reply += data
    assert reply == b"BEGIN k1\nEND k1 143\n"
    raw.close()
