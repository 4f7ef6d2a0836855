"""What each TCP service does with one accepted connection, as a non-blocking state machine.

A handler is driven by the service's :class:`~mnet.services.service_loop.ServiceLoop`:
``on_ready`` runs when its socket is ready, does what it can without
blocking, and tells the loop which readiness it waits for next. When the
connection ends the handler reports one line (``echoed N bytes``,
``received N bytes sha256 HEX``, ``sent N bytes sha256 HEX`` or
``error: ...``) and closes the socket.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

from stack import PollEvent, Shutdown

from .service_loop import STACK_GONE, ServiceLoop
from .source_stream import SOURCE_CHUNK, source_chunks
from .spec import Service

DRAIN_TIMEOUT = 30.0  # tcp-source: how long to wait for the peer to close after our FIN
READS_PER_WAKEUP = 16  # bound one connection's turn, so the others get theirs


class TcpConnectionHandler(ABC):
    """One accepted, non-blocking connection of a TCP service."""

    def __init__(self, loop: ServiceLoop, sock, peer, svc: Service) -> None:
        self.loop, self.sock, self.peer, self.svc = loop, sock, peer, svc

    def start(self) -> None:
        self.loop.add(self, self.first_events)

    first_events = PollEvent.READ

    def on_ready(self, events: PollEvent) -> None:
        try:
            self.step()
        except OSError as exc:
            if exc.errno in STACK_GONE:
                self.finish(None)  # the stack is stopping
            else:
                self.finish(self.error_line(exc))

    @abstractmethod
    def step(self) -> None:
        """Move the connection on as far as it goes without blocking."""

    def on_timer(self) -> None:
        pass

    def error_line(self, exc: OSError) -> str:
        return f"error: {exc.strerror or exc}"

    def finish(self, line: str | None) -> None:
        """Close the connection and report ``line`` (None: nothing, the stack is going away)."""
        self.loop.remove(self)
        if line is not None:
            self.loop.report(f"{self.svc.label} {self.peer} {line}")


class EchoHandler(TcpConnectionHandler):
    """tcp-echo: every byte back; reads wait while echoed bytes are still queued."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.pending = b""
        self.total = 0
        self.eof = False

    def step(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if self.pending and not self._flush():
                break
            if self.eof:
                break
            try:
                data = self.sock.recv(SOURCE_CHUNK)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
            self.pending = data
        if self.eof and not self.pending:
            self.finish(f"echoed {self.total} bytes")
        else:
            self.loop.want(self, PollEvent.WRITE if self.pending else PollEvent.READ)

    def _flush(self) -> bool:
        """Send what is pending; True once all of it is queued."""
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return False
        self.total += n
        self.pending = self.pending[n:]
        return not self.pending


class DiscardHandler(TcpConnectionHandler):
    """tcp-discard: read and drop; the byte count and SHA-256 at the end."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.digest = hashlib.sha256()
        self.total = 0

    def step(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self.sock.recv(SOURCE_CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.finish(f"received {self.total} bytes sha256 {self.digest.hexdigest()}")
                return
            self.digest.update(data)
            self.total += len(data)

    def error_line(self, exc: OSError) -> str:
        return f"received {self.total} bytes, then error: {exc.strerror or exc}"


class SourceHandler(TcpConnectionHandler):
    """tcp-source: the documented stream, then FIN; then wait (up to DRAIN_TIMEOUT) for the
    peer to close, reading what it sends, so our close is not a reset."""

    first_events = PollEvent.WRITE

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.digest = hashlib.sha256()
        self.chunks = source_chunks(self.svc.size)
        self.current = memoryview(b"")
        self.draining = False

    def step(self) -> None:
        if not self.draining:
            self._send()
        if self.draining:
            self._drain()

    def _send(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if not self.current:
                chunk = next(self.chunks, None)
                if chunk is None:
                    self.sock.shutdown(Shutdown.WRITE)  # the FIN follows the data
                    self.draining = True
                    self.loop.want(self, PollEvent.READ)
                    self.loop.call_at(self.loop.clock.now() + DRAIN_TIMEOUT, self)
                    return
                self.digest.update(chunk)
                self.current = memoryview(chunk)
            try:
                n = self.sock.send(self.current)
            except BlockingIOError:
                return
            self.current = self.current[n:]

    def _drain(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                if not self.sock.recv(SOURCE_CHUNK):
                    break  # the peer closed
            except BlockingIOError:
                return
            except (TimeoutError, ConnectionResetError):
                break
        else:
            return  # still sending: read on at the next wake-up
        self.on_timer()

    def on_timer(self) -> None:
        self.finish(f"sent {self.svc.size} bytes sha256 {self.digest.hexdigest()}")


HANDLERS = {"tcp-echo": EchoHandler, "tcp-discard": DiscardHandler, "tcp-source": SourceHandler}
