"""What one request may hold, and the error that refuses one (shared by the parser of the
head and the decoder of a chunked body)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "HttpError"]


@dataclass(frozen=True)
class Limits:
    """What one request may hold (the defaults are nginx's orders of magnitude)."""

    request_line: int = 8192     # bytes of the request line (414 beyond)
    header_count: int = 100      # header fields (431 beyond); trailer fields too, counted apart
    header_bytes: int = 16384    # bytes of all header lines together (431 beyond); trailer lines too
    body: int = 1 << 20          # bytes of a body, Content-Length or chunked (413 beyond)
    chunk_line: int = 4096       # bytes of one chunk-size line with its extensions (400 beyond)
    chunk_extensions: int = 16384  # bytes of all chunk extensions of one body (413 beyond)


class HttpError(Exception):
    """A request the server refuses: ``status`` is what it answers, then it closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status, self.message = status, message
