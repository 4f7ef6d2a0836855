"""Host side of the guest command channel (the guest's /dev/ttyS1).

QEMU serves the guest's second serial port on a unix socket:

    -chardev socket,id=mnetcmd,path=SOCK,server=on,wait=off -serial chardev:mnetcmd

(after the console's own -serial). GuestChannel connects to SOCK and speaks
the line protocol of guest.protocol:

    with GuestChannel(sock) as ch:
        ch.wait_ready(timeout=60)
        result = ch.run("uname -r")           # CommandResult(status=0, output="6.1.0-...\\n")
        server = ch.start("iperf3 -s -1")      # runs while other commands run
        ch.run("iperf3 -c 10.0.0.1 -t 5", timeout=120)
        ch.wait(server, timeout=30)

A command runs under `sh` in the guest with stdin from /dev/null and stdout
and stderr captured together; the output arrives when the command ends.
`run("daemon &")` returns at once (the shell exits; the daemon lives on, but
its output is discarded: redirect it to a file if you want it).
Not thread-safe: use one GuestChannel per thread.
"""

from __future__ import annotations

import errno
import secrets
import select
import socket
import time
from dataclasses import dataclass, field

from guest.errors import GuestChannelError, GuestTimeout
from guest.protocol import Failure, Pong, ReplyParser, Result, encode_kill, encode_ping, encode_run

PING_INTERVAL = 0.5


@dataclass(frozen=True)
class CommandResult:
    """How a guest command ended: exit status and combined stdout+stderr."""

    status: int
    output: str
    output_bytes: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        return self.status == 0


class GuestChannel:
    """Runs shell commands in a guest over its serial command channel."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = str(socket_path)
        self._sock: socket.socket | None = None
        self._parser = ReplyParser()
        self._session = secrets.token_hex(3)
        self._counter = 0
        self._pongs: set[str] = set()
        self._done: dict[str, Result | Failure] = {}
        self._commands: dict[str, str] = {}  # id -> command, for messages

    def __enter__(self) -> "GuestChannel":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def garbage_lines(self) -> int:
        """Lines from the guest that were not part of the protocol (skipped)."""
        return self._parser.garbage_lines

    def wait_ready(self, timeout: float) -> None:
        """Connect (retrying until QEMU has made the socket) and PING until PONG.

        Raises GuestTimeout if the guest does not answer within `timeout`
        seconds, GuestChannelError if QEMU closes the socket.
        """
        deadline = time.monotonic() + timeout
        self._connect(deadline, timeout)
        sent: set[str] = set()
        next_ping = 0.0
        while True:
            now = time.monotonic()
            if sent & self._pongs:
                return
            if now >= deadline:
                raise GuestTimeout(
                    f"guest command channel on {self.socket_path} did not answer PING within {timeout:g}s "
                    "(guest still booting, not an mnet image, or no second -serial on this socket?)")
            if now >= next_ping:
                ident = self._new_id("ping")
                sent.add(ident)
                self._send(encode_ping(ident))
                next_ping = now + PING_INTERVAL
            self._pump(min(deadline, next_ping))

    def start(self, command: str) -> str:
        """Start a command in the guest; returns its id for wait()."""
        self._require_connection()
        ident = self._new_id("c")
        self._commands[ident] = command
        self._send(encode_run(ident, command))
        return ident

    def wait(self, ident: str, timeout: float = 60) -> CommandResult:
        """Wait for a started command to end. On timeout it is killed and GuestTimeout raised."""
        if ident not in self._commands:
            raise GuestChannelError(f"unknown command id {ident!r}")
        deadline = time.monotonic() + timeout
        while ident not in self._done:
            if time.monotonic() >= deadline:
                self.kill(ident)
                # Forget it: the END that follows the kill is then ignored.
                command = self._commands.pop(ident)
                raise GuestTimeout(
                    f"guest command {command!r} did not finish within {timeout:g}s (killed)")
            self._pump(deadline)
        outcome = self._done.pop(ident)
        command = self._commands.pop(ident)
        if isinstance(outcome, Failure):
            raise GuestChannelError(f"guest command {command!r} failed in the channel: {outcome.reason}")
        return CommandResult(outcome.status, outcome.output.decode("utf-8", errors="replace"), outcome.output)

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run a shell command in the guest and wait for it (see wait())."""
        return self.wait(self.start(command), timeout)

    def kill(self, ident: str) -> None:
        """Ask the guest to SIGTERM the command's whole session (best effort)."""
        if self._sock is not None:
            try:
                self._send(encode_kill(ident))
            except GuestChannelError:
                pass

    def close(self) -> None:
        """Close the socket (guest commands keep running)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- I/O -----------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}{self._session}-{self._counter}"

    def _require_connection(self) -> socket.socket:
        if self._sock is None:
            raise GuestChannelError("not connected to the guest: call wait_ready() first")
        return self._sock

    def _connect(self, deadline: float, timeout: float) -> None:
        if self._sock is not None:
            return
        last_error: OSError | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                sock.setblocking(False)
                self._sock = sock
                return
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                last_error = exc
            except OSError:
                sock.close()
                raise
            if time.monotonic() >= deadline:
                raise GuestTimeout(f"could not connect to {self.socket_path} within {timeout:g}s: {last_error}")
            time.sleep(0.05)

    def _send(self, data: bytes) -> None:
        sock = self._require_connection()
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                select.select([], [sock], [], 1.0)
                continue
            except OSError as exc:
                raise GuestChannelError(f"writing to {self.socket_path} failed: {exc} (QEMU exited?)") from exc
            view = view[sent:]

    def _pump(self, until: float) -> None:
        """Read whatever arrives before `until` and file the events."""
        sock = self._require_connection()
        remaining = max(0.0, until - time.monotonic())
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return
            raise GuestChannelError(f"reading from {self.socket_path} failed: {exc}") from exc
        if not data:
            self.close()
            raise GuestChannelError(f"{self.socket_path} closed by the other end (QEMU exited?)")
        for event in self._parser.feed(data):
            if isinstance(event, Pong):
                self._pongs.add(event.ident)
            elif event.ident in self._commands:
                self._done[event.ident] = event
            # Replies to ids we never sent (an earlier session's) are ignored.
