"""UDP socket state: the binding table and ephemeral ports (sans-IO).

Who may bind where, and which socket a received datagram belongs to. The
interface (stack/iface.py) parses and sends the packets; this module only
keeps the table.

Binding rules follow Linux: two sockets may share a port when their local
addresses cannot overlap (two different specific addresses), or when both set
REUSE_ADDR. A datagram goes to the most specific match (connected beats
unconnected, a specific address beats the wildcard; among equals the most
recently bound); broadcasts go to every matching socket.
"""
from __future__ import annotations

import errno
import random
from ipaddress import IPv4Address

from stack.sockstate import SocketState

__all__ = ["UdpSocketState", "UdpTable", "EPHEMERAL_PORTS"]

ANY = IPv4Address(0)
# Linux's default net.ipv4.ip_local_port_range.
EPHEMERAL_PORTS = (32768, 60999)


class UdpSocketState(SocketState):
    """One UDP socket in the core."""


class UdpTable:
    """The bound UDP sockets of one interface, by port."""

    def __init__(self, rng: random.Random | None = None, ephemeral: tuple[int, int] = EPHEMERAL_PORTS) -> None:
        lo, hi = ephemeral
        if not 1 <= lo <= hi <= 65535:
            raise ValueError("bad ephemeral port range")
        self._rng = rng or random.Random()
        self._ephemeral = ephemeral
        self._by_port: dict[int, list[UdpSocketState]] = {}

    def bind(self, sock: UdpSocketState, ip: IPv4Address, port: int) -> None:
        """Bind ``sock`` to ``(ip, port)``; port 0 picks an ephemeral port.

        Raises ``OSError(EINVAL)`` if already bound, ``OSError(EADDRINUSE)``
        if the address is taken or no ephemeral port is free. Checking that
        ``ip`` is one of ours is the interface's job.
        """
        if sock.local is not None:
            raise OSError(errno.EINVAL, "socket is already bound")
        if not 0 <= port <= 65535:
            raise OSError(errno.EINVAL, f"port {port} out of range")
        if port == 0:
            port = self._pick_ephemeral()
        elif not self._is_free(sock, ip, port):
            raise OSError(errno.EADDRINUSE, f"address {ip}:{port} is already in use")
        sock.local = (ip, port)
        self._by_port.setdefault(port, []).append(sock)

    def unbind(self, sock: UdpSocketState) -> None:
        if sock.local is None:
            return
        port = sock.local[1]
        users = self._by_port.get(port, [])
        if sock in users:
            users.remove(sock)
        if not users:
            self._by_port.pop(port, None)
        sock.local = None

    def rebind_address(self, sock: UdpSocketState, ip: IPv4Address) -> None:
        """Narrow a wildcard binding to ``ip`` (connect picks the source)."""
        assert sock.local is not None
        sock.local = (ip, sock.local[1])

    def lookup(
        self, dst_ip: IPv4Address, dst_port: int, src_ip: IPv4Address, src_port: int, *, broadcast: bool
    ) -> list[UdpSocketState]:
        """The sockets a datagram to ``dst`` from ``src`` is delivered to."""
        best: list[tuple[int, int, UdpSocketState]] = []
        for order, sock in enumerate(self._by_port.get(dst_port, ())):
            lip = sock.local[0]
            if lip != ANY and lip != dst_ip:
                continue
            if sock.remote is not None and sock.remote != (src_ip, src_port):
                continue
            score = (2 if lip != ANY else 0) + (4 if sock.remote is not None else 0)
            best.append((score, order, sock))
        if not best:
            return []
        if broadcast:
            return [s for _, _, s in best]
        return [max(best, key=lambda t: (t[0], t[1]))[2]]

    def find(self, local_ip: IPv4Address, local_port: int, remote_ip: IPv4Address, remote_port: int) -> UdpSocketState | None:
        """The socket that sent ``local -> remote`` (for ICMP errors about it)."""
        found = self.lookup(local_ip, local_port, remote_ip, remote_port, broadcast=False)
        return found[0] if found else None

    def sockets(self) -> list[UdpSocketState]:
        return [s for users in self._by_port.values() for s in users]

    # -- internals ------------------------------------------------------------
    def _is_free(self, sock: UdpSocketState, ip: IPv4Address, port: int) -> bool:
        for other in self._by_port.get(port, ()):
            oip = other.local[0]
            overlap = oip == ip or oip == ANY or ip == ANY
            if overlap and not (sock.reuse_addr and other.reuse_addr):
                return False
        return True

    def _pick_ephemeral(self) -> int:
        # RFC 6056 section 3.3.1 (Algorithm 1, simple port randomization):
        # a random starting point, then the next free port upwards, wrapping.
        lo, hi = self._ephemeral
        count = hi - lo + 1
        port = lo + self._rng.randrange(count)
        for _ in range(count):
            # An ephemeral port is never shared, REUSE_ADDR or not.
            if port not in self._by_port:
                return port
            port = lo if port == hi else port + 1
        raise OSError(errno.EADDRINUSE, "no free ephemeral UDP port")
