"""A real file descriptor whose readiness the stack sets by hand.

A STREAM socket must look readable, writable, both or neither to
``select``, ``selectors`` and ``poll`` on its ``fileno()``, and an eventfd can
only be made readable (it is always writable). So each STREAM socket owns
one end of an AF_UNIX socketpair, and the stack steers that end from the
other one:

* readable: one byte waits in the user's end (sent from ours); reading it
  back clears it;
* not writable: the user's end has queued bytes towards ours until its
  (minimal) send buffer counts as full; draining them on our side makes it
  writable again;
* hang-up: our end is shut down both ways, which makes the user's end
  permanently readable and writable with POLLHUP, as a hung-up TCP socket
  is on Linux.

Nothing is ever read by the user from this descriptor; it only signals.
Not thread-safe on its own: the stack calls it under its lock.
"""
from __future__ import annotations

import select
import socket

__all__ = ["ReadyFd"]

_FILL_LIMIT = 256  # sends to make the user's end unwritable; Linux needs 2 with a minimal buffer


class ReadyFd:
    """One signalling descriptor: starts neither readable nor writable."""

    def __init__(self) -> None:
        self._user, self._ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._user.setblocking(False)
        self._ours.setblocking(False)
        # The smallest send buffer the kernel allows: a couple of bytes fill it.
        self._user.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        self._probe = select.poll()
        self._probe.register(self._user, select.POLLOUT)
        self.readable = False
        self.writable = True
        self.hung_up = False
        self.set(readable=False, writable=False)

    def fileno(self) -> int:
        """The descriptor to hand out (-1 once closed)."""
        return self._user.fileno()

    def set(self, readable: bool, writable: bool) -> None:
        """Make the descriptor readable and/or writable (cheap when nothing changes)."""
        if self.hung_up:
            return
        if readable != self.readable:
            if readable:
                self._ours.send(b"!")
            else:
                self._drain(self._user)
            self.readable = readable
        if writable != self.writable:
            if writable:
                self._drain(self._ours)
            else:
                for _ in range(_FILL_LIMIT):
                    if not self._probe.poll(0):
                        break
                    self._user.send(b"\0")
            self.writable = writable

    def hang_up(self) -> None:
        """Readable, writable and POLLHUP from now on (the connection is over)."""
        if self.hung_up:
            return
        self._drain(self._ours)
        self._ours.shutdown(socket.SHUT_RDWR)
        self.hung_up = True
        self.readable = self.writable = True

    def close(self) -> None:
        self._user.close()
        self._ours.close()

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        try:
            while sock.recv(4096):
                pass
        except BlockingIOError:
            pass
