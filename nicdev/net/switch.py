"""An L2 learning switch joining ports (vhost-user devices, TAPs, sockets, captures).

The switch learns which port each unicast source MAC lives behind, forwards
known unicast to that port only, and floods broadcast, multicast and unknown
unicast to every other port. Learned entries age out after `ageing` seconds
of silence (time from `loop.now()`, so tests can drive the clock). Ports with
`captures_all = True` (the pcap port) get a copy of every frame the switch
forwards or floods.

Everything runs on the event loop's thread: no locks. A frame that is too
short or too long is counted and dropped; a port whose `transmit` raises is
logged and counted, and the switch carries on with the other ports.

Offloads: every port delivers `(frame, meta)` to the switch's one sink,
`meta` a `FrameMeta` (a partial checksum, a GSO frame, DATA_VALID) or None
for a finished frame, and the switch hands `(frame, meta)` on to each
output port. A port that can take the metadata (`accepts_csum_partial`,
`accepts_gso`) gets the frame unchanged; for the others the frame is
finished at that egress (`nicdev.net.egress`: checksum completed, GSO cut
into MTU-sized frames), once however many ports need it, and they get the
finished frames, marked DATA_VALID to ports that take metadata. Capture
ports take none, so they record finished frames. Metadata that cannot be
honoured is a counted drop (`malformed`, and the ingress port's
`rx_dropped`) for the ports that needed it finished; the others still get
the frame. Frames without metadata take the same path as before, with no
extra work.

Bursts: a port that hands over several frames at once (`deliver_burst`)
reaches `_on_burst`, which decides exactly as the per-frame path but learns
a run of frames from one source once and looks a run of frames to one
destination up once, collects what each output port gets (in arrival
order), and then sends port by port: one `transmit_burst` call for a port
that `takes_bursts`, `transmit` per frame for the others. Counters come out
the same as if the frames had come one by one.

Between two vhost-user ports a burst need not become Python frames at all:
the ingress port hands over `PooledFrames` (finished frames still in its C
pool) and `_on_pooled_burst` learns and looks up once per run of frames with
one address pair, with no Python per frame; a vhost-user port a run goes to
copies it from the pool into its guest's buffers in C (`transmit_pooled`),
any other port (a TAP, a socket, a capture) gets the run as frames in one
`transmit_burst`. Only a burst whose learning could change its own lookups
takes `_on_burst`.

Tracing (docs/tracing.md): each port has a `tracer`. `set_tracing(port,
on)` adds or removes the switch's bounded `trace_buffer` (what a live
viewer reads) on one port or all of them, at run time; `add_trace_sink`
puts a sink (the `--trace FILE` writer) on every port, present and future.
The drops the switch itself makes (malformed frames, a link down, a port's
transmit raising, unusable offload metadata) are `drop` records of the
port concerned, with `stage` "switch", `queue` and `dir` null.
"""
from __future__ import annotations

import logging
import types
from dataclasses import dataclass, fields
from typing import Mapping

from nicdev.virtio.impairment import Impairment
from nicdev.virtio.offload import FrameMeta
from nicdev.virtio.trace import TraceBuffer

from .egress import EgressFrame
from .errors import PortError
from .impair import ImpairedPort
from .ethernet import MAX_FRAME_LEN, MIN_FRAME_LEN, mac_str
from .port import Burst, Port

log = logging.getLogger(__name__)

__all__ = ["Switch", "SwitchCounters", "DEFAULT_MAX_MACS"]

# A guest spraying random source MACs must not grow the table without bound;
# once full, new addresses are flooded to (still correct, just slower).
DEFAULT_MAX_MACS = 4096
# How often the ageing sweep runs at most; lookups also check an entry's age,
# so a late sweep never forwards to a stale port.
_MAX_SWEEP_INTERVAL = 30.0
_ZERO_MAC = bytes(6)


@dataclass
class SwitchCounters:
    forwarded: int = 0      # frames sent to exactly one learned port
    flooded: int = 0        # frames sent to all ports but the ingress port
    filtered: int = 0       # frames whose destination lives behind the ingress port
    malformed: int = 0      # runts (< 14 bytes) and oversized frames, dropped
    learned: int = 0        # new MAC table entries
    moved: int = 0          # a known MAC seen on another port (re-learned there)
    aged: int = 0           # entries forgotten after `ageing` seconds of silence
    table_full: int = 0     # source MACs not learned because the table was full
    segmented: int = 0      # GSO frames cut into segments for ports that cannot take them
    segments: int = 0       # frames those made
    csum_completed: int = 0  # partial checksums finished for ports that cannot take them

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Entry:
    __slots__ = ("port", "seen")

    def __init__(self, port: Port, seen: float) -> None:
        self.port = port
        self.seen = seen


class Switch:
    """An L2 learning bridge over `Port`s, driven by an `EventLoop`."""

    def __init__(self, loop, *, ageing: float = 300.0, max_macs: int = DEFAULT_MAX_MACS) -> None:
        if not ageing > 0:
            raise ValueError(f"ageing must be a positive number of seconds, not {ageing!r}")
        if max_macs < 1:
            raise ValueError(f"max_macs must be at least 1, not {max_macs!r}")
        self.loop = loop
        self.ageing = float(ageing)
        self.max_macs = max_macs
        self.counters = SwitchCounters()
        self._ports: dict[str, Port] = {}
        self._port_tuple: tuple[Port, ...] = ()      # snapshot for flooding
        self._captures: tuple[Port, ...] = ()
        self._table: dict[bytes, _Entry] = {}
        self._failing: set[str] = set()              # ports whose transmit raised (logged once)
        self._sweep_interval = min(self.ageing / 4, _MAX_SWEEP_INTERVAL)
        self._sweep_timer = loop.call_later(self._sweep_interval, self._sweep)
        self._closed = False
        self.trace_buffer = TraceBuffer()
        self._trace_sinks: list = []                 # on every port (add_trace_sink)
        self._frame_sinks: list = []                 # on every port's frames (add_frame_sink)
        self._buffered: set[str] = set()             # ports whose tracer feeds trace_buffer
        self._buffer_new_ports = False               # set_tracing(None, True): ports added later too

    # -- ports --------------------------------------------------------------
    @property
    def ports(self) -> Mapping[str, Port]:
        """The ports by name (read-only view)."""
        return types.MappingProxyType(self._ports)

    def add_port(self, port: Port) -> Port:
        """Attach `port` and start it on the loop. Raises PortError if the name is taken.

        If `port.start()` raises, the port is closed, left off the switch, and
        the exception propagates.
        """
        if self._closed:
            raise PortError("the switch is closed")
        if port.name in self._ports:
            raise PortError(f"a port named {port.name!r} is already on the switch")
        self._ports[port.name] = port
        self._refresh()
        for sink in self._trace_sinks:
            port.tracer.add_sink(sink)
        for frame_sink in self._frame_sinks:
            port.tracer.add_frame_sink(frame_sink)
        if self._buffer_new_ports:
            self._buffer(port, True)
        port.attach(self._on_frame, burst_sink=self._on_burst)
        if port.takes_pooled_bursts:
            port.attach_pooled(self._on_pooled_burst)
        try:
            port.start(self.loop)
        except BaseException:
            self._detach(port)
            try:
                port.close()
            except Exception:
                log.exception("closing port %s after its failed start", port.name)
            raise
        return port

    def remove_port(self, name: str) -> Port:
        """Detach and close the port called `name`, forgetting the MACs behind it."""
        port = self._ports.get(name)
        if port is None:
            raise PortError(f"no port named {name!r} on the switch")
        self._detach(port)
        try:
            port.close()
        except Exception:
            log.exception("closing port %s", name)
        return port

    def set_impairments(self, name: str, out: Impairment | None, in_: Impairment | None) -> Port:
        """Impair the port called `name` from now on (`out`: frames to its
        peer, `in_`: from it; None leaves that direction alone). A port
        without impairments is wrapped in an `ImpairedPort` in place (its
        learned MACs stay); clearing both keeps the wrapper, unimpaired.
        Returns the port as the switch now holds it."""
        port = self._ports.get(name)
        if port is None:
            raise PortError(f"no port named {name!r} on the switch")
        if isinstance(port, ImpairedPort):
            port.set_impairments(out, in_)
            return port
        if out is None and in_ is None:
            return port
        if getattr(port, "captures_all", False):
            raise PortError(f"port {name!r} is a capture, not a link: it takes no impairments")
        wrapper = ImpairedPort(port, out=out, in_=in_)
        wrapper.adopt(self.loop)
        if port.takes_pooled_bursts:
            port.attach_pooled(None)        # every frame must meet the impairments
        wrapper.attach(self._on_frame)
        self._ports[name] = wrapper
        for entry in self._table.values():
            if entry.port is port:
                entry.port = wrapper
        self._refresh()
        return wrapper

    def _detach(self, port: Port) -> None:
        self._ports.pop(port.name, None)
        self._failing.discard(port.name)
        self._buffer(port, False)
        for sink in self._trace_sinks:
            port.tracer.remove_sink(sink)
        for frame_sink in self._frame_sinks:
            port.tracer.remove_frame_sink(frame_sink)
        port.attach(None)
        for mac in [m for m, e in self._table.items() if e.port is port]:
            del self._table[mac]
        self._refresh()

    def _refresh(self) -> None:
        self._port_tuple = tuple(self._ports.values())
        self._captures = tuple(p for p in self._port_tuple if getattr(p, "captures_all", False))

    def close(self) -> None:
        """Close every port and stop ageing. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._sweep_timer.cancel()
        for name in list(self._ports):
            self.remove_port(name)
        self._table.clear()

    # -- tracing ------------------------------------------------------------
    def set_tracing(self, port: str | None, on: bool) -> list[str]:
        """Start (`on`) or stop recording `port`'s ring events (None: every
        port, and with `on` the ports added later) into `trace_buffer`.
        Returns the ports changed; raises PortError for an unknown port."""
        if port is None:
            self._buffer_new_ports = on
            targets = list(self._port_tuple)
        else:
            found = self._ports.get(port)
            if found is None:
                raise PortError(f"no port named {port!r} on the switch")
            targets = [found]
        return [p.name for p in targets if self._buffer(p, on)]

    def _buffer(self, port: Port, on: bool) -> bool:
        tracer = port.tracer
        if on == (port.name in self._buffered):
            return False
        if on:
            self._buffered.add(port.name)
            tracer.add_sink(self.trace_buffer)
            tracer.emit("trace", None, None, state="start")
        else:
            tracer.emit("trace", None, None, state="stop")
            self._buffered.discard(port.name)
            tracer.remove_sink(self.trace_buffer)
        return True

    def add_trace_sink(self, sink) -> None:
        """Give every port's ring records, from now on and for ports added
        later, to `sink(record)` too (a `JsonLinesWriter`, a test's list)."""
        self._trace_sinks.append(sink)
        for port in self._port_tuple:
            port.tracer.add_sink(sink)

    def remove_trace_sink(self, sink) -> None:
        self._trace_sinks.remove(sink)
        for port in self._port_tuple:
            port.tracer.remove_sink(sink)

    def add_frame_sink(self, sink) -> None:
        """Give every port's ring frames, from now on and for ports added
        later, to `sink(port, t, queue, direction, head, data)` too (a
        `PcapngWriter`)."""
        self._frame_sinks.append(sink)
        for port in self._port_tuple:
            port.tracer.add_frame_sink(sink)

    def remove_frame_sink(self, sink) -> None:
        self._frame_sinks.remove(sink)
        for port in self._port_tuple:
            port.tracer.remove_frame_sink(sink)

    @staticmethod
    def _trace_drop(port: Port, reason: str, length: int | None = None, frames: int = 1) -> None:
        tracer = port.tracer
        if tracer.on:
            for _ in range(frames):
                tracer.emit("drop", None, None, reason=reason, len=length, stage="switch")

    # -- the data path ------------------------------------------------------
    def _on_frame(self, ingress: Port, frame: bytes, meta: FrameMeta | None) -> None:
        """The one sink every port delivers its received frames to, with their
        offload metadata (None for a finished frame)."""
        if type(frame) is not bytes:
            frame = bytes(frame)
        n = len(frame)
        if n < MIN_FRAME_LEN or n > MAX_FRAME_LEN:
            self.counters.malformed += 1
            ingress.counters.rx_dropped += 1
            ingress.counters.count_error("runt frame" if n < MIN_FRAME_LEN else "oversized frame")
            self._trace_drop(ingress, "runt frame" if n < MIN_FRAME_LEN else "oversized frame", n)
            return
        now = self.loop.now()
        src = frame[6:12]
        if not src[0] & 1 and src != b"\x00\x00\x00\x00\x00\x00":
            self._learn(src, ingress, now)
        dst = frame[0:6]
        if not dst[0] & 1:
            entry = self._table.get(dst)
            if entry is not None and now - entry.seen <= self.ageing:
                out = entry.port
                if out is ingress:
                    # The destination is on the segment the frame came from.
                    self.counters.filtered += 1
                    return
                self.counters.forwarded += 1
                if meta is None:
                    self._send(out, frame, None)
                    for cap in self._captures:
                        if cap is not out and cap is not ingress:
                            self._send(cap, frame, None)
                    return
                egress = EgressFrame(frame, meta)
                self._send_egress(out, egress)
                for cap in self._captures:
                    if cap is not out and cap is not ingress:
                        self._send_egress(cap, egress)
                self._count_finishing(ingress, egress)
                return
        self.counters.flooded += 1
        if meta is None:
            for out in self._port_tuple:
                if out is not ingress:
                    self._send(out, frame, None)
            return
        egress = EgressFrame(frame, meta)
        for out in self._port_tuple:
            if out is not ingress:
                self._send_egress(out, egress)
        self._count_finishing(ingress, egress)

    def _on_burst(self, ingress: Port, items: Burst) -> None:
        """The burst sink: `items` is a list of `(frame, meta)` from `ingress`,
        switched as `_on_frame` would switch them one by one (see the module doc)."""
        counters = self.counters
        now = self.loop.now()
        outs: dict[Port, list] = {}            # output port -> frames (bytes) or EgressFrames, in order
        egresses: list[EgressFrame] = []
        last_src = last_dst = None
        lists: list[list] = []                 # the output lists of the current decision
        flooding = False
        flood_targets = None
        forwarded = flooded = filtered = 0
        for frame, meta in items:
            if type(frame) is not bytes:
                frame = bytes(frame)
            n = len(frame)
            if n < MIN_FRAME_LEN or n > MAX_FRAME_LEN:
                counters.malformed += 1
                ingress.counters.rx_dropped += 1
                ingress.counters.count_error("runt frame" if n < MIN_FRAME_LEN else "oversized frame")
                self._trace_drop(ingress, "runt frame" if n < MIN_FRAME_LEN else "oversized frame", n)
                continue
            src = frame[6:12]
            if src != last_src:
                # Learning moves a MAC to `ingress`: a cached lookup may be stale.
                last_dst = None
                if src[0] & 1 or src == _ZERO_MAC or self._learn(src, ingress, now):
                    last_src = src
                else:
                    last_src = None            # not learned (table full): try again, and count, next frame
            dst = frame[0:6]
            if dst != last_dst:
                last_dst = dst
                out = self._lookup(dst, now)
                flooding = out is None
                if flooding:
                    if flood_targets is None:
                        flood_targets = [p for p in self._port_tuple if p is not ingress]
                    targets = flood_targets
                elif out is ingress:
                    targets = None
                else:
                    targets = [out] + [c for c in self._captures if c is not out and c is not ingress]
                lists = None if targets is None else [outs.setdefault(p, []) for p in targets]
            if lists is None:
                filtered += 1
                continue
            if flooding:
                flooded += 1
            else:
                forwarded += 1
            if meta is not None:
                frame = EgressFrame(frame, meta)
                egresses.append(frame)
            for got in lists:
                got.append(frame)
        counters.forwarded += forwarded
        counters.flooded += flooded
        counters.filtered += filtered
        for out, got in outs.items():
            if got:
                self._send_burst(out, got)
        for egress in egresses:
            self._count_finishing(ingress, egress)

    def _on_pooled_burst(self, ingress: Port, frames) -> None:
        """A burst of finished frames still in a vhost-user port's C pool
        (`PooledFrames`): learned and looked up once per run of one address
        pair, each run sent to its ports as it is: still in C to a port that
        takes pooled bursts (copied once into the other guest's buffers),
        one `transmit_burst` (or `transmit` per frame) to any other. Only a
        run whose destination is a source of this same burst (learning in
        the middle of it could change its way) makes the whole burst take
        `_on_burst`. Either way the counters are `_on_burst`'s."""
        now = self.loop.now()
        runs = frames.mac_runs()
        sources = {src for _, _, _, src in runs}
        if any(dst in sources for _, _, dst, _ in runs):
            self._on_burst(ingress, frames.items())
            return
        counters = self.counters
        plan = []
        flood_targets = None
        for first, count, dst, _ in runs:
            out = self._lookup(dst, now)
            if out is None:
                if flood_targets is None:
                    flood_targets = [p for p in self._port_tuple if p is not ingress]
                counters.flooded += count
                plan.append((first, count, flood_targets))
            elif out is ingress:
                counters.filtered += count
            else:
                counters.forwarded += count
                plan.append((first, count, [out] + [c for c in self._captures if c is not out and c is not ingress]))
        for _, count, _, src in runs:
            if not (src[0] & 1 or src == _ZERO_MAC) and not self._learn(src, ingress, now):
                counters.table_full += count - 1        # _on_burst tries again for each frame
        for first, count, targets in plan:
            items = None
            for out in targets:
                if out.takes_pooled_bursts:
                    if not out.link_up:
                        out.count_link_down(count, rx=False)
                        self._trace_drop(out, "link_down", frames=count)
                        continue
                    try:
                        out.transmit_pooled(frames, first, count)
                    except Exception as exc:
                        self._transmit_failed(out, exc, count)
                    continue
                if items is None:
                    items = frames.items(first, count)
                self._send_items(out, items)

    def _send_items(self, port: Port, items: list) -> None:
        """Finished `(frame, None)` pairs out of `port`: one burst call if it takes them."""
        if not port.takes_bursts:
            for frame, meta in items:
                self._send(port, frame, meta)
            return
        if not port.link_up:
            port.count_link_down(len(items), rx=False)
            for frame, _ in items:
                self._trace_drop(port, "link_down", len(frame))
            return
        try:
            port.transmit_burst(items)
        except Exception as exc:
            self._transmit_failed(port, exc, len(items))

    def _lookup(self, dst: bytes, now: float) -> Port | None:
        """The port a unicast `dst` was learned on (and not aged), else None: flood."""
        if dst[0] & 1:
            return None
        entry = self._table.get(dst)
        if entry is not None and now - entry.seen <= self.ageing:
            return entry.port
        return None

    def _send_burst(self, port: Port, got: list) -> None:
        """What one output port gets of a burst: frames as they are, frames with
        metadata as the port can take them (finished once per frame, shared)."""
        frames: list = []
        csum = gso = None
        for item in got:
            if type(item) is bytes:
                frames.append((item, None))
            else:
                if csum is None:
                    csum, gso = port.accepts_csum_partial, port.accepts_gso
                frames.extend(item.for_egress(csum, gso))
        self._send_items(port, frames)

    def _send_egress(self, port: Port, egress: EgressFrame) -> None:
        """A frame with metadata out of `port`: as it is if the port takes it,
        else finished (done once per frame, then reused for the next port)."""
        for frame, meta in egress.for_egress(port.accepts_csum_partial, port.accepts_gso):
            self._send(port, frame, meta)

    def _count_finishing(self, ingress: Port, egress: EgressFrame) -> None:
        if egress.error is not None:
            # Ports check metadata on the way in, so this is a port's bug.
            log.warning("port %s: frame with unusable offload metadata dropped: %s", ingress.name, egress.error)
            self.counters.malformed += 1
            ingress.counters.rx_dropped += 1
            ingress.counters.count_error(egress.error.reason)
            self._trace_drop(ingress, egress.error.reason, len(egress.frame))
        elif egress.finished is not None:
            if egress.meta.gso_type:
                self.counters.segmented += 1
                self.counters.segments += len(egress.finished)
            else:
                self.counters.csum_completed += 1

    def _learn(self, src: bytes, port: Port, now: float) -> bool:
        """Learn (or refresh) `src` behind `port`; False if the table was full."""
        entry = self._table.get(src)
        if entry is None:
            if len(self._table) >= self.max_macs:
                self.counters.table_full += 1
                return False
            self._table[src] = _Entry(port, now)
            self.counters.learned += 1
            return True
        if entry.port is not port:
            self.counters.moved += 1
            entry.port = port
        entry.seen = now
        return True

    def _send(self, port: Port, frame: bytes, meta: FrameMeta | None) -> None:
        if not port.link_up:
            port.count_link_down(1, rx=False)
            self._trace_drop(port, "link_down", len(frame))
            return
        try:
            port.transmit(frame, meta)
        except Exception as exc:
            self._transmit_failed(port, exc)

    def _transmit_failed(self, port: Port, exc: Exception, frames: int = 1) -> None:
        # Called from the except clause, so log.exception still has the traceback.
        port.counters.tx_dropped += frames
        port.counters.count_error(f"transmit raised {type(exc).__name__}")
        self._trace_drop(port, f"transmit raised {type(exc).__name__}", frames=frames)
        if port.name not in self._failing:
            self._failing.add(port.name)
            log.exception("port %s: transmit failed (further failures logged at debug level)", port.name)
        else:
            log.debug("port %s: transmit failed: %r", port.name, exc)

    # -- ageing -------------------------------------------------------------
    def _sweep(self) -> None:
        if self._closed:
            return
        self.expire()
        self._sweep_timer = self.loop.call_later(self._sweep_interval, self._sweep)

    def expire(self) -> int:
        """Forget entries older than `ageing`; returns how many went. The sweep timer calls this."""
        now = self.loop.now()
        stale = [mac for mac, e in self._table.items() if now - e.seen > self.ageing]
        for mac in stale:
            del self._table[mac]
        self.counters.aged += len(stale)
        return len(stale)

    # -- reporting ----------------------------------------------------------
    def mac_table(self) -> list[dict]:
        """The learned addresses: [{"mac": "aa:bb:..", "port": name, "age": seconds}], by port then MAC."""
        now = self.loop.now()
        rows = [{"mac": mac_str(mac), "port": e.port.name, "age": round(now - e.seen, 3)}
                for mac, e in self._table.items() if now - e.seen <= self.ageing]
        rows.sort(key=lambda r: (r["port"], r["mac"]))
        return rows

    def stats(self) -> dict:
        """Switch and per-port counters as plain data (for JSON output and tests)."""
        return {
            "switch": {**self.counters.as_dict(), "mac_entries": len(self._table)},
            "ports": {
                p.name: {"kind": p.kind, "status": p.status, "link_up": p.link_up, **p.counters.as_dict()}
                for p in self._port_tuple
            },
        }

    def summary(self) -> str:
        """A readable table: one line per port, then the switch's own counters."""
        header = ("port", "kind", "status", "rx frames", "rx bytes", "tx frames", "tx bytes", "drops", "errors")
        rows = [header]
        for p in self._port_tuple:
            c = p.counters
            rows.append((p.name, p.kind, p.status, str(c.rx_frames), str(c.rx_bytes), str(c.tx_frames),
                         str(c.tx_bytes), str(c.rx_dropped + c.tx_dropped), str(sum(c.errors.values()))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = []
        for r in rows:
            # Text columns left-aligned, numbers right-aligned.
            cells = [r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i]) for i in range(len(header))]
            lines.append("  ".join(cells).rstrip())
        if len(rows) == 1:
            lines.append("(no ports)")
        errors = [f"{p.name}: " + ", ".join(f"{k} x{v}" for k, v in sorted(p.counters.errors.items()))
                  for p in self._port_tuple if p.counters.errors]
        lines.extend("  errors " + e for e in errors)
        sc = self.counters
        lines.append(f"switch: forwarded {sc.forwarded}, flooded {sc.flooded}, filtered {sc.filtered}, "
                     f"malformed {sc.malformed}, learned {sc.learned}, moved {sc.moved}, aged {sc.aged}, "
                     f"table full {sc.table_full}; {len(self._table)} MAC entries")
        if sc.segmented or sc.csum_completed:
            lines.append(f"offloads done here: {sc.segmented} GSO frames cut into {sc.segments}, "
                         f"{sc.csum_completed} checksums completed")
        return "\n".join(lines)
