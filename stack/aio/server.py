"""``asyncio.AbstractServer`` for stack listeners: what ``start_server`` returns.

A listening stack STREAM socket is non-blocking and its readiness
descriptor (readable while a connection waits to be accepted) is watched with
``loop.add_reader``; each accepted socket gets a
:class:`~stack.aio.stream_transport.StackStreamTransport` and a protocol from
the factory. The server's life follows asyncio's (3.12 and later):
``close()`` stops listening and leaves the connections alone,
``wait_closed()`` returns once it is closed and every connection has ended,
``close_clients()``/``abort_clients()`` end those, and ``async with`` closes
and waits.
"""
from __future__ import annotations

import asyncio
import errno

from stack.aio.socket_view import SocketView
from stack.aio.stream_transport import StackStreamTransport
from stack.stream_socket import StreamSocket

__all__ = ["StackServer"]

# accept() errors that end one connection attempt, not the server (as asyncio's accept loop).
_ONE_CONNECTION = (errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO)
# After another error (out of descriptors, the stack down...), accepting rests this long, as asyncio's.
ACCEPT_RETRY_DELAY = 1.0


class StackServer(asyncio.AbstractServer):
    """Listening stack sockets served on one asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listeners: list[StreamSocket], protocol_factory,
                 backlog: int) -> None:
        self._loop = loop
        self._listeners: list[StreamSocket] | None = listeners
        self._fds = [sock.fileno() for sock in listeners]
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._serving = False
        self._serving_forever: asyncio.Future | None = None
        self._clients: dict[StackStreamTransport, None] = {}
        self._waiters: list[asyncio.Future] | None = []

    def __repr__(self) -> str:
        return f"<StackServer sockets={self.sockets!r}>"

    # -- connections -------------------------------------------------------------------
    def _attach(self, transport: StackStreamTransport) -> None:
        self._clients[transport] = None

    def _detach(self, transport: StackStreamTransport) -> None:
        self._clients.pop(transport, None)
        if not self._clients and self._listeners is None:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _accept_ready(self, listener: StreamSocket) -> None:
        for _ in range(self._backlog):  # a bounded batch per wake-up, as asyncio's
            try:
                sock, _peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _ONE_CONNECTION:
                    continue
                self._rest("accept() failed on a stack listener", exc)
                return
            if not self._serve(sock):
                return

    def _rest(self, message: str, exc: OSError) -> None:
        """Report ``exc`` and stop accepting for a while (an error that may last must not spin)."""
        self._loop.call_exception_handler({"message": message, "exception": exc, "server": self})
        if self._serving:  # (still serving, as asyncio's server: it only stops watching for a while)
            for fd in self._fds:
                self._loop.remove_reader(fd)
            self._loop.call_later(ACCEPT_RETRY_DELAY, self._watch_listeners)

    def _serve(self, sock: StreamSocket) -> bool:
        """A transport and a protocol for an accepted socket; False if accepting must rest."""
        try:
            protocol = self._protocol_factory()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            sock.close()
            self._loop.call_exception_handler({
                "message": "the protocol factory failed for an accepted connection", "exception": exc})
            return True
        try:
            StackStreamTransport(self._loop, sock, protocol, server=self)
        except OSError as exc:  # (its readiness descriptor: EMFILE when the process is out of them)
            sock.close()
            self._rest("no transport for an accepted connection", exc)
            return False
        return True

    # -- asyncio.AbstractServer --------------------------------------------------------
    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[SocketView, ...]:
        return tuple(SocketView(sock) for sock in self._listeners or ())

    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)  # (as asyncio: one turn of the loop, so serving has begun)

    def _start_serving(self) -> None:
        if self._serving or self._listeners is None:
            return
        self._serving = True
        self._watch_listeners()

    def _watch_listeners(self) -> None:
        if self._serving and self._listeners is not None:
            for sock, fd in zip(self._listeners, self._fds):
                self._loop.add_reader(fd, self._accept_ready, sock)

    def _stop_accepting(self) -> None:
        if self._serving:
            for fd in self._fds:
                self._loop.remove_reader(fd)
        self._serving = False

    def close(self) -> None:
        """Stop listening (connections already accepted go on)."""
        listeners, self._listeners = self._listeners, None
        if listeners is None:
            return
        self._stop_accepting()
        for sock in listeners:
            sock.close()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        if not self._clients:
            self._wake_waiters()

    def close_clients(self) -> None:
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._clients):
            transport.abort()

    async def wait_closed(self) -> None:
        """Return once the server is closed and all its connections have ended."""
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def serve_forever(self) -> None:
        """Serve until cancelled (then the server is closed)."""
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._listeners is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            self._serving_forever = None
