"""The knobs both ends of a transfer share, with their defaults."""
from __future__ import annotations

from dataclasses import dataclass

from .wire import MAX_CHUNK, MAX_WINDOW

DEFAULT_CHUNK = 1400     # fits one datagram below a 1500-byte MTU with room to spare (MAX_CHUNK is 1456)
DEFAULT_WINDOW = 256     # chunks in flight: 358 KB, a few round trips of the stack's NIC ring


@dataclass(frozen=True)
class TransferConfig:
    """Chunk size and window (chunks), RFC 6298's timer bounds (seconds), and how long
    each end waits without progress before giving up (``give_up``) or, once done,
    for a repeated FIN (``linger``)."""

    chunk_size: int = DEFAULT_CHUNK
    window: int = DEFAULT_WINDOW
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 10.0
    give_up: float = 30.0
    linger: float = 3.0
    # A chunk is lost once this many chunks sent after it were acknowledged
    # (reordering by fewer is tolerated), like TCP's duplicate-ACK threshold.
    reorder_threshold: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK} bytes, not {self.chunk_size}")
        if not 0 < self.window <= MAX_WINDOW:
            raise ValueError(f"window must be 1..{MAX_WINDOW} chunks, not {self.window}")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if not self.give_up > 0 or self.linger < 0:
            raise ValueError("give_up must be > 0 seconds and linger >= 0")
        if self.reorder_threshold < 1:
            raise ValueError("reorder_threshold must be >= 1")
