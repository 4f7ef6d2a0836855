"""RAW socket state (sans-IO): ICMP sockets that see whole packets.

Like Linux's ``socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)``: every ICMP packet
addressed to this host is copied (IP header included) to each raw socket
whose bound and connected addresses match; the stack still answers echo
requests itself. A send carries the ICMP message only; the stack adds the IP
header. Only a privileged stack hands these out (the socket API checks).
"""
from __future__ import annotations

from ipaddress import IPv4Address

from stack.sockstate import SocketState
from stack.wire import IpProtocol

__all__ = ["RawSocketState", "RawTable"]

ANY = IPv4Address(0)


class RawSocketState(SocketState):
    """One RAW socket for one IP protocol."""

    def __init__(self, protocol: IpProtocol) -> None:
        super().__init__()
        self.protocol = protocol


class RawTable:
    """The open RAW sockets of one interface."""

    def __init__(self) -> None:
        self._sockets: list[RawSocketState] = []

    def add(self, sock: RawSocketState) -> None:
        if sock not in self._sockets:
            self._sockets.append(sock)

    def remove(self, sock: RawSocketState) -> None:
        if sock in self._sockets:
            self._sockets.remove(sock)

    def matching(self, protocol: int, src: IPv4Address, dst: IPv4Address) -> list[RawSocketState]:
        """Sockets that get a copy of a packet ``src -> dst`` of ``protocol``."""
        out = []
        for sock in self._sockets:
            if sock.protocol != protocol:
                continue
            if sock.local is not None and sock.local[0] not in (ANY, dst):
                continue
            if sock.remote is not None and sock.remote[0] != src:
                continue
            out.append(sock)
        return out

    def sockets(self) -> list[RawSocketState]:
        return list(self._sockets)

    def __len__(self) -> int:
        return len(self._sockets)
