"""An ``asyncio.Transport`` on a stack STREAM (TCP) socket.

The socket is non-blocking; its readiness descriptor (``fileno()``, level
triggered: readable while ``recv`` would not block, writable while the send
buffer has room, both once the connection is over) is watched with
``loop.add_reader``/``add_writer``, as asyncio's own selector transports
watch a kernel socket. The stack's thread does the protocol work; the loop's
thread only moves bytes in and out of the socket, never blocking.

What a protocol sees is what asyncio gives: ``connection_made``,
``data_received`` (or a ``BufferedProtocol``'s ``get_buffer`` /
``buffer_updated``), ``eof_received`` (a true result keeps the write side
open: half-close), ``pause_writing``/``resume_writing`` around the write
buffer's water marks, and ``connection_lost(exc)`` once, with the socket's
own ``OSError`` (ConnectionResetError...) when it failed.
"""
from __future__ import annotations

import asyncio
import logging

from stack.aio.addresses import address_tuple
from stack.aio.flow import WriteFlowControl
from stack.aio.socket_view import SocketView
from stack.aio.transport_base import SocketTransportMixin
from stack.socket_api import Shutdown, SocketOption
from stack.stream_socket import StreamSocket

__all__ = ["StackStreamTransport"]

log = logging.getLogger(__name__)

MAX_READ = 256 * 1024  # bytes taken per readiness callback, as asyncio's max_size


def _names(sock: StreamSocket) -> dict:
    extra = {"socket": SocketView(sock)}
    try:
        extra["sockname"] = address_tuple(sock.local_address())
    except OSError:
        extra["sockname"] = None
    try:
        extra["peername"] = address_tuple(sock.peer_address())
    except OSError:
        extra["peername"] = None
    return extra


class StackStreamTransport(SocketTransportMixin, asyncio.Transport):
    """A connected, non-blocking stack STREAM socket driven by an asyncio selector loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: StreamSocket, protocol: asyncio.BaseProtocol,
                 waiter: asyncio.Future | None = None, server=None) -> None:
        super().__init__(_names(sock))
        sock.set_nonblocking(True)
        # As asyncio's TCP transports: no Nagle, so small writes do not wait for an ACK.
        try:
            sock.set_option(SocketOption.TCP_NO_DELAY, True)
        except OSError:
            pass  # (a connection already over: the first read reports it)
        self._fd = sock.fileno()  # (first: if it fails, EMFILE, there is no transport to warn about)
        self._loop = loop
        self._sock: StreamSocket | None = sock
        self._protocol = protocol
        self._server = server
        self._buffer = bytearray()
        self._flow = WriteFlowControl(loop, self)
        self._closing = False  # close() or a fatal error: no more reading or writing by the user
        self._lost = False     # connection_lost is scheduled
        self._paused = False   # pause_reading()
        self._eof = False      # write_eof(): a FIN goes after the buffer
        self._reading = False  # the loop watches the descriptor for reading
        if server is not None:
            server._attach(self)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)  # only once connection_made() has run
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter)

    # -- reading -----------------------------------------------------------------------
    def _start_reading(self) -> None:
        if not self._closing and not self._paused and not self._reading:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def is_reading(self) -> bool:
        return not self._closing and not self._paused

    def pause_reading(self) -> None:
        if self.is_reading():
            self._paused = True
            self._stop_reading()

    def resume_reading(self) -> None:
        if self._paused and not self._closing:
            self._paused = False
            self._start_reading()

    def _read_ready(self) -> None:
        if self._lost:
            return
        try:
            data = self._sock.recv(MAX_READ)
        except (BlockingIOError, InterruptedError):
            return  # (a readiness change raced us; the descriptor says so again when it is true)
        except OSError as exc:
            self._fatal_error(exc, "read error on a stack stream transport")
            return
        if not data:
            self._on_eof()
            return
        try:
            if isinstance(self._protocol, asyncio.BufferedProtocol):
                _feed_buffered(self._protocol, data)
            else:
                self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "protocol.data_received() failed")

    def _on_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "protocol.eof_received() failed")
            return
        if keep_open:
            self._stop_reading()  # the peer sent its FIN; we may still write
        else:
            self.close()

    # -- writing -----------------------------------------------------------------------
    def write(self, data) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self._lost or self._closing:
            return  # (asyncio drops writes on a lost connection too; connection_lost says why)
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fatal_error(exc, "write error on a stack stream transport")
                return
            data = memoryview(data).cast("B")[sent:]
            if not data:
                return
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer += data
        self._flow.check(self._protocol, len(self._buffer))

    def _write_ready(self) -> None:
        if self._lost:
            return
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._loop.remove_writer(self._fd)
            # A new buffer, not clear(): the error's traceback holds the socket's view of the old one.
            self._buffer = bytearray()
            self._fatal_error(exc, "write error on a stack stream transport")
            return
        del self._buffer[:sent]
        self._flow.check(self._protocol, len(self._buffer))  # (resume_writing may write more)
        if self._buffer:
            return
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._schedule_connection_lost(None)
        elif self._eof:
            self._shutdown_write()

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(Shutdown.WRITE)
        except OSError as exc:
            self._fatal_error(exc, "shutdown(WRITE) failed on a stack stream transport")

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._flow.low, self._flow.high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._flow.set_limits(high, low)
        self._flow.check(self._protocol, len(self._buffer))

    # -- ending ------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; send what is buffered, then close the socket (a FIN)."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._schedule_connection_lost(None)

    def abort(self) -> None:
        """Close at once, dropping the write buffer."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):  # (an OSError is the connection's fate, told to connection_lost)
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self, "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        if self._buffer:
            self._buffer = bytearray()  # (not clear(): a pending error may still hold a view of it)
            self._loop.remove_writer(self._fd)
        self._closing = True
        self._stop_reading()
        self._schedule_connection_lost(exc)

    def _schedule_connection_lost(self, exc: BaseException | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._sock = None
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)


def _feed_buffered(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand ``data`` to a BufferedProtocol through the buffers it offers."""
    view = memoryview(data)
    while view:
        buf = memoryview(protocol.get_buffer(len(view))).cast("B")
        if not len(buf):
            raise RuntimeError("get_buffer() returned an empty buffer")
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _set_result_unless_cancelled(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.set_result(None)
