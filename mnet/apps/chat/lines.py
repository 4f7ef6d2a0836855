"""A client's bytes as lines of text: LF or CRLF ends a line, a line has a length limit,
bytes that are not UTF-8 (and control characters) arrive as U+FFFD. Sans-IO."""
from __future__ import annotations

import enum
import re

REPLACEMENT = "\ufffd"
# C0 controls (tab aside), DEL and C1 controls: they could drive another client's terminal.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class Overlong(enum.Enum):
    """What :meth:`LineReader.feed` gives instead of a line longer than its limit."""

    LINE = "line"


OVERLONG = Overlong.LINE


def to_text(raw: bytes) -> str:
    """One line's bytes as printable text (invalid UTF-8 and control characters replaced)."""
    return _CONTROLS.sub(REPLACEMENT, raw.decode("utf-8", "replace"))


class LineReader:
    """Bytes in, lines out. A line over ``limit`` bytes (its end of line aside) comes out once
    as OVERLONG, however long it goes on; its bytes are dropped as they come, so a client
    never makes the server hold more than ``limit`` bytes of it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line: drop bytes up to its LF

    def feed(self, data: bytes) -> list[str | Overlong]:
        self._buf += data
        out: list[str | Overlong] = []
        while (end := self._buf.find(b"\n")) >= 0:
            raw = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if self._skipping:
                self._skipping = False
                continue
            out.append(self._line(raw.removesuffix(b"\r")))
        # Room for the limit and a CR that may come before the LF.
        if len(self._buf) > self.limit + 1:
            self._buf.clear()
            if not self._skipping:
                self._skipping = True
                out.append(OVERLONG)
        return out

    def finish(self) -> list[str | Overlong]:
        """The end of the stream: a last line without its LF still counts."""
        raw, skipping = bytes(self._buf), self._skipping
        self._buf.clear()
        self._skipping = False
        if skipping or not raw:
            return []
        return [self._line(raw.removesuffix(b"\r"))]

    def _line(self, raw: bytes) -> str | Overlong:
        return OVERLONG if len(raw) > self.limit else to_text(raw)
