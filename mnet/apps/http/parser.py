"""HTTP/1.x requests from bytes, sans-IO: ``feed()`` what the connection read, then
``next_request()`` until it returns None (it needs more bytes).

Malformed or over-limit input raises :class:`HttpError` (and nothing else)
with the status the server answers before closing the connection: 400 for
syntax (and for framing that cannot be trusted: Transfer-Encoding with
Content-Length, a transfer coding on HTTP/1.0, chunked not last), 414 for a
request line over the limit, 431 for too many or too large headers, 413 for a
body over the limit, 501 for a transfer coding other than chunked, 505 for an
HTTP major version other than 1. Several requests in one buffer (pipelining)
come out one by one; a body, announced by Content-Length or sent chunked
(``chunked.py``), is read (bounded) and kept on the request. Lines of the head
may end in CRLF or, as RFC 9112 section 2.2 allows a recipient to accept, a
bare LF (so `nc` without -C is a client).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .chunked import ChunkedBody
from .limits import HttpError, Limits

__all__ = ["Limits", "HttpError", "Request", "RequestParser"]

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"[\x21-\x7e]+")
VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than HT
END_OF_HEAD = re.compile(rb"\n\r?\n")
DIGITS = re.compile(r"[0-9]{1,18}")
CHUNKED = -1  # the body length _framing gives a chunked body


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-cased, in the order they came."""

    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (the first one if repeated)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` header, lower-cased (for Connection)."""
        name = name.lower()
        return {t.strip().lower() for k, v in self.headers if k == name for t in v.split(",") if t.strip()}

    @property
    def http_version(self) -> str:
        return f"HTTP/{self.version[0]}.{self.version[1]}"

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept: HTTP/1.1 unless `Connection: close`,
        HTTP/1.0 only with `Connection: keep-alive`."""
        tokens = self.tokens("connection")
        if "close" in tokens:
            return False
        return self.version >= (1, 1) or "keep-alive" in tokens

    @property
    def line(self) -> str:
        """The request line as it came (for the access log)."""
        return f"{self.method} {self.target} {self.http_version}"


class RequestParser:
    """Bytes of one connection in, :class:`Request` objects out."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._waiting: Request | None = None  # a parsed head whose body is still coming
        self._body_length = 0                 # of a Content-Length body
        self._chunked: ChunkedBody | None = None
        self._failed: HttpError | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def waiting_for_body(self) -> Request | None:
        """The request whose head is parsed while its body is still coming (for Expect: 100-continue)."""
        return self._waiting

    @property
    def partial(self) -> bool:
        """Whether bytes of an unfinished request are held (so an end or a timeout now cuts it)."""
        return self._waiting is not None or bool(self._buf.lstrip(b"\r\n"))

    def next_request(self) -> Request | None:
        """The next complete request, or None until more bytes come; HttpError for a bad one
        (raised again on every later call: the connection is over)."""
        if self._failed is not None:
            raise self._failed
        try:
            if self._waiting is None:
                self._waiting = self._parse_head()
                if self._waiting is None:
                    return None
            return self._take_body()
        except HttpError as exc:
            self._failed = exc
            raise

    # -- the head --------------------------------------------------------------------------------
    def _parse_head(self) -> Request | None:
        start = len(self._buf) - len(self._buf.lstrip(b"\r\n"))  # empty lines before a request are ignored
        del self._buf[:start]
        line_end = self._buf.find(b"\n")
        if line_end < 0:
            if len(self._buf) > self.limits.request_line:
                raise HttpError(414, "request line too long")
            return None
        if line_end > self.limits.request_line:
            raise HttpError(414, "request line too long")
        blank = END_OF_HEAD.search(self._buf, line_end)  # the request line's own LF may start it
        fields_end = blank.start() if blank else len(self._buf)
        fields = bytes(self._buf[line_end + 1:fields_end])
        if len(fields) > self.limits.header_bytes:
            raise HttpError(431, "request header fields too large")
        lines = fields.count(b"\n") + (1 if blank and fields else 0)  # complete lines so far
        if lines > self.limits.header_count:
            raise HttpError(431, "too many header fields")
        if blank is None:
            return None
        method, target, version = _request_line(bytes(self._buf[:line_end]).rstrip(b"\r"))
        headers = _header_fields(fields)
        del self._buf[:blank.end()]
        request = Request(method, target, version, headers)
        self._body_length = self._framing(request)
        return request

    def _framing(self, request: Request) -> int:
        """The body's length, or CHUNKED (checks Host and the framing headers)."""
        hosts = [v for k, v in request.headers if k == "host"]
        if len(hosts) > 1:
            raise HttpError(400, "more than one Host header")
        if request.version >= (1, 1) and not hosts:
            raise HttpError(400, "HTTP/1.1 request without a Host header")
        lengths = {part.strip() for k, v in request.headers if k == "content-length" for part in v.split(",")}
        if request.header("transfer-encoding") is not None:
            return _chunked_framing(request, lengths)
        if not lengths:
            return 0
        if len(lengths) > 1 or not DIGITS.fullmatch(next(iter(lengths))):
            raise HttpError(400, "bad Content-Length")
        length = int(next(iter(lengths)))
        if length > self.limits.body:
            raise HttpError(413, "request body too large")
        return length

    def _take_body(self) -> Request | None:
        if self._body_length == CHUNKED:
            self._chunked = self._chunked or ChunkedBody(self.limits)
            if not self._chunked.take(self._buf):
                return None
            body, self._chunked = bytes(self._chunked.body), None
        else:
            if len(self._buf) < self._body_length:
                return None
            body = bytes(self._buf[:self._body_length])
            del self._buf[:self._body_length]
        request, self._waiting = self._waiting, None
        if body:
            request = Request(request.method, request.target, request.version, request.headers, body)
        return request


def _chunked_framing(request: Request, lengths: set[str]) -> int:
    """CHUNKED for a Transfer-Encoding this server reads (RFC 9112 section 6)."""
    if lengths:  # which one frames the body? a proxy may think the other: request smuggling (section 6.3)
        raise HttpError(400, "both Transfer-Encoding and Content-Length")
    if request.version < (1, 1):  # an HTTP/1.0 message with it is to be taken as badly framed (6.1)
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
    codings = [part.split(";")[0].strip().lower() for k, v in request.headers if k == "transfer-encoding"
               for part in v.split(",") if part.strip()]  # empty list elements are ignored (RFC 9110 5.6.1)
    if not codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
        raise HttpError(400, "the body's length is unknown: chunked must be the last transfer coding, once")
    if len(codings) > 1:
        raise HttpError(501, f"transfer coding {codings[0]} is not supported (only chunked)")
    return CHUNKED


def _request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not TOKEN.fullmatch(method):
        raise HttpError(400, "malformed method")
    if not TARGET.fullmatch(target):
        raise HttpError(400, "malformed request target")
    match = VERSION.fullmatch(version)
    if match is None:
        raise HttpError(400, "malformed HTTP version")
    if match.group(1) != b"1":
        raise HttpError(505, "HTTP version not supported")
    return method.decode("ascii"), target.decode("ascii"), (1, min(int(match.group(2)), 1))


def _header_fields(block: bytes) -> tuple[tuple[str, str], ...]:
    headers = []
    for raw in block.split(b"\n") if block else ():
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding in a header")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):  # also refuses whitespace before the colon
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if BAD_VALUE.search(value):
            raise HttpError(400, "control character in a header value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return tuple(headers)
