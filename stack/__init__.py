"""MultiOS: a teaching TCP/IP stack in Python with a POSIX-style socket API.

Quick start (see docs/stack.md)::

    from stack import LoopbackNicPair, Stack, Socket, SocketType, IpAddress

    nic_a, nic_b = LoopbackNicPair()
    with Stack(nic_a, "10.0.0.1/24") as a, Stack(nic_b, "10.0.0.2/24") as b:
        server = b.socket(SocketType.DATAGRAM)
        server.bind(IpAddress.parse("0.0.0.0:5353"))
        client = a.socket(SocketType.DATAGRAM)
        client.send_to(b"hi", IpAddress.parse("10.0.0.2:5353"))
        data, sender = server.recv_from(2048)

        listener = b.socket(SocketType.STREAM)       # TCP
        listener.bind(IpAddress.any(7))
        listener.listen()
        conn = a.socket(SocketType.STREAM)
        conn.connect(IpAddress.parse("10.0.0.2:7"))
        peer, address = listener.accept()
        conn.sendall(b"hello")
        peer.recv(100)
"""
from stack.drivers import Impairment, LoopbackNic, LoopbackNicPair, Nic, NicOffloads
from stack.clock import MonotonicClock, VirtualClock
from stack.datagram_socket import DatagramSocket
from stack.pool import ConnectionPool
from stack.runtime import Stack
from stack.socket_api import (
    IpAddress,
    PollEvent,
    Shutdown,
    Socket,
    SocketOption,
    SocketType,
    poll,
)
from stack.socket_host import get_default_stack, set_default_stack
from stack.stream_socket import StreamSocket
from stack.tcp import ListenerInfo, TcpConfig, TcpInfo

__all__ = [
    "ConnectionPool",
    "DatagramSocket",
    "Impairment",
    "IpAddress",
    "ListenerInfo",
    "LoopbackNic",
    "LoopbackNicPair",
    "MonotonicClock",
    "Nic",
    "NicOffloads",
    "PollEvent",
    "Shutdown",
    "Socket",
    "SocketOption",
    "SocketType",
    "Stack",
    "StreamSocket",
    "TcpConfig",
    "TcpInfo",
    "VirtualClock",
    "get_default_stack",
    "poll",
    "set_default_stack",
]
