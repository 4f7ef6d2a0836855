"""One vhost-user stream socket: whole messages (with their fds) in and out.

Reading is done in two steps per message, like the C implementations: the
12-byte header with recvmsg (the fds of a message arrive with its first
bytes), then exactly `size` payload bytes. Reading no further than the
current message keeps one message's fds from being taken with another's.
Works on non-blocking sockets (partial reads are kept until the rest comes)
and on blocking ones (a front-end waiting for a reply).
"""
from __future__ import annotations

import logging
import os
import socket

from .messages import FRONTEND, Message, ProtocolError, parse, parse_header
from .protocol import HEADER_SIZE, MAX_REGIONS

__all__ = ["Connection", "ConnectionClosed"]

log = logging.getLogger(__name__)

# Room for one fd more than any message may carry, so "too many" is seen as a
# wrong fd count by the parser rather than silently truncated.
_MAX_FDS = MAX_REGIONS + 1


class ConnectionClosed(Exception):
    """The peer closed the connection (`reason` says whether mid-message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """Message framing over a connected AF_UNIX stream socket.

    `channel` is the request-id space of messages parsed here (FRONTEND on
    the main socket, BACKEND on the back-end request channel)."""

    def __init__(self, sock: socket.socket, *, channel: str = FRONTEND) -> None:
        self.sock = sock
        self.channel = channel
        self._buf = bytearray()
        self._fds: list[int] = []
        self._size: int | None = None     # payload size, once the header is in
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- reading --------------------------------------------------------------
    def read_message(self) -> Message | None:
        """The next whole message, or None if it has not fully arrived yet
        (non-blocking socket). Raises ConnectionClosed at EOF and
        ProtocolError for garbage (the message's fds are closed then)."""
        try:
            while True:
                if self._size is None:
                    if not self._recv(HEADER_SIZE - len(self._buf)):
                        return None
                    if len(self._buf) < HEADER_SIZE:
                        continue
                    self._size = parse_header(self._buf).size
                want = HEADER_SIZE + self._size - len(self._buf)
                if want > 0:
                    if not self._recv(want):
                        return None
                    continue
                data, fds = bytes(self._buf), self._fds
                self._buf, self._fds, self._size = bytearray(), [], None
                try:
                    return parse(data, fds, channel=self.channel)
                except ProtocolError:
                    self._close_fds(fds)
                    raise
        except ProtocolError:
            self._discard_partial()
            raise

    def _recv(self, n: int) -> bool:
        """Read up to n bytes into the buffer; False if nothing is there yet."""
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, n, _MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionResetError:
            data, fds, flags = b"", [], 0
        self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise ProtocolError(f"more than {_MAX_FDS} file descriptors came with one message")
        if not data:
            midway = bool(self._buf)
            self._discard_partial()
            raise ConnectionClosed("peer closed the connection" + (" in the middle of a message" if midway else ""))
        self._buf += data
        return True

    def _discard_partial(self) -> None:
        self._close_fds(self._fds)
        self._buf, self._fds, self._size = bytearray(), [], None

    @staticmethod
    def _close_fds(fds) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- writing --------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Send one message with its fds.

        A vhost-user peer waits for each reply, so a full socket buffer
        means it stopped reading: that is treated as a protocol error."""
        data = msg.encode()
        try:
            if msg.fds:
                sent = socket.send_fds(self.sock, [data], msg.fds)
            else:
                sent = self.sock.send(data)
        except BlockingIOError:
            raise ProtocolError(f"peer does not read: cannot send {msg.name}") from None
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ConnectionClosed(f"peer went away while we sent {msg.name}: {e}") from None
        if sent != len(data):
            if self.sock.gettimeout() == 0.0:
                raise ProtocolError(f"peer does not read: sent {sent} of {len(data)} bytes of {msg.name}")
            self.sock.sendall(data[sent:])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._discard_partial()
            self.sock.close()
