"""TCP for the MultiOS stack (RFC 9293), sans-IO.

The engine takes segments and ``now`` in and gives segments, timers and
events out; the interface and the socket layer drive it (see docs/tcp.md).

* :class:`TcpConnection` — one connection (``connect``/``from_syn``,
  ``receive_segment``, ``send``/``recv``, ``shutdown_write``/``close``/
  ``abort``, ``poll``/``poll_at``, readiness properties, ``info()``).
* :class:`TcpListener` — LISTEN with a SYN queue and an accept queue.
* :class:`TcpConfig` — per-connection settings (Linux-like defaults).
* :func:`reset_for` — the RST answering a segment that has no connection.
* :mod:`stack.tcp.seq` — sequence arithmetic, RFC 6528 ISNs, RFC 6056 ports.
* :mod:`stack.tcp.congestion` — CUBIC (default) and NewReno.
"""
from stack.tcp.config import TcpConfig
from stack.tcp.congestion import Cubic, NewReno, make_congestion_control
from stack.tcp.connection import TcpConnection, TcpInfo
from stack.tcp.listener import SOMAXCONN, ListenerInfo, TcpListener
from stack.tcp.reset import reset_for
from stack.tcp.seq import (
    EPHEMERAL_PORTS,
    IsnGenerator,
    PortAllocator,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    unwrap,
)
from stack.tcp.state import TcpState

__all__ = [
    "Cubic",
    "EPHEMERAL_PORTS",
    "IsnGenerator",
    "ListenerInfo",
    "NewReno",
    "PortAllocator",
    "SOMAXCONN",
    "TcpConfig",
    "TcpConnection",
    "TcpInfo",
    "TcpListener",
    "TcpState",
    "make_congestion_control",
    "reset_for",
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
    "unwrap",
]
