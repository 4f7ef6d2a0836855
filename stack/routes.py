"""Route lookup for one interface: loopback, connected subnets, a gateway.

The table is small and fixed by the interface's addresses, so it is a
function of them rather than a general longest-prefix-match trie:

* the own addresses and 127.0.0.0/8 are *local*: delivered inside the stack
  without touching the NIC (the loopback device of a real OS);
* 255.255.255.255 and each subnet's broadcast address go to the Ethernet
  broadcast address;
* an address in a connected subnet is its own next hop;
* anything else goes via the default gateway, if there is one.
"""
from __future__ import annotations

import enum
import errno
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

__all__ = ["RouteKind", "Route", "RouteEntry", "RouteTable", "LOOPBACK_NET", "LIMITED_BROADCAST", "UNSPECIFIED"]

LOOPBACK_NET = IPv4Network("127.0.0.0/8")
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
UNSPECIFIED = IPv4Address("0.0.0.0")
LOOPBACK_ADDR = IPv4Address("127.0.0.1")


class RouteKind(enum.Enum):
    LOCAL = "local"  # in-stack loopback
    BROADCAST = "broadcast"  # Ethernet broadcast on the link
    LINK = "link"  # directly connected: ARP for the destination
    GATEWAY = "gateway"  # ARP for the gateway


@dataclass(frozen=True)
class Route:
    """Where a packet to one destination goes, and which source it uses."""

    kind: RouteKind
    src: IPv4Address
    next_hop: IPv4Address | None  # None for LOCAL and BROADCAST


@dataclass(frozen=True)
class RouteEntry:
    """One line of the table as ``ip route show table all`` lists it:
    ``destination`` a network or an address, ``next_hop`` only for GATEWAY."""

    destination: IPv4Network
    kind: RouteKind
    src: IPv4Address
    next_hop: IPv4Address | None


class RouteTable:
    """Routes derived from an interface's addresses and optional gateway."""

    def __init__(self, addresses: list[IPv4Interface], gateway: IPv4Address | None = None) -> None:
        if not addresses:
            raise ValueError("an interface needs at least one IPv4 address")
        for a in addresses:
            if a.ip in LOOPBACK_NET or a.ip.is_multicast or a.ip == UNSPECIFIED or a.ip == LIMITED_BROADCAST:
                raise ValueError(f"{a} cannot be an interface address")
        self.addresses = list(addresses)
        self.own = frozenset(a.ip for a in addresses)
        # /31 and /32 networks have no broadcast address (RFC 3021).
        self.subnet_broadcasts = frozenset(
            a.network.broadcast_address for a in addresses if a.network.prefixlen < 31
        )
        if gateway is not None and not any(gateway in a.network for a in addresses):
            raise ValueError(f"gateway {gateway} is not in a connected subnet")
        self.gateway = gateway

    def entries(self) -> list[RouteEntry]:
        """The table :meth:`lookup` follows, one entry per rule, most specific
        first within each address: its local address, its broadcast address,
        its subnet; then loopback, the limited broadcast and the default route."""
        rows = []
        for a in self.addresses:
            rows.append(RouteEntry(IPv4Network(a.ip), RouteKind.LOCAL, a.ip, None))
            if a.network.prefixlen < 31:
                rows.append(RouteEntry(IPv4Network(a.network.broadcast_address), RouteKind.BROADCAST, a.ip, None))
            rows.append(RouteEntry(a.network, RouteKind.LINK, a.ip, None))
        first = self.addresses[0].ip
        rows.append(RouteEntry(LOOPBACK_NET, RouteKind.LOCAL, LOOPBACK_ADDR, None))
        rows.append(RouteEntry(IPv4Network(LIMITED_BROADCAST), RouteKind.BROADCAST, first, None))
        if self.gateway is not None:
            via = next(a.ip for a in self.addresses if self.gateway in a.network)
            rows.append(RouteEntry(IPv4Network("0.0.0.0/0"), RouteKind.GATEWAY, via, self.gateway))
        return rows

    def is_local(self, ip: IPv4Address) -> bool:
        """An address this host answers for (own or loopback)."""
        return ip in self.own or ip in LOOPBACK_NET

    def is_broadcast(self, ip: IPv4Address) -> bool:
        return ip == LIMITED_BROADCAST or ip in self.subnet_broadcasts

    def source_for(self, dst: IPv4Address) -> IPv4Address:
        """The address to send from when the socket did not pick one."""
        return self.lookup(dst).src

    def lookup(self, dst: IPv4Address, src: IPv4Address | None = None) -> Route:
        """The route to ``dst``; ``src`` is the socket's bound address, if any.

        Raises ``OSError(ENETUNREACH)`` when nothing matches and
        ``OSError(EINVAL)`` for a loopback source towards the outside.
        """
        if src == UNSPECIFIED:
            src = None
        if dst in self.own:
            return Route(RouteKind.LOCAL, src or dst, None)
        if dst in LOOPBACK_NET:
            return Route(RouteKind.LOCAL, src or LOOPBACK_ADDR, None)
        if src is not None and src in LOOPBACK_NET:
            raise OSError(errno.EINVAL, f"cannot send from loopback address {src} to {dst}")
        if dst == LIMITED_BROADCAST:
            return Route(RouteKind.BROADCAST, src or self.addresses[0].ip, None)
        if dst.is_multicast:
            raise OSError(errno.ENETUNREACH, f"no route to {dst} (multicast is not supported)")
        if dst == UNSPECIFIED:
            raise OSError(errno.ENETUNREACH, "cannot send to 0.0.0.0")
        for a in self.addresses:
            if dst in a.network:
                if dst in self.subnet_broadcasts:
                    return Route(RouteKind.BROADCAST, src or a.ip, None)
                return Route(RouteKind.LINK, src or a.ip, dst)
        if self.gateway is not None:
            via = next(a.ip for a in self.addresses if self.gateway in a.network)
            return Route(RouteKind.GATEWAY, src or via, self.gateway)
        raise OSError(errno.ENETUNREACH, f"no route to {dst} (no gateway configured)")
