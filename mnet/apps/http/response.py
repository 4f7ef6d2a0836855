"""Responses: a status, headers and a body (bytes, or a file streamed in chunks),
and the bytes of their head."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

__all__ = ["REASONS", "SERVER", "FileBody", "Response", "error_response", "http_date"]

SERVER = "MultiOS-http/1.0"
REASONS = {
    200: "OK", 301: "Moved Permanently", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


@dataclass(frozen=True)
class FileBody:
    """A body read from ``path`` (``size`` bytes, as stat said when the response was made)."""

    path: Path
    size: int


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | FileBody = b""

    @property
    def length(self) -> int:
        return self.body.size if isinstance(self.body, FileBody) else len(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def head(self, version: str, keep_alive: bool, now: float | None = None) -> bytes:
        """Status line and headers: the response's own, then Content-Length, Date, Server
        and Connection (``version`` is what the response line says: HTTP/1.1 or HTTP/1.0)."""
        lines = [f"{version} {self.status} {REASONS.get(self.status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines += [f"Content-Length: {self.length}", f"Date: {http_date(now)}", f"Server: {SERVER}",
                  f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_date(now: float | None = None) -> str:
    """RFC 9110's IMF-fixdate: ``Mon, 07 Dec 2026 03:00:00 GMT``."""
    return formatdate(now, usegmt=True)


def error_response(status: int, detail: str = "", headers: list[tuple[str, str]] | None = None) -> Response:
    """A small HTML page saying what went wrong."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    text = f"<!doctype html>\n<title>{title}</title>\n<h1>{title}</h1>\n"
    if detail:
        text += f"<p>{html.escape(detail)}</p>\n"
    return Response(status, [("Content-Type", "text/html; charset=utf-8"), *(headers or [])], text.encode())
