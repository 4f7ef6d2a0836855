"""One HTTP connection on a worker thread: requests read with a deadline, answered in
order (pipelined ones too), kept alive or closed, one access-log line each.

Every request must arrive whole within ``timeout`` seconds of the moment the
server starts waiting for it. A client that sends part of a request (or, on a
new connection, nothing) in that time gets 408 and is closed: a slowloris
client holds one worker for at most ``timeout``, never the others. A kept-alive
connection on which nothing more comes is closed without a word, as browsers
expect. Sends are bounded by the same timeout. Closing is graceful: our FIN,
then what the client still sends is read and dropped (at most
``LINGER`` seconds) so that closing over unread bytes does not reset the
connection and destroy the response on its way (a "lingering close").
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from stack import Shutdown

from .handler import respond
from .parser import HttpError, Limits, Request, RequestParser
from .response import FileBody, Response, error_response
from .stats import ServerStats

RECV = 65536
FILE_CHUNK = 65536
STOP_TICK = 0.5      # seconds between looks at `stopping` while waiting for a request
LINGER = 1.0          # seconds a closing connection's late input is read for
LINGER_BYTES = 1 << 20
VERSION = "HTTP/1.1"  # what the server speaks, whatever the request's version (RFC 9110 section 2.5)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class ServerSettings:
    """What every connection of one server shares."""

    label: str                      # "http:8080", first word of each log line
    site: object                    # get(Target) -> Response: DirectorySite or FixedSite
    report: Callable[[str], None]
    now: Callable[[], float]        # the stack's clock (socket timeouts run on it)
    stopping: threading.Event
    limits: Limits = Limits()
    timeout: float = 10.0
    max_requests: int = 100         # per connection, then Connection: close
    stats: ServerStats = field(default_factory=ServerStats)


def log_time(now: float | None = None) -> str:
    """Common log format's ``07/Dec/2026:03:04:05 +0000`` (month names fixed, not the locale's)."""
    t = time.gmtime(now)
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


class HttpConnection:
    """Serve the requests of one connected socket (stack STREAM or TLS) until it ends."""

    def __init__(self, sock, peer_ip: str, settings: ServerSettings) -> None:
        self.sock, self.peer_ip, self.s = sock, peer_ip, settings
        self.parser = RequestParser(settings.limits)
        self.served = 0

    def serve(self) -> None:
        try:
            while True:
                request = self._read_request(self.s.now() + self.s.timeout)
                if request is None:
                    return
                response = respond(request, self.s.site)
                keep = (request.keep_alive and self.served + 1 < self.s.max_requests
                        and not self.s.stopping.is_set())
                self._send(response, keep, request)
                self.served += 1
                if not keep:
                    return
        except OSError:
            self.s.stats.count("connections_broken")  # reset, timed out while sending, stack down
        finally:
            self._close()

    def refuse(self, response: Response) -> None:
        """Answer ``response`` at once, without reading a request (the server has no room for
        this connection), then close as gracefully as after any response."""
        try:
            self._send(response, False, None)
        except OSError:
            self.s.stats.count("connections_broken")
        finally:
            self._close()

    def _read_request(self, deadline: float) -> Request | None:
        """The next request; None when the connection is over (an error answered, the end, idle,
        or the server stopping between requests)."""
        continued = False
        while True:
            try:
                request = self.parser.next_request()
            except HttpError as exc:
                self._send(error_response(exc.status, exc.message), False, None)
                return None
            if request is not None:
                return request
            if not continued and self._wants_continue():
                self.sock.set_timeout(self.s.timeout)
                self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                continued = True
            left = deadline - self.s.now()
            if left <= 0:
                if self.parser.partial or self.served == 0:
                    self.s.stats.count("request_timeouts")
                    self._send(error_response(408, f"no complete request within {self.s.timeout:g} s"), False, None)
                return None
            if self.s.stopping.is_set() and not self.parser.partial:
                return None
            self.sock.set_timeout(min(left, STOP_TICK))  # in slices, so that stopping is seen
            try:
                data = self.sock.recv(RECV)
            except TimeoutError:
                continue
            if not data:
                return None
            self.parser.feed(data)

    def _wants_continue(self) -> bool:
        """An HTTP/1.1 client waits (RFC 9110 section 10.1.1) for 100 Continue before its body."""
        head = self.parser.waiting_for_body
        return head is not None and head.version >= (1, 1) and "100-continue" in head.tokens("expect")

    def _send(self, response: Response, keep: bool, request: Request | None) -> None:
        # The head goes out in one write with the body (or a file's first chunk): a small
        # response is one segment, and no part of it waits for the ACK of another.
        self.sock.set_timeout(self.s.timeout)
        head = response.head(VERSION, keep)
        sent = 0
        with_body = request is None or request.method != "HEAD"
        if with_body and isinstance(response.body, FileBody):
            sent = self._send_file(head, response.body)
        elif with_body and response.body:
            self.sock.sendall(head + response.body)
            sent = len(response.body)
        else:
            self.sock.sendall(head)
        self.s.stats.response(response.status)
        # As Apache does: quotes and backslashes in the target escaped, so the line's fields stay apart.
        line = request.line.replace("\\", "\\\\").replace('"', '\\"') if request is not None else "-"
        self.s.report(f'{self.s.label} {self.peer_ip} - - [{log_time()}] "{line}" {response.status} {sent or "-"}')

    def _send_file(self, head: bytes, body: FileBody) -> int:
        sent = 0
        with open(body.path, "rb") as f:
            while sent < body.size:
                chunk = f.read(min(FILE_CHUNK, body.size - sent))
                if not chunk:  # the file shrank after its length was sent: only closing tells the client
                    if head:
                        self.sock.sendall(head)
                    raise ConnectionAbortedError(f"{body.path} shrank while being sent")
                self.sock.sendall(head + chunk)
                head = b""
                sent += len(chunk)
        if head:                # an empty file
            self.sock.sendall(head)
        return sent

    def _close(self) -> None:
        try:
            self.sock.shutdown(Shutdown.WRITE)
            deadline = self.s.now() + LINGER
            drained = 0
            while drained < LINGER_BYTES and (left := deadline - self.s.now()) > 0:
                self.sock.set_timeout(left)
                data = self.sock.recv(RECV)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass  # already reset, timed out or closed: close() below is all that is left
        finally:
            self.sock.close()
