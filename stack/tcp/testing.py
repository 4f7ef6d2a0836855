"""Test doubles for one TCP connection driven by hand on a virtual clock.

:class:`SegmentDriver` feeds hand-made peer segments into a
:class:`TcpConnection` and reads what comes out as short strings. Two
endpoints on a simulated, impaired link are ``stack.testing.tcp_link``.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.wire.tcp import TcpFlags, TcpRepr

__all__ = ["SegmentDriver", "flag_string", "CLIENT", "SERVER"]

CLIENT = (IPv4Address("10.0.0.1"), 40000)
SERVER = (IPv4Address("10.0.0.2"), 80)


# -- driving one connection by hand ------------------------------------------------------

_FLAG_LETTERS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), (".", 0x10), ("U", 0x20))


def flag_string(flags: int) -> str:
    """tcpdump's letters: ``S.`` is SYN+ACK, ``P.`` PSH+ACK, ``F.`` FIN+ACK, ``.`` a bare ACK."""
    return "".join(letter for letter, bit in _FLAG_LETTERS if int(flags) & bit)


def _parse_flags(text: str) -> int:
    bits = dict(_FLAG_LETTERS)
    value = 0
    for ch in text:
        value |= bits[ch]
    return value


class SegmentDriver:
    """Feed hand-made segments from the peer into one connection; read what comes out.

    Sequence numbers in and out are *relative*: ours to ``conn.iss``, the
    peer's to ``peer_iss`` (like tcpdump's relative numbers). :meth:`out`
    gives each emitted segment as a short string, e.g.
    ``"[P.] seq=1 ack=1 win=65535 len=100"``, with options appended, so a
    test can assert the exact segments that came out.
    """

    def __init__(self, conn: TcpConnection, peer_iss: int = 5000, now: float = 0.0) -> None:
        self.conn = conn
        self.peer_iss = peer_iss
        self.now = now
        self.peer_ts = 1000  # the peer's TSval clock, advanced by tests as they like

    # -- building peer segments -------------------------------------------------------
    def segment(
        self,
        flags: str,
        seq: int = 1,
        ack: int | None = None,
        window: int = 65535,
        **options,
    ) -> TcpRepr:
        """A segment from the peer: ``seq`` relative to the peer's ISN, ``ack`` to ours."""
        conn = self.conn
        wire_ack = 0 if ack is None else (conn.iss + ack) & 0xFFFFFFFF
        r = TcpRepr(
            conn.remote[1], conn.local[1], (self.peer_iss + seq) & 0xFFFFFFFF, wire_ack, TcpFlags(_parse_flags(flags)), window
        )
        ts = options.pop("ts", "auto")
        if ts == "auto":
            r.timestamps = (self.peer_ts, conn._ts_clock(self.now)) if conn.ts_ok else None
        else:
            r.timestamps = ts
        sack = options.pop("sack", ())
        r.sack_blocks = tuple(((conn.iss + a) & 0xFFFFFFFF, (conn.iss + b) & 0xFFFFFFFF) for a, b in sack)
        for name, value in options.items():
            setattr(r, name, value)
        return r

    def feed(self, flags: str, seq: int = 1, ack: int | None = None, data: bytes = b"", window: int = 65535, **options) -> None:
        """Deliver one peer segment now."""
        self.conn.receive_segment(self.segment(flags, seq, ack, window, **options), data, self.now)

    # -- reading our segments ---------------------------------------------------------
    def brief(self, seg: TcpRepr, payload: bytes) -> str:
        conn = self.conn
        parts = [f"[{flag_string(seg.flags)}]", f"seq={(seg.seq - conn.iss) & 0xFFFFFFFF}"]
        if seg.flags & 0x10:
            parts.append(f"ack={(seg.ack - self.peer_iss) & 0xFFFFFFFF}")
        elif seg.ack:
            parts.append(f"rawack={seg.ack}")
        parts.append(f"win={seg.window}")
        parts.append(f"len={len(payload)}")
        if seg.urgent or seg.flags & 0x20:
            parts.append(f"urg={seg.urgent}")
        if seg.mss is not None:
            parts.append(f"mss={seg.mss}")
        if seg.window_scale is not None:
            parts.append(f"ws={seg.window_scale}")
        if seg.sack_permitted:
            parts.append("sackok")
        if seg.timestamps is not None:
            parts.append(f"ts={seg.timestamps[0]},{seg.timestamps[1]}")
        if seg.sack_blocks:
            blocks = ",".join(
                f"{(a - self.peer_iss) & 0xFFFFFFFF}-{(b - self.peer_iss) & 0xFFFFFFFF}" for a, b in seg.sack_blocks
            )
            parts.append(f"sack={blocks}")
        return " ".join(parts)

    def poll(self) -> list[tuple[TcpRepr, bytes]]:
        """Run the connection's poll now and return its raw segments."""
        return self.conn.poll(self.now)

    def out(self) -> list[str]:
        """Poll now; every segment that came out, as :meth:`brief` strings."""
        return [self.brief(s, p) for s, p in self.conn.poll(self.now)]

    def advance(self, dt: float) -> list[tuple[float, str]]:
        """Move the clock by ``dt``, polling at every timer; ``[(time, brief)]`` emitted."""
        end = self.now + dt
        got: list[tuple[float, str]] = []
        for _ in range(100000):
            at = self.conn.poll_at()
            if at is None or at > end:
                break
            self.now = max(self.now, at)
            got += [(round(self.now, 9), self.brief(s, p)) for s, p in self.conn.poll(self.now)]
        else:
            raise AssertionError("the connection keeps asking to be polled")
        self.now = end
        return got


ISS = 1000  # our ISN in hand-driven tests
PEER_ISS = 5000


def plain_config(**changes) -> TcpConfig:
    """No options beyond MSS and small buffers: segments short enough to read in a test."""
    base = dict(timestamps=False, sack=False, window_scaling=False, rcvbuf=65535, sndbuf=65535)
    base.update(changes)
    return TcpConfig(**base)


def active_driver(config: TcpConfig | None = None, iss: int = ISS, peer_iss: int = PEER_ISS) -> SegmentDriver:
    """A connection in SYN-SENT (its SYN not yet polled out)."""
    conn = TcpConnection.connect(CLIENT, SERVER, iss, 0.0, config or plain_config())
    return SegmentDriver(conn, peer_iss)


def established_driver(
    config: TcpConfig | None = None, peer_window: int = 65535, peer_mss: int = 1460, rtt: float = 0.01, **peer_options
) -> SegmentDriver:
    """A connection that completed an active open; the peer offered what ``config`` asks for.

    ``peer_options`` override the SYN-ACK's options (``window_scale``,
    ``sack_permitted``, ``ts``). The handshake's own segments are consumed.
    """
    d = active_driver(config)
    cfg = d.conn.config
    d.out()
    d.now = rtt
    opts = dict(
        mss=peer_mss,
        window_scale=7 if cfg.window_scaling else None,
        sack_permitted=cfg.sack,
        ts=(d.peer_ts, d.conn._ts_clock(0.0)) if cfg.timestamps else None,
    )
    opts.update(peer_options)
    d.feed("S.", seq=0, ack=1, window=peer_window, **opts)
    d.out()
    return d
