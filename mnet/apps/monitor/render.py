"""The monitor's tables as text, from a stack's snapshot (pure: data in, text out).

A snapshot is what :meth:`stack.Stack.snapshot` returns (or the JSON a
running `mnet stack` sends for it): ``render(snapshot, view)`` writes the
views below as ``ip``/``ss`` do, in aligned columns, and ``rates(previous,
current)`` says how fast the NIC's counters moved between two snapshots.

  ip      the interface: MAC, MTU, link, addresses, gateway
  neigh   the ARP cache: address, MAC, state, seconds since confirmed, expiry
  route   the routes the stack follows
  ss      sockets: UDP, RAW, TCP listeners and connections (like ss -tuan)
  rings   the NIC's rings: indexes, in flight, kicks, interrupts, drops
"""
from __future__ import annotations

__all__ = ["VIEWS", "render", "rates", "table"]

VIEWS = ("ip", "neigh", "route", "ss", "rings")


def table(headers: list[str], rows: list[list]) -> list[str]:
    """Aligned columns: numbers right, text left; None is written ``-``."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [any(row[i] is not None for row in rows)
               and all(row[i] is None or isinstance(row[i], (int, float)) for row in rows)
               for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [headers] + cells:
        parts = [(c.rjust(w) if numeric[i] else c.ljust(w)) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return lines


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}s"


def render_ip(snap: dict) -> list[str]:
    iface, nic = snap["interface"], snap.get("nic", {})
    link = "UP" if nic.get("link", True) else f"DOWN ({nic.get('last_error') or 'no back-end'})"
    lines = [f"{nic.get('name', nic.get('driver', 'nic'))}: <{link}> mtu {iface['mtu']} driver {nic.get('driver', '-')}",
             f"    link/ether {iface['mac']}"]
    lines += [f"    inet {a}" for a in iface["addresses"]]
    if iface.get("gateway"):
        lines.append(f"    gateway {iface['gateway']}")
    if nic.get("features"):
        lines.append(f"    features {' '.join(nic['features'])}")
    if nic.get("offloads"):
        lines.append(f"    offloads {' '.join(nic['offloads'])}")
    return lines


def render_neigh(snap: dict) -> list[str]:
    rows = [[n["ip"], n["mac"], n["state"], _seconds(n["confirmed"]), _seconds(n["expires_in"]), n["queued"]]
            for n in snap["neighbours"]]
    return table(["Address", "HWaddress", "State", "Confirmed", "Expires", "Queued"], rows)


def render_route(snap: dict) -> list[str]:
    rows = [[r["destination"], r["kind"], r["via"], r["src"]] for r in snap["routes"]]
    return table(["Destination", "Kind", "Via", "Src"], rows)


def _details(details: dict) -> str:
    return " ".join(f"{k}:{_cell(v) if not isinstance(v, float) else f'{v:.3g}'}" for k, v in details.items())


def render_ss(snap: dict) -> list[str]:
    rows = [[s["netid"], s["state"], s["recv_q"], s["send_q"], s["local"], s["peer"], _details(s["details"])]
            for s in snap["sockets"]]
    lines = table(["Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Details"], rows)
    if snap.get("sockets_left_off"):
        lines.append(f"... and {snap['sockets_left_off']} more sockets not shown")
    return lines


def render_rings(snap: dict, rate: dict | None = None) -> list[str]:
    nic = snap.get("nic", {})
    rings = nic.get("rings", [])
    if not rings:
        state = "link down" if not nic.get("link", True) else "this NIC has no rings"
        lines = [f"no rings: {state} ({nic.get('driver', '-')})"]
        counters = nic.get("counters", {})
        if counters:
            lines.append("counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    else:
        rows = [[r["name"], r["size"], r["avail_idx"], r["used_idx"], r["last_used"], r["in_flight"],
                 r["used_pending"], r["kicks"], r["interrupts"], r["frames"], r["bytes"], r["drops"]] for r in rings]
        lines = table(["Ring", "Size", "Avail", "Used", "Reaped", "InFlight", "Pending", "Kicks", "Interrupts",
                       "Frames", "Bytes", "Drops"], rows)
        for r in rings:
            if r["drop_reasons"]:
                lines.append(f"{r['name']} drops: " + ", ".join(f"{k} {v}" for k, v in sorted(r["drop_reasons"].items())))
    if rate is not None:
        lines.append(format_rates(rate))
    return lines


_RENDER = {"ip": render_ip, "neigh": render_neigh, "route": render_route, "ss": render_ss}


def render(snap: dict, view: str = "all", rate: dict | None = None) -> str:
    """The tables of ``view`` (one of :data:`VIEWS`, or ``all``) as text; ``rate``
    (from :func:`rates`) adds the NIC's frames/s and bytes/s under the rings."""
    if view != "all" and view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: one of all, {', '.join(VIEWS)}")
    views = VIEWS if view == "all" else (view,)
    blocks = []
    for name in views:
        lines = render_rings(snap, rate) if name == "rings" else _RENDER[name](snap)
        blocks.append("\n".join([f"== {name} =="] + lines) if view == "all" else "\n".join(lines))
    return "\n\n".join(blocks)


_RATE_KEYS = ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes")


def rates(previous: dict, current: dict) -> dict | None:
    """Per second, between two snapshots of one stack: the NIC's ``rx_frames``,
    ``rx_bytes``, ``tx_frames``, ``tx_bytes`` (None for a counter the NIC does
    not keep); None if no time passed or the counters went back (a new stack)."""
    elapsed = current["time"] - previous["time"]
    if elapsed <= 0:
        return None
    before, now = previous.get("nic", {}).get("counters", {}), current.get("nic", {}).get("counters", {})
    out: dict = {"seconds": elapsed}
    for key in _RATE_KEYS:
        if key not in now:
            out[key] = None
            continue
        delta = now[key] - before.get(key, 0)
        if delta < 0:
            return None
        out[key] = delta / elapsed
    return out


def _per_second(frames: float | None, nbytes: float | None) -> str:
    f = "-" if frames is None else f"{frames:.0f}"
    return f"{f} frames/s" + ("" if nbytes is None else f" {_si(nbytes)}B/s")


def _si(value: float) -> str:
    for unit in ("", "k", "M", "G"):
        if value < 1000 or unit == "G":
            return f"{value:.0f} " if unit == "" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} G"


def format_rates(rate: dict) -> str:
    """``rates over 1.0 s: rx 120 frames/s 15.2 kB/s, tx ...``"""
    return (f"rates over {rate['seconds']:.1f} s: rx {_per_second(rate['rx_frames'], rate['rx_bytes'])}, "
            f"tx {_per_second(rate['tx_frames'], rate['tx_bytes'])}")
