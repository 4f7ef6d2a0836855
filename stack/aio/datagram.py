"""``create_datagram_endpoint`` on a stack: an ``asyncio.DatagramTransport`` on a UDP socket.

The socket is non-blocking; its descriptor (an eventfd, readable while a
datagram or an error waits) is watched with ``loop.add_reader``. A UDP send
on the stack never blocks (a datagram that cannot go is dropped and counted,
as on a NIC), so the transport has no write buffer and never pauses its
protocol. The protocol gets asyncio's calls: ``connection_made``,
``datagram_received(data, (host, port))``, ``error_received(exc)`` (an
ICMP error on a connected endpoint: ``ConnectionRefusedError``...; a send
that failed) and ``connection_lost(None)`` after ``close()``.
"""
from __future__ import annotations

import asyncio

from stack.aio.addresses import address_arg, address_tuple, stack_or_default
from stack.aio.socket_view import SocketView
from stack.aio.transport_base import SocketTransportMixin
from stack.datagram_socket import DatagramSocket
from stack.socket_api import IpAddress, SocketOption, SocketType
from stack.socket_host import SocketHost

__all__ = ["StackDatagramTransport", "create_datagram_endpoint"]

MAX_DATAGRAM = 65536
BATCH = 64  # datagrams taken per readiness callback, so one busy endpoint cannot starve the loop


class StackDatagramTransport(SocketTransportMixin, asyncio.DatagramTransport):
    """A non-blocking stack UDP socket driven by an asyncio selector loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: DatagramSocket, protocol: asyncio.DatagramProtocol,
                 remote: IpAddress | None, waiter: asyncio.Future | None = None) -> None:
        extra = {"socket": SocketView(sock), "sockname": address_tuple(sock.local_address()),
                 "peername": address_tuple(remote) if remote is not None else None}
        super().__init__(extra)
        sock.set_nonblocking(True)
        self._fd = sock.fileno()
        self._loop = loop
        self._sock: DatagramSocket | None = sock
        self._protocol = protocol
        self._remote = remote
        self._closing = False
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(lambda: waiter.cancelled() or waiter.set_result(None))

    def _start_reading(self) -> None:
        if not self._closing:
            self._loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        for _ in range(BATCH):
            if self._closing:
                return
            try:
                data, sender = self._sock.recv_from(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            try:
                self._protocol.datagram_received(data, address_tuple(sender))
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "protocol.datagram_received() failed")
                return

    def sendto(self, data, addr=None) -> None:
        """Send one datagram to ``addr`` (or the remote address of a connected endpoint)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        target = address_arg(addr) if addr is not None else None
        if self._remote is not None and target not in (None, self._remote):
            raise ValueError(f"Invalid address: must be None or {address_tuple(self._remote)}")
        if self._closing:
            return  # (asyncio drops it too, once the transport is closing)
        try:
            if target is None:
                self._sock.send(bytes(data))
            else:
                self._sock.send_to(bytes(data), target)
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self.close()

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        self._loop.call_exception_handler({
            "message": message, "exception": exc, "transport": self, "protocol": self._protocol})
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._fd)
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._sock = None


async def create_datagram_endpoint(protocol_factory, local_addr=None, remote_addr=None, *,
                                   stack: SocketHost | None = None, reuse_address: bool | None = None,
                                   allow_broadcast: bool | None = None):
    """``loop.create_datagram_endpoint`` on a stack: ``(transport, protocol)``.

    ``local_addr`` binds (none: an ephemeral port, on the first send or at
    once with ``remote_addr``); ``remote_addr`` connects: ``sendto(data)``
    goes there, datagrams from anyone else are not delivered, and ICMP
    errors reach ``error_received``. Addresses are ``(host, port)`` tuples
    (or ``IpAddress``)."""
    loop = asyncio.get_running_loop()
    sock = stack_or_default(stack).socket(SocketType.DATAGRAM)
    try:
        if reuse_address:
            sock.set_option(SocketOption.REUSE_ADDR, True)
        if allow_broadcast:
            sock.set_option(SocketOption.BROADCAST, True)
        if local_addr is not None:
            sock.bind(address_arg(local_addr))
        remote = address_arg(remote_addr) if remote_addr is not None else None
        if remote is not None:
            sock.connect(remote)
        protocol = protocol_factory()
        waiter = loop.create_future()
        transport = StackDatagramTransport(loop, sock, protocol, remote, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
    except BaseException:
        sock.close()
        raise
    return transport, protocol
