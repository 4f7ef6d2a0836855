"""A chunked request body (RFC 9112 section 7.1) decoded from the front of the parser's
buffer, sans-IO: ``take(buf)`` consumes what it can and says whether the body is whole.

Framing is read strictly, because a body whose end two programs see differently is
how requests are smuggled past a proxy: every chunk line, the CRLF after each
chunk's data and every trailer line must end in CRLF (no bare LF or CR here,
unlike the head); the size is plain hex digits (``int(x, 16)`` alone would also
take ``0x``, ``_``, signs and spaces). Chunk extensions are checked against
their grammar, then ignored; trailer fields are checked as field lines, then
ignored. Everything is bounded as it streams: the decoded body (413 as soon as
a chunk's size would pass the limit, before its data comes), each chunk line
and all extensions together, and the trailer section (as the head's fields, 431).
"""
from __future__ import annotations

import re

from .limits import HttpError, Limits

__all__ = ["ChunkedBody"]

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
EXTENSION = rb"[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + QUOTED + rb"))?"
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)((?:" + EXTENSION + rb")*)")
FIELD_LINE = re.compile(TOKEN + rb":[\t \x21-\x7e\x80-\xff]*")  # no folding, no control characters
MAX_SIZE_DIGITS = 16  # a size past 64 bits is no chunk anyone sent honestly: 400, not 413


class ChunkedBody:
    """One chunked body being decoded; ``body`` holds the decoded bytes so far."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.body = bytearray()
        self.done = False
        self._step = self._chunk_line   # what the next bytes are: a chunk line, data, its CRLF, a trailer
        self._data_left = 0             # bytes of the current chunk's data still to come
        self._extension_bytes = 0
        self._trailer_fields = self._trailer_bytes = 0

    def take(self, buf: bytearray) -> bool:
        """Consume from ``buf`` what belongs to the body; True once it is whole (trailers too).
        HttpError for a malformed or over-limit body."""
        while not self.done and self._step(buf):
            pass
        return self.done

    def _line(self, buf: bytearray, limit: int, too_long: HttpError) -> bytes | None:
        """The next CRLF-ended line of at most ``limit`` bytes, consumed and without its CRLF;
        None until it is whole."""
        end = buf.find(b"\n", 0, limit + 2)
        if end < 0:
            if len(buf) >= limit + 2:
                raise too_long
            return None
        line = bytes(buf[:end - 1]) if end > 0 and buf[end - 1] == 0x0D else None
        if line is None or b"\r" in line:
            raise HttpError(400, "a bare LF or CR in chunked framing (lines end in CRLF)")
        del buf[:end + 1]
        return line

    def _chunk_line(self, buf: bytearray) -> bool:
        line = self._line(buf, self.limits.chunk_line, HttpError(400, "chunk line too long"))
        if line is None:
            return False
        match = CHUNK_LINE.fullmatch(line)
        if match is None:
            raise HttpError(400, "malformed chunk size or extension")
        digits, extensions = match.groups()
        if len(digits.lstrip(b"0")) > MAX_SIZE_DIGITS:
            raise HttpError(400, "chunk size overflows")
        self._extension_bytes += len(extensions)
        if self._extension_bytes > self.limits.chunk_extensions:
            raise HttpError(413, "chunk extensions too large")
        size = int(digits, 16)
        if len(self.body) + size > self.limits.body:
            raise HttpError(413, "request body too large")
        self._data_left = size
        self._step = self._chunk_data if size else self._trailer_line
        return True

    def _chunk_data(self, buf: bytearray) -> bool:
        piece = buf[:self._data_left]
        if not piece:
            return False
        self.body += piece
        del buf[:len(piece)]
        self._data_left -= len(piece)
        if self._data_left == 0:
            self._step = self._data_end
        return True

    def _data_end(self, buf: bytearray) -> bool:
        if not b"\r\n".startswith(bytes(buf[:2])):
            raise HttpError(400, "chunk data not followed by CRLF")
        if len(buf) < 2:
            return False
        del buf[:2]
        self._step = self._chunk_line
        return True

    def _trailer_line(self, buf: bytearray) -> bool:
        left = max(self.limits.header_bytes - self._trailer_bytes, 0)
        line = self._line(buf, left, HttpError(431, "trailer fields too large"))
        if line is None:
            return False
        if not line:
            self.done = True
            return True
        self._trailer_bytes += len(line) + 2
        self._trailer_fields += 1
        if self._trailer_fields > self.limits.header_count:
            raise HttpError(431, "too many trailer fields")
        if not FIELD_LINE.fullmatch(line):
            raise HttpError(400, "malformed trailer field")
        return True
