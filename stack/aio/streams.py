"""``open_connection``/``start_server`` and the transports under them, on a stack.

The same calls as asyncio's, with a ``stack=`` keyword (the process-wide
default stack without it), returning asyncio's own ``StreamReader`` and
``StreamWriter``: only where the streams come from changes.
"""
from __future__ import annotations

import asyncio

from stack.aio.addresses import address_arg, ip_address, stack_or_default
from stack.aio.server import StackServer
from stack.aio.stream_transport import StackStreamTransport
from stack.socket_api import IpAddress, SocketOption, SocketType
from stack.socket_host import SocketHost
from stack.stream_socket import StreamSocket

__all__ = ["create_connection", "open_connection", "create_server", "start_server"]

STREAM_LIMIT = 2 ** 16  # asyncio's default StreamReader limit
DEFAULT_BACKLOG = 100   # asyncio's default for create_server


def _wake(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


async def _connect(loop: asyncio.AbstractEventLoop, sock: StreamSocket, address: IpAddress) -> None:
    """A non-blocking connect, waiting for writability (the attempt's end) on the loop."""
    try:
        sock.connect(address)
        return
    except BlockingIOError:
        pass
    fd = sock.fileno()
    while True:
        done = loop.create_future()
        loop.add_writer(fd, _wake, done)
        try:
            await done
        finally:
            loop.remove_writer(fd)
        err = sock.take_error()
        if err is not None:
            # The same exception class and message shape as asyncio's sock_connect.
            raise OSError(err.errno, f"Connect call failed {(str(address.ip), address.port)}")
        try:
            sock.connect(address)  # (once connected, the first call returns, as on Linux)
            return
        except BlockingIOError:
            continue  # EALREADY: still connecting


async def create_connection(protocol_factory, host=None, port=None, *, stack: SocketHost | None = None,
                            local_addr=None) -> tuple[StackStreamTransport, asyncio.BaseProtocol]:
    """``loop.create_connection`` on a stack: ``(transport, protocol)`` once connected."""
    loop = asyncio.get_running_loop()
    address = ip_address(host, port)
    sock = stack_or_default(stack).socket(SocketType.STREAM)
    try:
        sock.set_nonblocking(True)
        if local_addr is not None:
            sock.bind(address_arg(local_addr))
        await _connect(loop, sock, address)
        protocol = protocol_factory()
        waiter = loop.create_future()
        transport = StackStreamTransport(loop, sock, protocol, waiter=waiter)
        try:
            await waiter
        except BaseException:
            transport.abort()
            raise
    except BaseException:
        sock.close()
        raise
    return transport, protocol


async def open_connection(host=None, port=None, *, stack: SocketHost | None = None, limit: int = STREAM_LIMIT,
                          local_addr=None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` on a stack: a ``StreamReader`` and a ``StreamWriter``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, stack=stack, local_addr=local_addr)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def create_server(protocol_factory, host=None, port=None, *, stack: SocketHost | None = None,
                        backlog: int = DEFAULT_BACKLOG, reuse_address: bool | None = None,
                        start_serving: bool = True) -> StackServer:
    """``loop.create_server`` on a stack: listen on ``host:port`` (None: every address; port 0: any)."""
    loop = asyncio.get_running_loop()
    address = ip_address(host, port)
    sock = stack_or_default(stack).socket(SocketType.STREAM)
    try:
        if reuse_address is None or reuse_address:  # (asyncio's default on POSIX: on)
            sock.set_option(SocketOption.REUSE_ADDR, True)
        sock.bind(address)
        sock.listen(backlog)
        sock.set_nonblocking(True)
        server = StackServer(loop, [sock], protocol_factory, backlog)
    except BaseException:
        sock.close()
        raise
    if start_serving:
        await server.start_serving()
    return server


async def start_server(client_connected_cb, host=None, port=None, *, stack: SocketHost | None = None,
                       limit: int = STREAM_LIMIT, backlog: int = DEFAULT_BACKLOG, reuse_address: bool | None = None,
                       start_serving: bool = True) -> StackServer:
    """``asyncio.start_server`` on a stack: ``client_connected_cb(reader, writer)`` per connection
    (a coroutine function runs as a task)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, stack=stack, backlog=backlog, reuse_address=reuse_address,
                               start_serving=start_serving)
