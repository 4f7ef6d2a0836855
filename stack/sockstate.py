"""State shared by every datagram-style socket in the core (UDP and RAW).

A socket in the core is plain data: addresses, options, a bounded receive
queue and one pending error. It never blocks and never touches a file
descriptor; the runtime installs ``on_change`` to learn when the socket
became readable (data, error or end of input) and wakes its waiters.
"""
from __future__ import annotations

from collections import deque
from ipaddress import IPv4Address
from typing import Callable

__all__ = ["SocketState", "DATAGRAM_OVERHEAD", "DEFAULT_BUFFER_SIZE", "DEFAULT_TTL"]

# Bookkeeping charged per queued datagram, so that a flood of empty
# datagrams still fills the receive buffer (Linux charges the skb's size).
DATAGRAM_OVERHEAD = 64
DEFAULT_BUFFER_SIZE = 212992  # Linux's rmem_default/wmem_default
DEFAULT_TTL = 64

Endpoint = tuple[IPv4Address, int]


class SocketState:
    """Addresses, options, receive queue and pending error of one socket."""

    def __init__(self) -> None:
        self.local: Endpoint | None = None  # bound address (ip may be 0.0.0.0)
        self.remote: Endpoint | None = None  # connected peer
        self.reuse_addr = False
        self.broadcast = False
        self.ttl = DEFAULT_TTL
        self.tos = 0  # the IP header's DSCP/ECN byte (SocketOption.TOS)
        self.rcvbuf = DEFAULT_BUFFER_SIZE
        self.sndbuf = DEFAULT_BUFFER_SIZE
        self.read_shutdown = False
        self.write_shutdown = False
        self.closed = False
        self.error: int | None = None  # errno reported on the next call
        self.rx_drops = 0  # datagrams dropped because the queue was full
        self.on_change: Callable[[], None] | None = None
        self._rx: deque[tuple[bytes, Endpoint]] = deque()
        self._rx_bytes = 0

    # -- receive queue ----------------------------------------------------------
    def push(self, data: bytes, source: Endpoint) -> bool:
        """Queue a received datagram; False (and counted) if the buffer is full.

        Like Linux, the datagram is taken while the queued total is still
        below the buffer size, so one datagram always fits an empty queue.
        """
        if self.closed or self.read_shutdown or self._rx_bytes >= self.rcvbuf:
            self.rx_drops += 1
            return False
        self._rx.append((data, source))
        self._rx_bytes += len(data) + DATAGRAM_OVERHEAD
        self._changed()
        return True

    def pop(self) -> tuple[bytes, Endpoint] | None:
        """The oldest queued datagram, or None."""
        if not self._rx:
            return None
        data, source = self._rx.popleft()
        self._rx_bytes -= len(data) + DATAGRAM_OVERHEAD
        return data, source

    @property
    def queued(self) -> int:
        """Number of datagrams waiting."""
        return len(self._rx)

    @property
    def queued_bytes(self) -> int:
        """Bytes the waiting datagrams charge to the receive buffer (``ss``'s Recv-Q)."""
        return self._rx_bytes

    # -- errors -----------------------------------------------------------------
    def set_error(self, errno_value: int) -> None:
        """Record an asynchronous error, reported (once) by the next call."""
        self.error = errno_value
        self._changed()

    def take_error(self) -> int | None:
        err, self.error = self.error, None
        return err

    # -- readiness --------------------------------------------------------------
    @property
    def readable(self) -> bool:
        """A receive call would not block."""
        return bool(self._rx) or self.error is not None or self.read_shutdown or self.closed

    def shutdown(self, read: bool, write: bool) -> None:
        self.read_shutdown |= read
        self.write_shutdown |= write
        self._changed()

    def mark_closed(self) -> None:
        self.closed = True
        self._rx.clear()
        self._rx_bytes = 0
        self._changed()
        self.on_change = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
