"""Write-side flow control of a transport: when to call ``pause_writing``/``resume_writing``.

The same water marks and rules as asyncio's own transports: above the high
mark the protocol is paused (``StreamWriter.drain()`` then waits), at or
below the low mark it is resumed. An exception from the protocol goes to the
loop's exception handler, as asyncio does.
"""
from __future__ import annotations

import asyncio

__all__ = ["WriteFlowControl", "DEFAULT_HIGH_WATER"]

DEFAULT_HIGH_WATER = 64 * 1024  # asyncio's default high-water mark


class WriteFlowControl:
    """The protocol's pause state for one transport; ``buffered`` is the transport's buffer size."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport) -> None:
        self._loop = loop
        self._transport = transport
        self.paused = False
        self.high = DEFAULT_HIGH_WATER
        self.low = DEFAULT_HIGH_WATER // 4

    def set_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high, self.low = high, low

    def check(self, protocol, buffered: int) -> None:
        """Pause or resume ``protocol`` for a buffer of ``buffered`` bytes."""
        if not self.paused and buffered > self.high:
            self.paused = True
            self._tell(protocol.pause_writing, "pause_writing")
        elif self.paused and buffered <= self.low:
            self.paused = False
            self._tell(protocol.resume_writing, "resume_writing")

    def _tell(self, call, name: str) -> None:
        try:
            call()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{name}() failed",
                "exception": exc,
                "transport": self._transport,
            })
