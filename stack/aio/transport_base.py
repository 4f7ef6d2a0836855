"""What the stream and datagram transports share: their protocol, their repr, and
the ResourceWarning asyncio's own transports give when collected open."""
from __future__ import annotations

import asyncio
import warnings


class SocketTransportMixin:
    """For a transport with ``_sock`` (None once closed), ``_closing``, ``_protocol`` and ``_extra``."""

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def __del__(self, _warn=warnings.warn) -> None:
        # As asyncio's transports. The socket is not closed here: the collector may run on a
        # thread holding the stack's lock; the socket, collected too, closes itself (and warns).
        if self.__dict__.get("_sock") is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<{type(self).__name__} {state} {self._extra.get('sockname')} -> {self._extra.get('peername')}>"
