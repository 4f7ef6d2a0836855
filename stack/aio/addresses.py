"""Where asyncio's arguments meet the stack's: hosts and ports in, address tuples out.

asyncio speaks ``(host, port)`` tuples of strings and ints; the stack speaks
:class:`~stack.socket_api.IpAddress`. The stack has no ``getaddrinfo``: a
host is an IPv4 address, and a name is refused with the ``socket.gaierror``
asyncio itself raises for a name it cannot resolve.
"""
from __future__ import annotations

import socket
from ipaddress import AddressValueError, IPv4Address

from stack.socket_api import IpAddress
from stack.socket_host import SocketHost, get_default_stack

__all__ = ["stack_or_default", "ip_address", "address_tuple", "address_arg"]


def stack_or_default(stack: SocketHost | None) -> SocketHost:
    """``stack``, or the process-wide default (``OSError(ENETDOWN)`` if none is set)."""
    return stack if stack is not None else get_default_stack()


def ip_address(host: str | IPv4Address | None, port: int | None) -> IpAddress:
    """``IpAddress`` from asyncio's ``host, port`` (host None or "" means every address)."""
    if port is None:
        port = 0
    if host is None or host == "":
        return IpAddress.any(port)
    if isinstance(host, str) and host == "localhost":
        host = "127.0.0.1"
    try:
        ip = host if isinstance(host, IPv4Address) else IPv4Address(host)
    except (AddressValueError, ValueError):
        raise socket.gaierror(
            socket.EAI_NONAME,
            f"{host!r} is not an IPv4 address (the MultiOS stack has no getaddrinfo: "
            "resolve names first, e.g. with stack.dns.client.DnsClient)") from None
    return IpAddress(ip, port)


def address_arg(value) -> IpAddress:
    """An address argument as asyncio takes it: ``(host, port)``, or an ``IpAddress``."""
    if isinstance(value, IpAddress):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return ip_address(value[0], value[1])
    raise TypeError(f"expected a (host, port) tuple or an IpAddress, got {value!r}")


def address_tuple(address: IpAddress) -> tuple[str, int]:
    """What asyncio's ``get_extra_info('peername')`` and ``datagram_received`` give: ``(host, port)``."""
    return (str(address.ip), address.port)
