"""The command channel's line protocol, without any I/O (see docs/guest.md).

Host to guest, one line each:
    PING <id>                  -> PONG <id>
    RUN <id> <base64 command>  -> BEGIN <id> / base64 output lines / END <id> <status>
    KILL <id>                  (stop a running command's session; its END follows)
Guest to host, besides the above:
    ERR <id> <reason>          (duplicate-id, bad-base64, bad-request)

Ids are [A-Za-z0-9_.-]+. Lines end with "\\n"; a trailing "\\r" is ignored.
Anything else is garbage: counted and skipped, so half a line left over from
before the host connected does no harm.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/=]+$")
#: A "line" longer than this without a newline is dropped as garbage.
MAX_LINE = 64 * 1024


def valid_id(ident: str) -> bool:
    """True if the id can travel in the protocol."""
    return bool(_ID.match(ident))


def _check_id(ident: str) -> str:
    if not valid_id(ident):
        raise ValueError(f"bad command id {ident!r}: use letters, digits, '_', '.', '-'")
    return ident


def encode_ping(ident: str) -> bytes:
    return f"PING {_check_id(ident)}\n".encode()


def encode_run(ident: str, command: str) -> bytes:
    payload = base64.b64encode(command.encode("utf-8")).decode("ascii")
    # An empty payload would make the guest see two fields: send a harmless no-op instead.
    return f"RUN {_check_id(ident)} {payload or base64.b64encode(b':').decode()}\n".encode()


def encode_kill(ident: str) -> bytes:
    return f"KILL {_check_id(ident)}\n".encode()


@dataclass(frozen=True)
class Pong:
    ident: str


@dataclass(frozen=True)
class Result:
    ident: str
    status: int
    output: bytes


@dataclass(frozen=True)
class Failure:
    """The guest refused a request, or its reply arrived damaged."""

    ident: str
    reason: str


Event = Pong | Result | Failure


@dataclass
class ReplyParser:
    """Feed bytes from the guest, get Pong / Result / Failure events back."""

    garbage_lines: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _block_id: str | None = None
    _block: list[bytes] = field(default_factory=list)
    _block_bad: bool = False

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the events completed by them, in order."""
        self._buffer += data
        events: list[Event] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > MAX_LINE:
                    self._buffer.clear()
                    self._garbage()
                break
            line = bytes(self._buffer[:newline]).rstrip(b"\r")
            del self._buffer[: newline + 1]
            if len(line) > MAX_LINE:
                self._garbage()
                continue
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _garbage(self) -> None:
        self.garbage_lines += 1
        if self._block_id is not None:
            self._block_bad = True

    def _line(self, line: bytes) -> Event | None:
        if self._block_id is not None and _BASE64_LINE.match(line):
            self._block.append(line)
            return None
        try:
            words = line.decode("ascii").split()
        except UnicodeDecodeError:
            self._garbage()
            return None
        if len(words) == 2 and words[0] == "PONG" and valid_id(words[1]):
            return Pong(words[1])
        if len(words) >= 2 and words[0] == "ERR" and valid_id(words[1]):
            return Failure(words[1], " ".join(words[2:]) or "unspecified error")
        if len(words) == 2 and words[0] == "BEGIN" and valid_id(words[1]):
            previous = self._block_id
            self._start(words[1])
            if previous is not None:
                return Failure(previous, "reply cut short by the next reply")
            return None
        if (len(words) == 3 and words[0] == "END" and words[1] == self._block_id
                and re.fullmatch(r"\d{1,3}", words[2])):
            return self._finish(int(words[2]))
        self._garbage()
        return None

    def _start(self, ident: str) -> None:
        self._block_id = ident
        self._block = []
        self._block_bad = False

    def _finish(self, status: int) -> Event:
        ident, lines, bad = self._block_id, self._block, self._block_bad
        self._block_id, self._block, self._block_bad = None, [], False
        assert ident is not None
        if bad:
            return Failure(ident, "garbled output lines")
        try:
            output = base64.b64decode(b"".join(lines), validate=True)
        except (binascii.Error, ValueError):
            return Failure(ident, "output is not valid base64")
        return Result(ident, status, output)
