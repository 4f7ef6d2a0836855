"""What one interface holds, as plain data: the monitor's view of a stack (sans-IO).

``interface_snapshot(iface, now)`` reads an :class:`~stack.iface.Interface`
and returns dicts, lists, strings and numbers only (JSON as it is), the
tables ``ip addr``, ``ip neigh``, ``ip route`` and ``ss -tuan`` show:

* ``interface``: MAC, MTU, addresses with prefix, gateway;
* ``neighbours``: the ARP cache, each entry with its state and age
  (:meth:`stack.arp_cache.ArpCache.neighbours`);
* ``routes``: the rules routing follows (:meth:`stack.routes.RouteTable.entries`);
* ``sockets``: bound UDP and RAW sockets, TCP listeners and every TCP
  connection, one row each with ``netid``, ``state``, ``recv_q``, ``send_q``,
  ``local``, ``peer`` and ``details`` (a few more numbers).

Read only, and nothing here takes a lock or reads a clock: the runtime
calls it under its lock with its clock's ``now``
(:meth:`stack.runtime.Stack.snapshot`, which adds the counters and the NIC).
"""
from __future__ import annotations

from ipaddress import IPv4Address

from stack.iface import Interface
from stack.tcp.connection import TcpInfo
from stack.tcp.listener import ListenerInfo

__all__ = ["interface_snapshot", "socket_rows"]

ANY = IPv4Address(0)


def _endpoint(ep) -> str:
    """``ip:port`` as ``ss -n`` writes it: port 0 is ``*``, no endpoint ``0.0.0.0:*``."""
    if ep is None:
        return f"{ANY}:*"
    ip, port = ep
    return f"{ip}:{port or '*'}"


def interface_snapshot(iface: Interface, now: float) -> dict:
    """The interface's tables as plain data (see the module doc)."""
    return {
        "interface": {
            "mac": str(iface.mac),
            "mtu": iface.mtu,
            "addresses": [str(a) for a in iface.addresses],
            "gateway": None if iface.gateway is None else str(iface.gateway),
        },
        "neighbours": [
            {"ip": str(n.ip), "mac": None if n.mac is None else str(n.mac), "state": n.state,
             "confirmed": n.confirmed, "expires_in": n.expires_in, "queued": n.queued, "tries": n.tries}
            for n in iface.arp.neighbours(now)
        ],
        "routes": [
            {"destination": str(r.destination), "kind": r.kind.value, "src": str(r.src),
             "via": None if r.next_hop is None else str(r.next_hop)}
            for r in iface.routes.entries()
        ],
        "sockets": socket_rows(iface),
    }


def socket_rows(iface: Interface) -> list[dict]:
    """One row per socket, like ``ss -tuan``: UDP, RAW, TCP listeners, TCP connections."""
    rows = []
    for sock in sorted(iface.udp.sockets(), key=lambda s: (s.local[1], int(s.local[0]))):
        rows.append(_row("udp", "ESTAB" if sock.remote is not None else "UNCONN", sock.queued_bytes, 0,
                         sock.local, sock.remote, {"datagrams": sock.queued, "drops": sock.rx_drops}))
    for sock in iface.raw.sockets():
        rows.append(_row("raw", "ESTAB" if sock.remote is not None else "UNCONN", sock.queued_bytes, 0,
                         sock.local, sock.remote, {"protocol": int(sock.protocol), "drops": sock.rx_drops}))
    for lst in sorted(iface.tcp.listeners(), key=lambda i: (i.local[1], int(i.local[0]))):
        rows.append(_listener_row(lst))
    rows.extend(_connection_row(info) for info in iface.tcp.table())
    return rows


def _row(netid: str, state: str, recv_q: int, send_q: int, local, peer, details: dict) -> dict:
    return {"netid": netid, "state": state, "recv_q": recv_q, "send_q": send_q,
            "local": _endpoint(local), "peer": _endpoint(peer), "details": details}


def _listener_row(lst: ListenerInfo) -> dict:
    # As ss shows a listener: Recv-Q the accept queue, Send-Q the backlog.
    return _row("tcp", lst.state.value, lst.pending, lst.backlog, lst.local, None,
                {"syn_queue": lst.embryonic, "max_syn_backlog": lst.max_syn_backlog,
                 **{k: v for k, v in sorted(lst.counters.items()) if v}})


def _connection_row(info: TcpInfo) -> dict:
    return _row("tcp", info.state.value, info.recv_queue, info.send_queue, info.local, info.remote,
                {"cwnd": info.cwnd, "mss": info.snd_mss, "rto": info.rto, "srtt": info.srtt,
                 "snd_wnd": info.snd_wnd, "rcv_wnd": info.rcv_wnd, "retransmits": info.retransmits,
                 "bytes_sent": info.bytes_sent, "bytes_received": info.bytes_received,
                 "segs_in": info.segs_in, "segs_out": info.segs_out, "congestion": info.congestion})
