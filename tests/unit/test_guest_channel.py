"""guest.channel against a fake guest speaking the protocol over a unix socket."""

import base64
import socket
import threading
import time

import pytest

from guest.channel import CommandResult, GuestChannel
from guest.errors import GuestChannelError, GuestTimeout


class FakeGuest:
    """Accepts one connection; `respond(line)` returns the bytes to send back."""

    def __init__(self, path, respond, delay=0.0):
        self.path = str(path)
        self.respond = respond
        self.received: list[str] = []
        self.conn = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(delay,), daemon=True)
        self._thread.start()

    def _serve(self, delay):
        if self._stop.wait(delay):
            return
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(1)
        server.settimeout(5)
        try:
            self.conn, _ = server.accept()
        except OSError:
            return
        finally:
            server.close()
        buffer = b""
        self.conn.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = self.conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.received.append(line.decode())
                reply = self.respond(line.decode())
                if reply:
                    self.conn.sendall(reply)

    def close(self):
        self._stop.set()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(5)


def shell(line):
    """Answers PING, and RUN with the command text echoed back, status 7 for 'fail'."""
    words = line.split()
    if words[0] == "PING":
        return f"PONG {words[1]}\n".encode()
    if words[0] == "RUN":
        command = base64.b64decode(words[2])
        status = 7 if command == b"fail" else 0
        return b"BEGIN " + words[1].encode() + b"\n" + base64.encodebytes(b"ran " + command) + \
            f"END {words[1]} {status}\n".encode()
    return None


@pytest.fixture
def sock(tmp_path):
    return tmp_path / "cmd.sock"


@pytest.fixture
def open_channel():
    """Makes GuestChannels on a socket path; closes them all at the end."""
    opened = []

    def make(sock) -> GuestChannel:
        opened.append(GuestChannel(str(sock)))
        return opened[-1]

    yield make
    for channel in opened:
        channel.close()


@pytest.fixture
def guests():
    made = []
    yield made
    for guest in made:
        guest.close()


def test_wait_ready_retries_until_socket_exists_then_runs(sock, guests, open_channel):
    guests.append(FakeGuest(sock, shell, delay=0.3))
    with open_channel(sock) as channel:
        channel.wait_ready(timeout=5)
        assert channel.run("uname -r") == CommandResult(0, "ran uname -r", b"ran uname -r")
        result = channel.run("fail")
        assert result.status == 7 and not result.ok and result.output == "ran fail"


def test_connect_timeout_message(sock, open_channel):
    channel = open_channel(sock)
    started = time.monotonic()
    with pytest.raises(GuestTimeout, match="could not connect to .*cmd.sock within 0.3s"):
        channel.wait_ready(timeout=0.3)
    assert time.monotonic() - started < 2


def test_silent_guest_times_out_after_pings(sock, guests, open_channel):
    guest = FakeGuest(sock, lambda line: None)
    guests.append(guest)
    with pytest.raises(GuestTimeout, match="did not answer PING within 1.2s"):
        open_channel(sock).wait_ready(timeout=1.2)
    assert len([l for l in guest.received if l.startswith("PING ")]) >= 2


def test_garbage_and_foreign_replies_are_skipped(sock, guests, open_channel):
    def noisy(line):
        words = line.split()
        if words[0] == "PING":
            return b"\x00\xffnoise\nPONG someone-else\nBEGIN other-id\nQUJD\nEND other-id 0\n" + shell(line)
        return shell(line)

    guests.append(FakeGuest(sock, noisy))
    channel = open_channel(sock)
    channel.wait_ready(timeout=5)
    assert channel.garbage_lines == 1
    assert channel.run("x").output == "ran x"


def test_replies_out_of_order(sock, guests, open_channel):
    held = []

    def late_first(line):
        words = line.split()
        if words[0] == "RUN" and not held:
            held.append(shell(line))
            return None
        reply = shell(line)
        if words[0] == "RUN":
            reply += held.pop()
        return reply

    guests.append(FakeGuest(sock, late_first))
    channel = open_channel(sock)
    channel.wait_ready(timeout=5)
    first = channel.start("first")
    second = channel.start("second")
    assert channel.wait(second, timeout=5).output == "ran second"
    assert channel.wait(first, timeout=5).output == "ran first"


def test_timeout_sends_kill(sock, guests, open_channel):
    guest = FakeGuest(sock, lambda line: shell(line) if line.startswith("PING") else None)
    guests.append(guest)
    channel = open_channel(sock)
    channel.wait_ready(timeout=5)
    with pytest.raises(GuestTimeout, match="'sleep 99' did not finish within 0.3s"):
        channel.run("sleep 99", timeout=0.3)
    deadline = time.monotonic() + 5
    while not any(l.startswith("KILL ") for l in guest.received) and time.monotonic() < deadline:
        time.sleep(0.02)
    run_id = next(l.split()[1] for l in guest.received if l.startswith("RUN "))
    assert f"KILL {run_id}" in guest.received


def test_err_reply_raises_channel_error(sock, guests, open_channel):
    def refuse(line):
        words = line.split()
        return shell(line) if words[0] == "PING" else f"ERR {words[1]} bad-base64\n".encode()

    guests.append(FakeGuest(sock, refuse))
    channel = open_channel(sock)
    channel.wait_ready(timeout=5)
    with pytest.raises(GuestChannelError, match="'true' failed in the channel: bad-base64"):
        channel.run("true")


def test_guest_closing_socket_is_a_channel_error(sock, guests, open_channel):
    guest = FakeGuest(sock, shell)
    guests.append(guest)
    channel = open_channel(sock)
    channel.wait_ready(timeout=5)
    guest.close()
    with pytest.raises(GuestChannelError, match="QEMU exited"):
        channel.run("anything", timeout=5)


def test_misuse_is_reported(sock, open_channel):
    channel = open_channel(sock)
    with pytest.raises(GuestChannelError, match="call wait_ready"):
        channel.run("true")
    with pytest.raises(GuestChannelError, match="unknown command id"):
        channel.wait("nope")
    channel.close()
    channel.close()
