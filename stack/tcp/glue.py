"""TCP for one interface: demultiplexing, listeners, ports and RST replies (sans-IO).

:class:`TcpLayer` sits between the interface (stack/iface.py) and the
engine (:class:`TcpConnection`, :class:`TcpListener`). The interface hands
it every TCP segment addressed to us and asks it, on every poll, for the
segments to send; the socket layer asks it to bind, listen, connect and
accept. It never touches a clock or a descriptor.

What the interface owner calls (all under the stack's one lock)::

    tcp = TcpLayer(TcpConfig(mtu=iface.mtu))
    # receiving: in _deliver(), for ip.protocol == IpProtocol.TCP
    tcp.receive(ip.src, ip.dst, data, now, csum_valid=meta.data_valid,
                broadcast=broadcast)          # raises MalformedPacket like UDP
    # sending: in poll(), before ARP
    for o in tcp.poll(now):                   # OutSegment(src, dst, header, payload, ttl, owner)
        route = routes.lookup(o.dst, o.src)
        seg = o.header.emit(o.payload, o.src, o.dst)   # or emit_partial_csum
        _send_ip(route, o.dst, IpProtocol.TCP, seg, now, ttl=o.ttl,
                 owner=o.owner, dont_frag=True)
    # timers: in poll_at()
    tcp.poll_at()                             # 0.0, a time, or None
    # ICMP errors about TCP (in _icmp_error_to_socket)
    tcp.icmp_error(quoted.src, quoted.dst, quoted_tcp_bytes, err, hard, mtu)

``o.owner`` is the connection; the interface's ARP-failure path calls
``owner.set_error(EHOSTUNREACH)``, which a connection records as a soft
error (reported if it then times out, as Linux does).
"""
from __future__ import annotations

import copy
import errno
import struct
from collections import Counter
from ipaddress import IPv4Address
from typing import Iterable, NamedTuple

from stack.tcp.config import TcpConfig
from stack.tcp.connection import Endpoint, TcpConnection, TcpInfo
from stack.tcp.listener import COOKIE_QUEUE_FULL, SOMAXCONN, ListenerInfo, TcpListener
from stack.tcp.poll_schedule import PollSchedule
from stack.tcp.reset import reset_for
from stack.tcp.seq import IsnGenerator, PortAllocator, unwrap
from stack.tcp.state import TcpState
from stack.wire.tcp import TcpFlags, TcpRepr

__all__ = ["TcpLayer", "OutSegment", "ListenerInfo", "icmp_is_hard", "format_table", "ANY"]

ANY = IPv4Address(0)
_U16x2_U32 = struct.Struct("!HHI")
_LIMITED_BROADCAST = IPv4Address("255.255.255.255")

# ICMP destination-unreachable codes that end a connection attempt (Linux's
# icmp_err_convert "fatal" entries): protocol and port unreachable, and the
# administratively prohibited ones. Net/host unreachable and source route
# failed (codes 0, 1, 5) stay soft (MUST-56).
_HARD_UNREACH = frozenset({2, 3, 9, 10, 13})


def icmp_is_hard(code: int) -> bool:
    """Does this destination-unreachable code abort an opening connection?"""
    return code in _HARD_UNREACH


class OutSegment(NamedTuple):
    """A segment to send: addresses, header (no checksum yet), payload, TTL, owner.

    ``gso_size`` > 0 marks a TSO segment (``TcpConfig.tso_max``): more payload
    than one MSS, to be cut by the NIC into segments of ``gso_size`` bytes.
    It must never be IP-fragmented: the interface sends it whole with a partial
    checksum and a GSO request for the NIC (``stack.iface.encode_offloaded``), or
    :meth:`split` it first when the route or the NIC cannot take it whole.
    """

    src: IPv4Address
    dst: IPv4Address
    header: TcpRepr
    payload: bytes
    ttl: int
    owner: TcpConnection | None
    gso_size: int = 0
    tos: int = 0  # the IP header's DSCP/ECN byte (TcpConfig.tos)

    def encode(self, partial_checksum: bool = False):
        """``bytes`` with the checksum, or ``(bytes, csum_start, csum_offset)`` for offload."""
        if partial_checksum:
            return self.header.emit_partial_csum(self.payload, self.src, self.dst)
        return self.header.emit(self.payload, self.src, self.dst)

    def split(self) -> list[OutSegment]:
        """A TSO segment as the ``gso_size`` segments a NIC would make (software
        GSO); any other segment as itself. Sequence numbers advance, the urgent
        pointer follows, and PSH/FIN stay on the last piece only."""
        size = self.gso_size
        payload = self.payload
        if not size or len(payload) <= size:
            return [self._replace(gso_size=0)]
        h = self.header
        out = []
        for pos in range(0, len(payload), size):
            r = copy.copy(h)
            r.seq = (h.seq + pos) & 0xFFFFFFFF
            if pos + size < len(payload):
                r.flags = TcpFlags(h.flags & ~(TcpFlags.PSH | TcpFlags.FIN))
            if h.flags & TcpFlags.URG:
                if h.urgent > pos:
                    r.urgent = h.urgent - pos
                else:
                    r.flags = TcpFlags(r.flags & ~TcpFlags.URG)
                    r.urgent = 0
            out.append(self._replace(header=r, payload=payload[pos : pos + size], gso_size=0))
        return out


class TcpLayer:
    """Every TCP connection and listener of one interface."""

    def __init__(
        self,
        config: TcpConfig | None = None,
        *,
        isn: IsnGenerator | None = None,
        ports: PortAllocator | None = None,
        max_syn_backlog: int = SOMAXCONN,
        syncookies: bool = True,
    ) -> None:
        self.config = config or TcpConfig()
        self.syncookies = syncookies
        self.isn = isn or IsnGenerator()
        self.ports = ports or PortAllocator()
        self.max_syn_backlog = max_syn_backlog
        self._conns: dict[tuple[IPv4Address, int, IPv4Address, int], TcpConnection] = {}
        # Which connections poll() must look at (not all of them: see stack.tcp.poll_schedule).
        self._schedule: PollSchedule[TcpConnection] = PollSchedule()
        # Local ports of the connections: port -> local address -> count (port_in_use without a scan).
        self._conn_ports: dict[int, Counter[IPv4Address]] = {}
        self._listeners: dict[tuple[IPv4Address, int], TcpListener] = {}
        self._bound: Counter[tuple[IPv4Address, int]] = Counter()  # explicit binds not yet in use
        self._replies: list[OutSegment] = []
        # The layer's own counters, plus "closed.NAME": the per-connection counters (``TcpInfo.counters``)
        # of the connections already removed, summed (their resets, timeouts, drops).
        self.counters: Counter[str] = Counter()

    # -- the interface's side --------------------------------------------------------------
    def receive(
        self,
        src: IPv4Address,
        dst: IPv4Address,
        segment,
        now: float,
        *,
        csum_valid: bool = False,
        broadcast: bool = False,
    ) -> None:
        """One TCP segment for us. Bad checksums and headers raise ``MalformedPacket``."""
        seg, payload = TcpRepr.parse(segment, src, dst, verify_checksum=not csum_valid)
        self.counters["rx"] += 1
        if broadcast or dst.is_multicast or dst == _LIMITED_BROADCAST:
            self.counters["drop.broadcast destination"] += 1  # MUST-57
            return
        key = (dst, seg.dst_port, src, seg.src_port)
        conn = self._conns.get(key)
        iss_floor = None
        if conn is not None:
            if conn.state is TcpState.TIME_WAIT and conn.may_reopen(seg) and self._find_listener(dst, seg.dst_port):
                # MAY-2: a new SYN ends TIME-WAIT early; the new ISN starts beyond the old SND.NXT.
                self.counters["time_wait_reopened"] += 1
                iss_floor = (conn.snd.nxt + 65536) & 0xFFFFFFFF
                self._remove(key)
            else:
                conn.receive_segment(seg, payload, now)
                self._schedule.touch(conn)
                return
        flags = int(seg.flags)
        listener = self._find_listener(dst, seg.dst_port)
        if listener is None or listener.closed:
            self.counters["rx_no_socket"] += 1
            self._reply_rst(src, dst, seg, len(payload))
            return
        if flags & TcpFlags.RST:
            self.counters["drop.rst to listener"] += 1
            return
        if flags & TcpFlags.ACK:
            if not flags & TcpFlags.SYN:
                child = listener.on_cookie_ack(dst, (src, seg.src_port), seg, now)
                if child is COOKIE_QUEUE_FULL:
                    self.counters["drop.accept queue full"] += 1  # the peer's next segment tries again
                    return
                if child is not None:  # the final ACK of a SYN-cookie handshake
                    self._add(key, child)
                    if len(payload) or flags & TcpFlags.FIN:
                        child.receive_segment(seg, payload, now)
                    return
            self._reply_rst(src, dst, seg, len(payload))  # RFC 9293 3.10.7.2
            return
        if not flags & TcpFlags.SYN:
            self.counters["drop.no syn to listener"] += 1
            return
        if src.is_multicast or src.is_unspecified or src == _LIMITED_BROADCAST or src.is_loopback and not dst.is_loopback:
            self.counters["drop.bad source"] += 1  # MUST-63
            return
        child = listener.on_syn(dst, (src, seg.src_port), seg, now, iss_floor=iss_floor)
        if child is None:
            synack = listener.cookie_synack(dst, (src, seg.src_port), seg, now) if listener.syn_queue_full else None
            if synack is not None:
                self.counters["tx_syn_cookie"] += 1
                self._replies.append(OutSegment(dst, src, synack, b"", listener.config.ttl, None,
                                                   tos=listener.config.tos))
            else:
                self.counters["drop.listen queue"] += 1
            return
        self._add(key, child)
        # Data in a SYN is not acceptable yet (no TFO); it is simply retransmitted later.

    def _reply_rst(self, src: IPv4Address, dst: IPv4Address, seg: TcpRepr, payload_len: int) -> None:
        rst = reset_for(seg, payload_len)
        if rst is None:
            self.counters["drop.rst without socket"] += 1
            return
        self.counters["tx_rst"] += 1
        self._replies.append(OutSegment(dst, src, rst, b"", self.config.ttl, None))

    def _find_listener(self, ip: IPv4Address, port: int) -> TcpListener | None:
        return self._listeners.get((ip, port)) or self._listeners.get((ANY, port))

    def poll(self, now: float) -> list[OutSegment]:
        """Run due timers; every segment to send now.

        Only the connections touched since the last poll or with a deadline
        due are looked at (stack.tcp.poll_schedule), not all of them.
        """
        out, self._replies = self._replies, []
        schedule = self._schedule
        for conn in schedule.due(now):
            at = conn.poll_at()
            if at is not None and at <= now:
                self._poll_one(conn, now, out)
            if conn.finished:  # (also one reset by a RST, which has no timer left)
                self._remove((*conn.local, *conn.remote), conn)
            else:
                schedule.schedule(conn, conn.poll_at())
        self.counters["tx"] += len(out)
        return out

    @staticmethod
    def _poll_one(conn: TcpConnection, now: float, out: list[OutSegment]) -> None:
        src, dst, ttl, tos = conn.local[0], conn.remote[0], conn.config.ttl, conn.config.tos
        mss = conn.snd_mss
        for header, payload in conn.poll(now):
            # gso_size is the payload per piece: every piece repeats the options.
            m = conn.segment_mss(header) if header.sack_blocks else mss
            out.append(OutSegment(src, dst, header, payload, ttl, conn, m if len(payload) > m else 0, tos))

    def poll_at(self) -> float | None:
        """When :meth:`poll` has work: 0.0 for now, None for only on input."""
        if self._replies:
            return 0.0
        return self._schedule.next_at(TcpConnection.poll_at)

    def _add(self, key: tuple[IPv4Address, int, IPv4Address, int], conn: TcpConnection) -> None:
        """A new connection: demultiplexed by ``key``, scheduled, its local port counted."""
        self._conns[key] = conn
        conn.on_touch = self._schedule.touch
        self._schedule.touch(conn)
        self._conn_ports.setdefault(key[1], Counter())[key[0]] += 1

    def _remove(self, key: tuple[IPv4Address, int, IPv4Address, int], conn: TcpConnection | None = None) -> None:
        """Forget the connection under ``key`` (only if it is ``conn``, when given)."""
        old = self._conns.get(key)
        if old is None or (conn is not None and old is not conn):
            if conn is not None:
                self._schedule.forget(conn)
            return
        del self._conns[key]
        for name, value in old.stats.items():  # what happened to the connections that are gone
            self.counters["closed." + name] += value
        old.on_touch = None
        self._schedule.forget(old)
        users = self._conn_ports[key[1]]
        users[key[0]] -= 1
        if users[key[0]] <= 0:
            del users[key[0]]
            if not users:
                del self._conn_ports[key[1]]

    def icmp_error(
        self, src: IPv4Address, dst: IPv4Address, quoted_tcp: bytes, err: int, hard: bool = False, mtu: int | None = None
    ) -> bool:
        """An ICMP error quoting a segment we sent from ``src`` to ``dst``.

        ``quoted_tcp`` is at least the first 8 bytes of our TCP header.
        Following RFC 5927 the quoted sequence number must lie in
        [SND.UNA, SND.NXT), or the message is ignored (a blind attacker
        would have to guess it). ``mtu`` (fragmentation needed) lowers the
        path MSS. Returns True if a connection took it.
        """
        if len(quoted_tcp) < 8:
            self.counters["icmp_ignored_short"] += 1
            return False
        sport, dport, seq = _U16x2_U32.unpack_from(quoted_tcp, 0)
        conn = self._conns.get((src, sport, dst, dport))
        if conn is None:
            self.counters["icmp_no_connection"] += 1
            return False
        s = unwrap(seq, conn.snd.una)
        if not (conn.snd.una <= s < max(conn.snd.nxt, conn.snd.una + 1)):
            self.counters["icmp_ignored_out_of_window"] += 1
            return False
        if mtu is not None:
            conn.path_mtu(mtu)
        else:
            conn.icmp_error(err, hard)
        self._schedule.touch(conn)
        self.counters["icmp_taken"] += 1
        return True

    # -- the socket layer's side ----------------------------------------------------------
    def port_in_use(self, ip: IPv4Address, port: int) -> bool:
        """Is ``port`` bound, listened on, or used by a connection on an overlapping address?"""
        for (bip, bport) in list(self._bound) + list(self._listeners):
            if bport == port and (bip == ip or bip == ANY or ip == ANY):
                return True
        return self._conn_uses(ip, port)

    def _conn_uses(self, ip: IPv4Address, port: int) -> bool:
        """Does a connection use local ``port`` on ``ip`` (any address when ``ip`` is ANY)?"""
        users = self._conn_ports.get(port)
        return bool(users) and (ip == ANY or ip in users)

    def bind(self, ip: IPv4Address, port: int, reuse_addr: bool = False) -> int:
        """Reserve a local port (0: pick one); ``OSError(EADDRINUSE)`` if taken.

        With ``reuse_addr`` a port held only by connections (TIME-WAIT,
        say) may be bound again, as SO_REUSEADDR allows on Linux.
        """
        if not 0 <= port <= 65535:
            raise OSError(errno.EINVAL, f"port {port} out of range")
        if port == 0:
            port = self.ports.pick(ip, ANY, 0, lambda p: self.port_in_use(ip, p))
        else:
            taken = any(
                bport == port and (bip == ip or bip == ANY or ip == ANY)
                for bip, bport in list(self._bound) + list(self._listeners)
            )
            if taken or (not reuse_addr and self._conn_uses(ip, port)):
                raise OSError(errno.EADDRINUSE, f"address {ip}:{port} is already in use")
        self._bound[(ip, port)] += 1
        return port

    def unbind(self, ip: IPv4Address, port: int) -> None:
        """Release a reservation made by :meth:`bind` (close before listen/connect)."""
        key = (ip, port)
        if self._bound[key] > 1:
            self._bound[key] -= 1
        else:
            self._bound.pop(key, None)

    def listen(self, ip: IPv4Address, port: int, backlog: int, config: TcpConfig | None = None) -> TcpListener:
        """Turn a :meth:`bind` reservation into a listener (LISTEN)."""
        key = (ip, port)
        if key in self._listeners:
            lst = self._listeners[key]
            lst.listen(backlog)
            return lst
        lst = TcpListener(
            key, backlog, config or self.config, self.isn,
            max_syn_backlog=self.max_syn_backlog, syncookies=self.syncookies,
        )
        self._listeners[key] = lst
        self.unbind(ip, port)
        return lst

    def close_listener(self, listener: TcpListener) -> None:
        """Stop listening; queued connections are reset (their RSTs go out on the next poll)."""
        self._listeners.pop(listener.local, None)
        listener.close()

    def connect(
        self,
        local_ip: IPv4Address,
        remote: Endpoint,
        now: float,
        *,
        local_port: int = 0,
        config: TcpConfig | None = None,
    ) -> TcpConnection:
        """Active open from ``local_ip`` (the route's source) to ``remote``.

        ``local_port`` 0 picks an RFC 6056 ephemeral port; a port from an
        earlier :meth:`bind` is used as is (its reservation moves to the
        connection). Raises ``OSError(EADDRINUSE)`` if the 4-tuple exists and
        ``OSError(EADDRNOTAVAIL)`` when no port is free.
        """
        rip, rport = remote
        if rport == 0:
            raise OSError(errno.EINVAL, "cannot connect to port 0")
        if rip.is_multicast or rip == _LIMITED_BROADCAST or rip.is_unspecified:
            raise OSError(errno.ENETUNREACH, f"cannot connect to {rip}")  # MUST-46
        if local_port == 0:
            local_port = self.ports.pick(
                local_ip, rip, rport, lambda p: (local_ip, p, rip, rport) in self._conns or self.port_in_use(local_ip, p)
            )
        else:
            if (local_ip, local_port, rip, rport) in self._conns:
                raise OSError(errno.EADDRINUSE, "that connection already exists")
            for key in ((local_ip, local_port), (ANY, local_port)):
                if key in self._bound:
                    self.unbind(*key)
                    break
        cfg = config or self.config
        iss = self.isn.isn(local_ip, local_port, rip, rport, now)
        tso = self.isn.ts_offset(local_ip, local_port, rip, rport)
        conn = TcpConnection.connect((local_ip, local_port), (rip, rport), iss, now, cfg, ts_offset=tso)
        self._add((local_ip, local_port, rip, rport), conn)
        self.counters["active_opens"] += 1
        return conn

    def accept(self, listener: TcpListener) -> TcpConnection | None:
        """The next connection that completed its handshake (already demultiplexed)."""
        return listener.accept()

    # -- visibility ------------------------------------------------------------------------
    def connections(self) -> list[TcpConnection]:
        return list(self._conns.values())

    def listeners(self) -> list[ListenerInfo]:
        """One :class:`ListenerInfo` (queues and counters) per listener."""
        return [lst.info() for lst in self._listeners.values()]

    def table(self) -> list[TcpInfo]:
        """One :class:`TcpInfo` per connection, sorted by local then remote address."""
        infos = [c.info() for c in self._conns.values()]
        return sorted(infos, key=lambda i: (int(i.local[0]), i.local[1], int(i.remote[0]), i.remote[1]))


def format_table(infos: Iterable[TcpInfo], listeners: Iterable[ListenerInfo] = ()) -> str:
    """A text table like ``ss -tin``: state, queues, addresses, cwnd, srtt, retransmits."""
    lines = [f"{'State':<12} {'Recv-Q':>7} {'Send-Q':>7} {'Local':<21} {'Peer':<21} details"]
    for lst in listeners:
        local = f"{lst.local[0]}:{lst.local[1]}"
        # The listener's counters too (drops for full queues, cookies: what `nstat`'s ListenOverflows says).
        counts = "".join(f" {name}:{value}" for name, value in sorted(lst.counters.items()) if value)
        lines.append(
            f"{'LISTEN':<12} {lst.pending:>7} {lst.backlog:>7} {local:<21} {'*:*':<21}"
            f" syn-queue:{lst.embryonic}/{lst.max_syn_backlog}{counts}"
        )
    for i in infos:
        local = f"{i.local[0]}:{i.local[1]}"
        peer = f"{i.remote[0]}:{i.remote[1]}"
        srtt = "-" if i.srtt is None else f"{i.srtt * 1000:.1f}/{(i.rttvar or 0) * 1000:.1f}"
        ssthresh = "" if i.ssthresh is None else f" ssthresh:{i.ssthresh // max(i.snd_mss, 1)}"
        details = (
            f"{i.congestion} {' '.join(i.options)} rto:{i.rto * 1000:.0f} rtt:{srtt} mss:{i.snd_mss}"
            f" cwnd:{i.cwnd // max(i.snd_mss, 1)}{ssthresh} bytes_acked:{i.bytes_acked}"
            f" bytes_received:{i.bytes_received} retrans:{i.retransmits}"
        )
        lines.append(f"{i.state.value:<12} {i.recv_queue:>7} {i.send_queue:>7} {local:<21} {peer:<21} {details}")
    return "\n".join(lines)

