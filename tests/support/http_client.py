"""A small HTTP/1.1 client over a stack STREAM (or TLS) socket, for the HTTP server's tests:
it reads responses one by one from one connection (Content-Length framing), so
keep-alive and pipelining can be checked byte for byte."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    head: bytes


class HttpClientConnection:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("latin-1") if isinstance(data, str) else data)

    def request(self, method: str, path: str, *headers: str, version: str = "HTTP/1.1") -> Reply:
        lines = [f"{method} {path} {version}", "Host: test", *headers]
        self.send("\r\n".join(lines) + "\r\n\r\n")
        return self.reply(head_only=method == "HEAD")

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def reply(self, head_only: bool = False) -> Reply:
        """The next response (AssertionError if the connection ends before it is whole)."""
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"the connection ended before a response head; got {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _, status, reason = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} twice in {head!r}"
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill(), f"the connection ended inside a body of {length} bytes"
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(int(status), reason, headers, body, head)

    def at_end(self) -> bool:
        """Whether the server closed the connection (and sent nothing more)."""
        if self.buf:
            return False
        return not self._fill()
