"""The socket a transport shows through ``get_extra_info('socket')`` and ``Server.sockets``.

asyncio hands out a ``TransportSocket``: a view of the real socket that
answers questions (``getsockname()``, ``getpeername()``, ``fileno()``...)
but cannot be used to read or write behind the transport's back. This is the
same for a stack socket, so that ``server.sockets[0].getsockname()`` keeps
working; ``stack_socket`` is the stack's own socket for the stack's calls
(``tcp_info()``, options).
"""
from __future__ import annotations

import socket

from stack.socket_api import Socket, SocketType

__all__ = ["SocketView"]


class SocketView:
    """A read-only look at a stack socket, shaped like asyncio's ``TransportSocket``."""

    __slots__ = ("stack_socket",)

    def __init__(self, sock: Socket) -> None:
        self.stack_socket = sock

    @property
    def family(self) -> int:
        return socket.AF_INET

    @property
    def type(self) -> int:
        return socket.SOCK_STREAM if self.stack_socket.type is SocketType.STREAM else socket.SOCK_DGRAM

    @property
    def proto(self) -> int:
        return self.stack_socket.protocol

    def fileno(self) -> int:
        """The stack socket's readiness descriptor (it signals; it carries no data)."""
        return self.stack_socket.fileno()

    def getsockname(self) -> tuple[str, int]:
        address = self.stack_socket.local_address()
        return (str(address.ip), address.port)

    def getpeername(self) -> tuple[str, int]:
        address = self.stack_socket.peer_address()
        return (str(address.ip), address.port)

    def __repr__(self) -> str:
        return f"<SocketView {self.stack_socket!r}>"
