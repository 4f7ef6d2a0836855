"""TCP for the MultiOS stack (RFC 9293), sans-IO.

The engine takes segments and ``now`` in and gives segments, timers and
events out; the interface and the socket layer drive it (see docs/tcp.md).
"""
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

__all__ = [
    "EPHEMERAL_PORTS",
    "IsnGenerator",
    "PortAllocator",
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
    "unwrap",
]
