"""The interface: Ethernet, ARP, IPv4, ICMP, UDP and TCP for one NIC, sans-IO.

Frames go in with :meth:`Interface.receive_frame`, frames to send come out
of :meth:`Interface.poll`, and :meth:`Interface.poll_at` says when ``poll``
has timed work (ARP retries, reassembly timeouts). Nothing here reads a
clock, blocks or touches a descriptor: ``now`` is passed into every call, so
tests drive it with a fake clock and the runtime (stack/runtime.py) drives
it with ``time.monotonic``. The model is smoltcp's ``Interface::poll``.

Sockets live in the core as plain state (stack/udp.py, stack/raw.py, and
the TCP engine's connections and listeners behind :attr:`Interface.tcp`, a
:class:`stack.tcp.glue.TcpLayer`); the socket API calls the ``udp_*``/
``raw_*``/``tcp_*`` methods below under the runtime's lock. A bad frame from the wire is counted and dropped, never raised; a bad
request from a local socket raises ``OSError`` with the errno a POSIX stack
would give.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import random
from collections import deque
from ipaddress import IPv4Address, IPv4Interface
from typing import Iterable, NamedTuple

from stack.arp_cache import ArpCache
from stack.counters import Counters
from stack.ip_fragments import FragmentationNeeded, Reassembler, fragment
from stack.drivers import DATA_VALID, GSO_TCPV4, NO_RX_META, FrameMeta, TxItem
from stack.ratelimit import KeyedRateLimiter
from stack.raw import RawSocketState, RawTable
from stack.routes import LOOPBACK_NET, UNSPECIFIED, Route, RouteKind, RouteTable
from stack.sockstate import SocketState
from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.glue import OutSegment, TcpLayer, icmp_is_hard
from stack.tcp.listener import TcpListener
from stack.udp import UdpSocketState, UdpTable
from stack.wire import (
    ArpOperation,
    ArpRepr,
    DestUnreachable,
    DestUnreachableCode,
    EchoReply,
    EchoRequest,
    EthernetRepr,
    EtherType,
    IpProtocol,
    Ipv4Packet,
    Ipv4Repr,
    MacAddress,
    MalformedPacket,
    TimeExceeded,
    TimeExceededCode,
    UdpDatagram,
    UdpRepr,
    emit_icmpv4,
    error_payload,
    parse_icmpv4,
)

log = logging.getLogger(__name__)

__all__ = ["Interface", "ICMP_ERRNO", "MAX_UDP_PAYLOAD"]

ETH_HEADER_LEN = 14
IP_HEADER_LEN = 20
UDP_HEADER_LEN = 8
MAX_UDP_PAYLOAD = 65535 - IP_HEADER_LEN - UDP_HEADER_LEN  # 65507
ZERO_MAC = MacAddress(bytes(6))
LOOPED_META = DATA_VALID  # in-stack loopback: checksums are ours
LOOPBACK_BURST = 256  # looped packets handled per poll, so a loop cannot hang poll
ROUTE_CACHE_SIZE = 1024  # routes never change, but peers are many: bound the memo
TCP_MIN_QUOTE = 8  # ports and sequence number: what RFC 5927 needs from the quoted header

# What an ICMP destination-unreachable code means to a socket (as in Linux's
# icmp_err_convert table); anything not listed is EHOSTUNREACH.
ICMP_ERRNO = {
    DestUnreachableCode.NET: errno.ENETUNREACH,
    DestUnreachableCode.HOST: errno.EHOSTUNREACH,
    DestUnreachableCode.PROTOCOL: errno.ENOPROTOOPT,
    DestUnreachableCode.PORT: errno.ECONNREFUSED,
    DestUnreachableCode.FRAG_NEEDED: errno.EMSGSIZE,
    DestUnreachableCode.SOURCE_ROUTE_FAILED: errno.EOPNOTSUPP,
    DestUnreachableCode.NET_UNKNOWN: errno.ENETUNREACH,
    DestUnreachableCode.HOST_UNKNOWN: errno.EHOSTDOWN,
    DestUnreachableCode.SOURCE_HOST_ISOLATED: errno.ENONET,
    DestUnreachableCode.NET_PROHIBITED: errno.ENETUNREACH,
    DestUnreachableCode.HOST_PROHIBITED: errno.EHOSTUNREACH,
    DestUnreachableCode.COMM_PROHIBITED: errno.EHOSTUNREACH,
}


class _Waiting(NamedTuple):
    """A packet in the ARP queue: the IP packet, who sent it, offload info."""

    packet: bytes
    owner: SocketState | None
    meta: FrameMeta | None


def _layer(reason: str) -> tuple[str, str]:
    # "ipv4: bad checksum" -> ("ipv4", "bad checksum"): counted per layer.
    layer, sep, rest = reason.partition(": ")
    return (layer, rest) if sep else ("iface", reason)



def encode_offloaded(o: OutSegment, l4_offset: int) -> tuple[bytes, FrameMeta]:
    """A TCP segment with a partial checksum, and the :class:`FrameMeta` that
    asks the NIC to finish the checksum and, for a TSO segment (``gso_size``),
    to cut it into ``gso_size`` pieces (TCPv4 GSO). ``l4_offset`` is where the
    TCP header starts in the frame (Ethernet + IP header lengths). Here, not in
    the TCP engine, because only the interface knows the NIC's vocabulary."""
    segment, start, offset = o.header.emit_partial_csum(o.payload, o.src, o.dst)
    if o.gso_size:
        return segment, FrameMeta(True, l4_offset + start, offset, False, GSO_TCPV4, o.gso_size)
    return segment, FrameMeta(True, l4_offset + start, offset)

class Interface:
    """One IPv4 interface: addresses, routes, ARP, sockets, counters."""

    def __init__(
        self,
        nic_mac: MacAddress | str | bytes,
        addresses: Iterable[IPv4Interface | str],
        gateway: IPv4Address | str | None = None,
        mtu: int = 1500,
        *,
        tx_csum_offload: bool = False,
        rng: random.Random | None = None,
        arp_cache: ArpCache | None = None,
        reassembler: Reassembler | None = None,
        icmp_rate_limiter: KeyedRateLimiter | None = None,
        tcp_config: TcpConfig | None = None,
        tcp: TcpLayer | None = None,
    ) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"IPv4 needs an MTU between 68 and 65535, got {mtu}")
        self.mac = MacAddress(nic_mac)
        self.routes = RouteTable(
            [IPv4Interface(a) for a in addresses], IPv4Address(gateway) if gateway is not None else None
        )
        self.mtu = mtu
        self.tx_csum_offload = tx_csum_offload
        self.counters = Counters()
        self.arp = arp_cache or ArpCache()
        self.reassembler = reassembler or Reassembler()
        self.icmp_limiter = icmp_rate_limiter or KeyedRateLimiter()
        self._rng = rng or random.Random()
        self.udp = UdpTable(self._rng)
        self.raw = RawTable()
        # TCP segments are sized for this interface's MTU whatever the caller's config says.
        if tcp is None:
            tcp = TcpLayer(dataclasses.replace(tcp_config or TcpConfig(), mtu=mtu))
        self.tcp = tcp
        self._tx: list[TxItem] = []
        self._loop: deque[bytes] = deque()  # IP packets on the in-stack loopback
        self._ident = self._rng.randrange(1 << 16)
        self._route_cache: dict[tuple[IPv4Address, IPv4Address], Route] = {}  # TCP's (dst, src) -> route

    # -- configuration views -----------------------------------------------------
    @property
    def addresses(self) -> list[IPv4Interface]:
        return list(self.routes.addresses)

    @property
    def gateway(self) -> IPv4Address | None:
        return self.routes.gateway

    # -- driving the core -------------------------------------------------------
    def start(self, now: float) -> None:
        """Announce the interface: one gratuitous ARP per address (RFC 5227)."""
        for a in self.routes.addresses:
            self._queue_arp(ArpOperation.REQUEST, a.ip, ZERO_MAC, a.ip, MacAddress.broadcast())
            self.counters.bump("arp", "tx_gratuitous")

    def receive_frame(self, frame: bytes, now: float, meta: FrameMeta = NO_RX_META) -> None:
        """Process one received Ethernet frame. Never raises for bad input."""
        try:
            self._receive_frame(frame, now, meta)
        except MalformedPacket as exc:
            layer, reason = _layer(exc.reason)
            self.counters.drop(layer, reason)
        except Exception:  # a bug must not take the stack down: count it, log it
            log.exception("internal error while processing a received frame")
            self.counters.drop("iface", "internal error")

    def _receive_looped(self, packet: bytes, now: float) -> None:
        """Like receive_frame, for an IP packet on the in-stack loopback."""
        try:
            self._receive_ipv4(packet, now, LOOPED_META, link_broadcast=False, looped=True)
        except MalformedPacket as exc:
            layer, reason = _layer(exc.reason)
            self.counters.drop(layer, reason)
        except Exception:
            log.exception("internal error while processing a looped packet")
            self.counters.drop("iface", "internal error")

    def poll(self, now: float) -> list[TxItem]:
        """Do timed work and loopback traffic; return the ``(frame, meta)``
        pairs to transmit (``meta`` None for a finished frame)."""
        # Order matters: work that makes packets first, ARP (which may have to
        # ask for their next hop) last, so one poll sends everything it can.
        for (src, dst, _proto, _ident), first in self.reassembler.expire(now):
            self.counters.bump("ipv4", "reassembly_timeout")
            if first is not None and not self.routes.is_broadcast(dst):
                # RFC 792: time exceeded (reassembly) only if fragment 0 came.
                self._icmp_error(TimeExceeded(TimeExceededCode.FRAG_REASSEMBLY, first), src, now)
        self._run_loopback(now)
        self._poll_tcp(now)
        self._poll_arp(now)
        out, self._tx = self._tx, []
        self.counters.bump("ethernet", "tx", len(out))
        return out

    def poll_at(self) -> float | None:
        """When ``poll`` next has work: 0.0 for "now", None for "only on input"."""
        if self._tx or self._loop:
            return 0.0
        times = [t for t in (self.arp.poll_at(), self.reassembler.next_deadline(), self.tcp.poll_at()) if t is not None]
        return min(times) if times else None

    # -- UDP socket calls (from the socket API, under the runtime's lock) --------
    def udp_open(self) -> UdpSocketState:
        return UdpSocketState()

    def udp_bind(self, sock: UdpSocketState, ip: IPv4Address, port: int) -> None:
        """Bind to one of our addresses (or 0.0.0.0, or 127/8) and a port."""
        self._check_bindable(ip)
        self.udp.bind(sock, ip, port)

    def udp_connect(self, sock: UdpSocketState, ip: IPv4Address, port: int) -> None:
        """Fix the peer; bind an ephemeral port and pick the source if needed."""
        if port == 0:
            raise OSError(errno.EINVAL, "cannot connect to port 0")
        self._check_broadcast_allowed(sock, ip)
        route = self.routes.lookup(ip, sock.local[0] if sock.local else None)
        if sock.local is None:
            self.udp.bind(sock, UNSPECIFIED, 0)
        if sock.local[0] == UNSPECIFIED:
            # Like Linux: connect() narrows a wildcard binding to the route's source.
            self.udp.rebind_address(sock, route.src)
        sock.remote = (ip, port)

    def udp_send(
        self, sock: UdpSocketState, data: bytes, dst: tuple[IPv4Address, int] | None, now: float
    ) -> int:
        """Send one datagram; return its length. Errors are OSError."""
        if sock.write_shutdown:
            raise OSError(errno.EPIPE, "socket is shut down for writing")
        if dst is None:
            if sock.remote is None:
                raise OSError(errno.EDESTADDRREQ, "socket is not connected and no address given")
            dst = sock.remote
        ip, port = dst
        if port == 0:
            raise OSError(errno.EINVAL, "cannot send to port 0")
        if len(data) > MAX_UDP_PAYLOAD:
            raise OSError(errno.EMSGSIZE, f"UDP payload of {len(data)} bytes exceeds {MAX_UDP_PAYLOAD}")
        self._check_broadcast_allowed(sock, ip)
        route = self.routes.lookup(ip, sock.local[0] if sock.local else None)
        if sock.local is None:
            self.udp.bind(sock, UNSPECIFIED, 0)
        udp = UdpRepr(sock.local[1], port)
        size = IP_HEADER_LEN + UDP_HEADER_LEN + len(data)
        meta = None
        if self.tx_csum_offload and route.kind in (RouteKind.LINK, RouteKind.GATEWAY) and size <= self.mtu:
            datagram, start, offset = udp.emit_partial_csum(data, route.src, ip)
            meta = FrameMeta(True, ETH_HEADER_LEN + IP_HEADER_LEN + start, offset)
        else:
            datagram = udp.emit(data, route.src, ip)
        self._send_ip(route, ip, IpProtocol.UDP, datagram, now, ttl=sock.ttl, tos=sock.tos, owner=sock, meta=meta)
        self.counters.bump("udp", "tx")
        return len(data)

    def udp_close(self, sock: UdpSocketState) -> None:
        self.udp.unbind(sock)
        sock.mark_closed()

    # -- RAW socket calls ----------------------------------------------------------
    def raw_open(self, protocol: int) -> RawSocketState:
        if protocol != IpProtocol.ICMP:
            raise OSError(errno.EPROTONOSUPPORT, "only ICMP raw sockets are supported")
        sock = RawSocketState(IpProtocol.ICMP)
        self.raw.add(sock)
        return sock

    def raw_bind(self, sock: RawSocketState, ip: IPv4Address) -> None:
        self._check_bindable(ip)
        sock.local = (ip, 0)

    def raw_connect(self, sock: RawSocketState, ip: IPv4Address) -> None:
        self.routes.lookup(ip)  # fail early if there is no route
        sock.remote = (ip, 0)

    def raw_send(self, sock: RawSocketState, data: bytes, dst: IPv4Address | None, now: float) -> int:
        """Send ``data`` (an ICMP message, unchecked) in an IP packet to ``dst``."""
        if sock.write_shutdown:
            raise OSError(errno.EPIPE, "socket is shut down for writing")
        if dst is None:
            if sock.remote is None:
                raise OSError(errno.EDESTADDRREQ, "socket is not connected and no address given")
            dst = sock.remote[0]
        if len(data) > 65535 - IP_HEADER_LEN:
            raise OSError(errno.EMSGSIZE, f"{len(data)} bytes do not fit in an IPv4 packet")
        self._check_broadcast_allowed(sock, dst)
        route = self.routes.lookup(dst, sock.local[0] if sock.local else None)
        self._send_ip(route, dst, sock.protocol, bytes(data), now, ttl=sock.ttl, tos=sock.tos, owner=sock)
        self.counters.bump("raw", "tx")
        return len(data)

    def raw_close(self, sock: RawSocketState) -> None:
        self.raw.remove(sock)
        sock.mark_closed()

    # -- TCP socket calls (the engine lives in self.tcp; these add the IP layer's checks) --
    def tcp_bind(self, ip: IPv4Address, port: int, reuse_addr: bool = False) -> int:
        """Reserve ``(ip, port)`` for a TCP socket (port 0: ephemeral); return the port."""
        self._check_bindable(ip)
        return self.tcp.bind(ip, port, reuse_addr)

    def tcp_connect(
        self,
        ip: IPv4Address,
        port: int,
        now: float,
        *,
        local: tuple[IPv4Address, int] | None = None,
        config: TcpConfig | None = None,
    ) -> TcpConnection:
        """Active open to ``(ip, port)``; the SYN leaves on the next :meth:`poll`.

        ``local`` is the socket's earlier binding (its port moves to the
        connection); without one, the route picks the source address and an
        RFC 6056 ephemeral port is chosen. Like Linux, a broadcast or
        multicast destination is ENETUNREACH.
        """
        if self.routes.is_broadcast(ip) or ip.is_multicast:
            raise OSError(errno.ENETUNREACH, f"cannot open a TCP connection to {ip}")
        bound_ip, bound_port = local if local is not None else (UNSPECIFIED, 0)
        route = self.routes.lookup(ip, bound_ip)
        src = bound_ip if bound_ip != UNSPECIFIED else route.src
        return self.tcp.connect(src, (ip, port), now, local_port=bound_port, config=config)

    # The rest of a TCP socket's calls, so that sockets need nothing but these tcp_* methods.
    @property
    def tcp_config(self) -> TcpConfig:
        """The defaults every TCP socket starts from (a socket's options replace fields)."""
        return self.tcp.config

    def tcp_unbind(self, ip: IPv4Address, port: int) -> None:
        """Release a :meth:`tcp_bind` reservation that was never used."""
        self.tcp.unbind(ip, port)

    def tcp_listen(self, ip: IPv4Address, port: int, backlog: int, config: TcpConfig | None = None) -> TcpListener:
        """Turn a :meth:`tcp_bind` reservation into a listener."""
        return self.tcp.listen(ip, port, backlog, config=config)

    def tcp_accept(self, listener: TcpListener) -> TcpConnection | None:
        """The listener's next established connection, or None."""
        return self.tcp.accept(listener)

    def tcp_close_listener(self, listener: TcpListener) -> None:
        """Stop listening; queued connections are reset on the next :meth:`poll`."""
        self.tcp.close_listener(listener)

    def _check_bindable(self, ip: IPv4Address) -> None:
        if ip != UNSPECIFIED and not self.routes.is_local(ip):
            raise OSError(errno.EADDRNOTAVAIL, f"{ip} is not an address of this interface")

    def _check_broadcast_allowed(self, sock: SocketState, ip: IPv4Address) -> None:
        if self.routes.is_broadcast(ip) and not sock.broadcast:
            raise OSError(errno.EACCES, f"{ip} is a broadcast address: set SocketOption.BROADCAST first")

    # -- sending -----------------------------------------------------------------
    def _next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def _send_ip(
        self,
        route: Route,
        dst: IPv4Address,
        protocol: int,
        payload: bytes,
        now: float,
        *,
        ttl: int = 64,
        tos: int = 0,
        owner: SocketState | None = None,
        meta: FrameMeta | None = None,
        dont_frag: bool = False,
    ) -> None:
        """Route, fragment and queue (or loop back) one IP datagram."""
        ip = Ipv4Repr(route.src, dst, protocol, len(payload), ttl=ttl, ident=self._next_ident(), dont_frag=dont_frag,
                      tos=tos)
        self.counters.bump("ipv4", "tx")
        if route.kind is RouteKind.LOCAL:
            # The loopback "device" has a 64 KiB MTU: never fragment here.
            self._loop.append(ip.emit(payload))
            return
        try:
            packets = fragment(ip, payload, self.mtu)
        except FragmentationNeeded as exc:
            raise OSError(errno.EMSGSIZE, f"packet larger than the MTU {exc.mtu} with Don't Fragment") from None
        if len(packets) > 1:
            self.counters.bump("ipv4", "tx_fragments", len(packets))
        if route.kind is RouteKind.BROADCAST:
            for p in packets:
                self._queue_frame(MacAddress.broadcast(), EtherType.IPV4, p, meta)
            # Like Linux, a broadcast is also delivered to this host's own sockets.
            self._loop.append(ip.emit(payload))
            return
        for p in packets:
            self._send_to_next_hop(route.next_hop, p, now, owner, meta)

    def _send_to_next_hop(
        self, hop: IPv4Address, packet: bytes, now: float, owner: SocketState | None, meta: FrameMeta | None
    ) -> None:
        mac = self.arp.lookup(hop, now)
        if mac is not None:
            self._queue_frame(mac, EtherType.IPV4, packet, meta)
            return
        for _ in self.arp.enqueue(hop, _Waiting(packet, owner, meta), now):
            self.counters.drop("arp", "queue full")

    def _queue_frame(self, dst: MacAddress, ethertype: EtherType, payload: bytes, meta: FrameMeta | None = None) -> None:
        frame = EthernetRepr(dst, self.mac, ethertype).emit(payload)
        self._tx.append((frame, meta))

    def _queue_arp(
        self, op: ArpOperation, sender_ip: IPv4Address, target_mac: MacAddress, target_ip: IPv4Address, eth_dst: MacAddress
    ) -> None:
        arp = ArpRepr(op, self.mac, sender_ip, target_mac, target_ip)
        self._queue_frame(eth_dst, EtherType.ARP, arp.emit())

    def _icmp_error(self, msg: DestUnreachable | TimeExceeded, to: IPv4Address, now: float) -> None:
        """Send an ICMP error about a packet from ``to``, rate-limited per peer."""
        if not self.icmp_limiter.allow(to, now):
            self.counters.bump("icmpv4", "tx_error_rate_limited")
            return
        try:
            route = self.routes.lookup(to)
            self._send_ip(route, to, IpProtocol.ICMP, emit_icmpv4(msg), now)
        except OSError as exc:  # no route back: nothing to tell anyone
            self.counters.drop("icmpv4", f"error unroutable ({errno.errorcode.get(exc.errno, exc.errno)})")
            return
        self.counters.bump("icmpv4", "tx_error")

    def _may_send_error_about(self, ip: Ipv4Repr, broadcast: bool) -> bool:
        # RFC 1122 3.2.2: never about broadcasts, non-first fragments, or
        # packets whose source does not name a single host.
        src = ip.src
        return not (
            broadcast
            or ip.frag_offset != 0
            or src == UNSPECIFIED
            or src.is_multicast
            or self.routes.is_broadcast(src)
        )

    # -- timed work ----------------------------------------------------------------
    def _poll_arp(self, now: float) -> None:
        result = self.arp.poll(now)
        for ip in result.requests:
            self._queue_arp(ArpOperation.REQUEST, self.routes.source_for(ip), ZERO_MAC, ip, MacAddress.broadcast())
            self.counters.bump("arp", "tx_request")
        for ip, mac in result.probes:  # RFC 1122's unicast poll of an entry in use
            self._queue_arp(ArpOperation.REQUEST, self.routes.source_for(ip), ZERO_MAC, ip, mac)
            self.counters.bump("arp", "tx_probe")
        for ip, waiting in result.failed:
            self.counters.bump("arp", "resolution_failed")
            told: set[int] = set()
            for item in waiting:
                self.counters.drop("ipv4", "neighbour unreachable")
                if item.owner is not None and id(item.owner) not in told:
                    told.add(id(item.owner))
                    item.owner.set_error(errno.EHOSTUNREACH)

    def _poll_tcp(self, now: float) -> None:
        """Send the TCP engine's segments: checksum offloaded when the NIC offers it."""
        segments = self.tcp.poll(now)
        if not segments:
            return
        routes = self._route_cache
        offload = self.tx_csum_offload
        for o in segments:
            key = (o.dst, o.src)
            route = routes.get(key)
            try:
                if route is None:
                    if len(routes) >= ROUTE_CACHE_SIZE:
                        routes.clear()
                    route = routes[key] = self.routes.lookup(o.dst, o.src)
                if o.gso_size and route.kind is not RouteKind.LOCAL:
                    if o.header.sack_blocks and IP_HEADER_LEN + o.header.header_len + o.gso_size > self.mtu:
                        o = self._trim_sack(o, o.gso_size)  # each piece carries the header
                    self._send_tcp_tso(o, route, now, offload)
                    self.counters.bump("tcp", "tx_segments")
                    continue
                meta = None
                fits = route.kind is RouteKind.LOCAL or (
                    IP_HEADER_LEN + o.header.header_len + len(o.payload) <= self.mtu
                )
                if not fits and o.header.sack_blocks:
                    o = self._trim_sack(o, len(o.payload))
                    fits = IP_HEADER_LEN + o.header.header_len + len(o.payload) <= self.mtu
                if offload and fits and route.kind is not RouteKind.LOCAL:
                    segment, start, offset = o.encode(partial_checksum=True)
                    meta = FrameMeta(True, ETH_HEADER_LEN + IP_HEADER_LEN + start, offset)
                else:
                    segment = o.encode()
                if not fits:
                    # The engine sizes segments for the MTU; one that still does not
                    # fit (an engine bug) goes out fragmented rather than not at all.
                    self.counters.bump("tcp", "tx_oversize_fragmented")
                # Segments are sized for the MTU: Don't Fragment, and path MTU discovery works.
                self._send_ip(route, o.dst, IpProtocol.TCP, segment, now, ttl=o.ttl, tos=o.tos, owner=o.owner, meta=meta,
                              dont_frag=fits)
            except OSError as exc:  # no route (any more), or larger than the MTU: the engine retransmits
                self.counters.drop("tcp", f"tx unroutable ({errno.errorcode.get(exc.errno, exc.errno)})")
                continue
            self.counters.bump("tcp", "tx_segments")

    def _send_tcp_tso(self, o: OutSegment, route: Route, now: float, offload: bool) -> None:
        """A TSO segment (``TcpConfig.tso_max``): whole to the NIC, which cuts it
        into ``gso_size`` pieces (FrameMeta gso_type GSO_TCPV4), never IP-fragmented.
        Without checksum offload (the NIC could not segment it either) it is
        cut here into MSS-sized segments."""
        if offload and route.kind in (RouteKind.LINK, RouteKind.GATEWAY):
            segment, meta = encode_offloaded(o, ETH_HEADER_LEN + IP_HEADER_LEN)
            ip = Ipv4Repr(route.src, o.dst, IpProtocol.TCP, len(segment), ttl=o.ttl, ident=self._next_ident(),
                          dont_frag=True, tos=o.tos)
            self.counters.bump("ipv4", "tx")
            self.counters.bump("tcp", "tx_tso")
            self._send_to_next_hop(route.next_hop, ip.emit(segment), now, o.owner, meta)
            return
        self.counters.bump("tcp", "tx_tso_software")
        for piece in o.split():
            self._send_ip(route, piece.dst, IpProtocol.TCP, piece.encode(), now, ttl=piece.ttl, tos=piece.tos,
                          owner=piece.owner,
                          dont_frag=True)

    def _trim_sack(self, o: OutSegment, payload_len: int) -> OutSegment:
        """Drop SACK blocks from a segment too big for the MTU until it fits.

        A safety net only: the engine sizes every segment for the options it
        carries (``SendMixin._seg_mss``), so this fires only for a segment
        an engine bug made too big, or one from a ``TcpLayer`` whose MTU is
        not this interface's; the counter says it happened.

        ``payload_len`` is the payload each packet will carry (a TSO piece's
        ``gso_size``, else the whole payload).

        SACK blocks are advice (RFC 2018: as many as fit), so fewer of them
        beat a fragmented segment, which a lossy path delivers far less often
        and which ties up the peer's reassembly buffers when a piece is lost.
        """
        room = self.mtu - IP_HEADER_LEN - payload_len
        blocks = o.header.sack_blocks
        header = o.header
        while blocks and header.header_len > room:
            blocks = blocks[:-1]
            header = dataclasses.replace(header, sack_blocks=blocks)
        self.counters.bump("tcp", "tx_sack_trimmed")
        return o._replace(header=header)

    def _run_loopback(self, now: float) -> None:
        # Packets looped while handling these (an echo reply to ourselves)
        # are handled too, up to a bound: poll_at() says "now" for the rest.
        for _ in range(LOOPBACK_BURST):
            if not self._loop:
                return
            packet = self._loop.popleft()
            self.counters.bump("loopback", "packets")
            self._receive_looped(packet, now)

    # -- receiving -----------------------------------------------------------------
    def _receive_frame(self, frame: bytes, now: float, meta: FrameMeta) -> None:
        self.counters.bump("ethernet", "rx")
        eth, payload = EthernetRepr.parse(frame)
        if eth.dst != self.mac and not eth.dst.is_broadcast:
            self.counters.drop("ethernet", "not for us")
            return
        if eth.src.is_multicast:
            self.counters.drop("ethernet", "multicast source")
            return
        if eth.ethertype == EtherType.ARP:
            self._receive_arp(payload, now)
        elif eth.ethertype == EtherType.IPV4:
            self._receive_ipv4(payload, now, meta, link_broadcast=eth.dst.is_broadcast, looped=False)
        else:
            self.counters.drop("ethernet", "unknown ethertype")

    def _receive_arp(self, payload, now: float) -> None:
        arp = ArpRepr.parse(payload)
        self.counters.bump("arp", "rx")
        if arp.sender_mac.is_multicast:
            self.counters.drop("arp", "multicast sender")
            return
        if arp.sender_ip in self.routes.own:
            if arp.sender_mac != self.mac:
                self.counters.bump("arp", "address_conflict")  # someone else claims our address
            return
        for_us = arp.target_ip in self.routes.own
        if arp.sender_ip == UNSPECIFIED:
            pass  # an address probe (RFC 5227): nobody to learn
        elif not any(arp.sender_ip in a.network for a in self.routes.addresses):
            self.counters.drop("arp", "sender not on link")
            return
        else:
            # RFC 826: update a known sender; add it only if it asked us.
            for item in self.arp.learn(arp.sender_ip, arp.sender_mac, now, create=for_us):
                self._queue_frame(arp.sender_mac, EtherType.IPV4, item.packet, item.meta)
        if arp.operation == ArpOperation.REQUEST and for_us:
            self._queue_arp(ArpOperation.REPLY, arp.target_ip, arp.sender_mac, arp.sender_ip, arp.sender_mac)
            self.counters.bump("arp", "tx_reply")

    def _dst_kind(self, dst: IPv4Address, looped: bool) -> str | None:
        if dst in self.routes.own or (looped and dst in LOOPBACK_NET):
            return "local"
        if self.routes.is_broadcast(dst):
            return "broadcast"
        return None

    def _receive_ipv4(self, packet, now: float, meta: FrameMeta, *, link_broadcast: bool, looped: bool) -> None:
        ip, data = Ipv4Repr.parse(packet)
        self.counters.bump("ipv4", "rx")
        kind = self._dst_kind(ip.dst, looped)
        if kind is None:
            self.counters.drop("ipv4", "not for us")
            return
        src = ip.src
        if src.is_multicast or self.routes.is_broadcast(src) or (not looped and self.routes.is_local(src)):
            self.counters.drop("ipv4", "bad source address")
            return
        hlen = Ipv4Packet(packet).header_len
        if ip.is_fragment:
            self.counters.bump("ipv4", "rx_fragments")
            whole = self.reassembler.add(ip, data, now, raw_header=bytes(packet[:hlen]))
            if whole is None:
                return
            self.counters.bump("ipv4", "reassembled")
            ip = dataclasses.replace(ip, payload_len=len(whole), more_frags=False, frag_offset=0)
            full = memoryview(ip.header_bytes() + whole)
            data = full[IP_HEADER_LEN:]
            meta = NO_RX_META  # the NIC's verdict was about one fragment only
        else:
            full = memoryview(packet)[: hlen + ip.payload_len]  # without Ethernet padding
        self._deliver(ip, data, full, now, meta, broadcast=kind == "broadcast" or link_broadcast)

    def _deliver(self, ip: Ipv4Repr, data, full, now: float, meta: FrameMeta, broadcast: bool) -> None:
        """Hand a whole datagram to the raw sockets and to its protocol."""
        raw = self.raw.matching(ip.protocol, ip.src, ip.dst)
        if raw:
            copy = bytes(full)
            for sock in raw:
                if sock.push(copy, (ip.src, 0)):
                    self.counters.bump("raw", "rx")
                else:
                    self.counters.drop("raw", "receive buffer full")
        if ip.protocol == IpProtocol.ICMP:
            self._receive_icmp(ip, data, now, meta, broadcast)
        elif ip.protocol == IpProtocol.UDP:
            self._receive_udp(ip, data, full, now, meta, broadcast)
        elif ip.protocol == IpProtocol.TCP:
            # A closed port gets a RST from the engine, never an ICMP error.
            # Bad checksums and headers raise MalformedPacket ("tcp: ...").
            self.counters.bump("tcp", "rx_segments")
            self.tcp.receive(ip.src, ip.dst, data, now, csum_valid=meta.data_valid, broadcast=broadcast)
        elif not raw:
            self.counters.drop("ipv4", "unknown protocol")
            if self._may_send_error_about(ip, broadcast):
                self._icmp_error(DestUnreachable(DestUnreachableCode.PROTOCOL, error_payload(full)), ip.src, now)

    def _receive_icmp(self, ip: Ipv4Repr, data, now: float, meta: FrameMeta, broadcast: bool) -> None:
        msg = parse_icmpv4(data, verify_checksum=not meta.data_valid)
        self.counters.bump("icmpv4", "rx")
        if isinstance(msg, EchoRequest):
            self.counters.bump("icmpv4", "rx_echo_request")
            if broadcast:
                # Like Linux's icmp_echo_ignore_broadcasts=1 (smurf amplification).
                self.counters.drop("icmpv4", "echo to broadcast ignored")
                return
            try:
                route = self.routes.lookup(ip.src, ip.dst)
                reply = emit_icmpv4(EchoReply(msg.ident, msg.seq, msg.data))
                self._send_ip(route, ip.src, IpProtocol.ICMP, reply, now)
            except OSError:
                self.counters.drop("icmpv4", "echo reply unroutable")
                return
            self.counters.bump("icmpv4", "tx_echo_reply")
        elif isinstance(msg, EchoReply):
            self.counters.bump("icmpv4", "rx_echo_reply")
        elif isinstance(msg, (DestUnreachable, TimeExceeded)):
            self.counters.bump("icmpv4", "rx_error")
            self._icmp_error_to_socket(msg)
        else:
            self.counters.bump("icmpv4", "rx_other")

    def _icmp_error_to_socket(self, msg: DestUnreachable | TimeExceeded) -> None:
        """Report an ICMP error to the connected UDP socket or TCP connection it is about."""
        quoted = Ipv4Packet(msg.header)
        hlen = quoted.header_len
        if quoted.version != 4 or hlen < IP_HEADER_LEN or len(msg.header) < hlen + UDP_HEADER_LEN:
            self.counters.drop("icmpv4", "bad quoted packet")
            return
        if quoted.protocol == IpProtocol.TCP:
            self._icmp_error_to_tcp(msg, quoted, bytes(msg.header[hlen : hlen + TCP_MIN_QUOTE]))
            return
        if quoted.protocol != IpProtocol.UDP:
            self.counters.bump("icmpv4", "rx_error_not_udp")
            return
        udp = UdpDatagram(memoryview(msg.header)[hlen:])
        sock = self.udp.find(quoted.src, udp.src_port, quoted.dst, udp.dst_port)
        if sock is None:
            self.counters.bump("icmpv4", "rx_error_no_socket")
            return
        if sock.remote is None:
            # Linux reports these to unconnected sockets only with IP_RECVERR.
            self.counters.bump("udp", "icmp_error_ignored_unconnected")
            return
        if isinstance(msg, DestUnreachable):
            err = ICMP_ERRNO.get(msg.code, errno.EHOSTUNREACH)
        else:
            err = errno.EHOSTUNREACH
        sock.set_error(err)
        self.counters.bump("udp", "icmp_error_reported")

    def _icmp_error_to_tcp(self, msg: DestUnreachable | TimeExceeded, quoted: Ipv4Packet, tcp_head: bytes) -> None:
        """Hand an ICMP error to the engine (RFC 5927 checks, soft/hard errors, path MTU)."""
        mtu = None
        hard = False
        if isinstance(msg, DestUnreachable):
            err = ICMP_ERRNO.get(msg.code, errno.EHOSTUNREACH)
            hard = icmp_is_hard(msg.code)
            if msg.code == DestUnreachableCode.FRAG_NEEDED:
                # RFC 1191; a pre-1191 router says 0: fall back to 576, the size every host takes.
                mtu = msg.next_hop_mtu if msg.next_hop_mtu >= 68 else 576
        else:
            err = errno.EHOSTUNREACH
        if self.tcp.icmp_error(quoted.src, quoted.dst, tcp_head, err, hard, mtu):
            self.counters.bump("tcp", "icmp_error_reported")
        else:
            self.counters.bump("tcp", "icmp_error_ignored")

    def _receive_udp(self, ip: Ipv4Repr, data, full, now: float, meta: FrameMeta, broadcast: bool) -> None:
        udp, payload = UdpRepr.parse(data, ip.src, ip.dst, verify_checksum=not meta.data_valid)
        self.counters.bump("udp", "rx")
        socks = self.udp.lookup(ip.dst, udp.dst_port, ip.src, udp.src_port, broadcast=broadcast)
        if not socks:
            self.counters.drop("udp", "no socket")
            if self._may_send_error_about(ip, broadcast):
                self._icmp_error(DestUnreachable(DestUnreachableCode.PORT, error_payload(full)), ip.src, now)
            return
        body = bytes(payload)
        for sock in socks:
            if not sock.push(body, (ip.src, udp.src_port)):
                self.counters.drop("udp", "receive buffer full")
