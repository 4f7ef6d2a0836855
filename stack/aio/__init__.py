"""asyncio on the MultiOS stack: asyncio's streams, servers and datagram endpoints over stack sockets.

The calls have asyncio's names and arguments plus ``stack=`` (the
process-wide default stack, ``stack.set_default_stack``, without it), and
return asyncio's own objects where asyncio does (``StreamReader``,
``StreamWriter``, protocols), so an asyncio program runs on the stack with
only the origin of its streams changed::

    reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=my_stack)

They need a selector event loop (``asyncio.run``'s default on Linux): the
transports watch each stack socket's readiness descriptor with
``loop.add_reader``/``add_writer``. See docs/asyncio.md.
"""
from stack.aio.datagram import StackDatagramTransport, create_datagram_endpoint
from stack.aio.server import StackServer
from stack.aio.socket_view import SocketView
from stack.aio.stream_transport import StackStreamTransport
from stack.aio.streams import create_connection, create_server, open_connection, start_server

__all__ = [
    "SocketView",
    "StackDatagramTransport",
    "StackServer",
    "StackStreamTransport",
    "create_connection",
    "create_datagram_endpoint",
    "create_server",
    "open_connection",
    "start_server",
]
