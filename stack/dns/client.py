"""``DnsClient``: the resolver's state machine over the stack's own sockets.

    client = DnsClient(stack, ["10.0.0.254"])
    client.resolve("www.example.com")          # ['93.184.215.14']
    client.resolve("www.example.com", "AAAA")

Each UDP query goes out from a fresh socket bound to a random port; a
truncated answer is fetched again over TCP. The hosts table is asked first,
then the cache (on the stack's clock), then the servers. The cache keeps
whole answers (canonical name, CNAME chain; the TTL counts down while they
are kept) and NXDOMAIN/NODATA answers (RFC 2308), which raise the same
error again. Every failure is a :class:`stack.dns.errors.DnsError`.
"""
from __future__ import annotations

import errno
import random
import threading
from collections import Counter
from dataclasses import replace
from ipaddress import ip_address

from stack.dns.cache import DnsCache
from stack.dns.errors import DnsError, NameNotFound, NoData
from stack.dns.hosts import HostsTable
from stack.dns.resolver import (ADDRESS_TYPES, DNS_PORT, EDNS_PAYLOAD, Answer, Query, Resolution, TcpMessageReader,
                                tcp_frame)
from stack.socket_api import IpAddress, SocketType

__all__ = ["DnsClient"]

SOURCE_PORTS = (1024, 65536)  # the range random source ports are drawn from
BIND_TRIES = 16                # random ports tried before giving up on a busy stack


class DnsClient:
    """Resolve names through ``servers`` (IPv4 addresses) with the sockets of ``stack``.

    Thread-safe: lookups from several threads run side by side (each on its own sockets).
    """

    def __init__(self, stack, servers: list[str], *, port: int = DNS_PORT, timeout: float = 2.0,
                 attempts: int = 2, max_cnames: int = 8, edns_payload: int | None = EDNS_PAYLOAD,
                 hosts: HostsTable | None = None, cache: DnsCache | None = None,
                 rng: random.Random | None = None) -> None:
        for server in servers:
            try:
                IpAddress(server, port)
            except ValueError as exc:
                raise DnsError(f"bad DNS server {server!r}: {exc}") from None
        if edns_payload is not None and not 512 <= edns_payload <= 0xFFFF:
            raise ValueError(f"EDNS payload size must be 512..65535 or None, got {edns_payload}")
        self._stack = stack
        self.servers = [str(s) for s in servers]
        self.port = port
        self.timeout = timeout
        self.attempts = attempts
        self.max_cnames = max_cnames
        self.edns_payload = edns_payload
        self.hosts = hosts if hosts is not None else HostsTable()
        self.cache = cache if cache is not None else DnsCache()
        self._rng = rng or random.SystemRandom()
        self.ignored: Counter[str] = Counter()  # answers not accepted, by reason (all lookups)
        self.source_ports: list[int] = []      # of the recent UDP queries (the last 64)
        self._stats_lock = threading.Lock()

    def resolve(self, name: str, type: str = "A") -> list[str]:
        """The addresses of ``name`` ("A": IPv4, "AAAA": IPv6) as text."""
        return self.lookup(name, type).addresses

    def lookup(self, name: str, type: str = "A") -> Answer:
        """Like :meth:`resolve`, with the canonical name and TTL of the answer."""
        if type not in ADDRESS_TYPES:
            raise DnsError(f"record type {type!r}: only A and AAAA lookups are supported")
        known = self._without_servers(name, type)
        if known is not None:
            return known
        res = Resolution(name, type, self.servers, port=self.port, timeout=self.timeout,
                         attempts=self.attempts, max_cnames=self.max_cnames, edns_payload=self.edns_payload,
                         rng=self._rng)
        try:
            step: Query | Answer = res.start(self._now())
            while isinstance(step, Query):
                step = self._tcp_exchange(res, step) if step.tcp else self._udp_exchange(res, step)
        except (NameNotFound, NoData) as exc:
            if exc.negative_ttl:
                self.cache.put(name, type, exc, exc.negative_ttl, self._now())
            raise
        finally:
            with self._stats_lock:
                self.ignored.update(res.ignored)
        self.cache.put(name, type, step, step.ttl, self._now())
        return step

    def _without_servers(self, name: str, type: str) -> Answer | None:
        """An address literal, the hosts table or the cache answer without a query."""
        try:
            literal = ip_address(name)
        except ValueError:
            literal = None
        if literal is not None:
            if (literal.version == 4) != (type == "A"):
                raise DnsError(f"{name} is an IPv{literal.version} address, not a {type} name")
            return Answer(name, name, [str(literal)], 0, origin="literal")
        found = self.hosts.lookup(name, type)
        if found:
            return Answer(name, name, found, 0, origin="hosts")
        cached = self.cache.get_with_ttl(name, type, self._now())
        if cached is None:
            return None
        value, ttl_left = cached
        if isinstance(value, (NameNotFound, NoData)):
            raise value.again(ttl_left)
        # A copy (the caller may change its list), with the TTL that is left of the original.
        return replace(value, addresses=list(value.addresses), ttl=ttl_left, origin="cache")

    def _now(self) -> float:
        return self._stack.clock.now()

    # -- I/O -------------------------------------------------------------------------------------
    def _bound_udp_socket(self):
        sock = self._stack.socket(SocketType.DATAGRAM)
        for _ in range(BIND_TRIES):
            port = self._rng.randrange(*SOURCE_PORTS)
            try:
                sock.bind(IpAddress.any(port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                sock.close()
                raise
            with self._stats_lock:
                self.source_ports = (self.source_ports + [port])[-64:]
            return sock
        sock.close()
        raise DnsError(f"no free UDP source port after {BIND_TRIES} random tries")

    def _udp_exchange(self, res: Resolution, query: Query) -> Query | Answer:
        """Send ``query`` by UDP and wait for an answer res accepts, or the deadline."""
        with self._bound_udp_socket() as sock:
            try:
                sock.send_to(query.wire, IpAddress(query.server, query.port))
                while (remaining := query.deadline - self._now()) > 0:
                    sock.set_timeout(remaining)
                    data, src = sock.recv_from(65535)
                    step = res.receive(data, (str(src.ip), src.port), self._now())
                    if step is not None:
                        return step
            except OSError:
                pass  # a timeout, or the server unreachable: its turn is over
        return res.timed_out(self._now())

    def _tcp_exchange(self, res: Resolution, query: Query) -> Query | Answer:
        """Send ``query`` over a TCP connection (RFC 7766) and read one length-prefixed answer."""
        message = None
        with self._stack.socket(SocketType.STREAM) as sock:
            try:
                sock.set_timeout(max(query.deadline - self._now(), 0.001))
                sock.connect(IpAddress(query.server, query.port))
                sock.sendall(tcp_frame(query.wire))
                reader = TcpMessageReader()
                while message is None and (remaining := query.deadline - self._now()) > 0:
                    sock.set_timeout(remaining)
                    data = sock.recv(reader.missing())
                    if not data:
                        break  # the server closed before the whole answer
                    message = reader.feed(data)
            except OSError:
                pass
        step = res.receive(message, None, self._now()) if message is not None else None
        return step if step is not None else res.timed_out(self._now())
