"""Per-connection settings, with Linux-like defaults.

One :class:`TcpConfig` is shared (read-only) by many connections; the
socket layer makes a copy with :func:`dataclasses.replace` for per-socket
options (TCP_NODELAY, buffer sizes, keepalive, congestion control).
"""
from __future__ import annotations

from dataclasses import dataclass

from stack.tcp.congestion import ALGORITHMS

__all__ = ["TcpConfig", "IPV4_TCP_HEADERS", "DEFAULT_SEND_MSS", "TSO_MAX_PAYLOAD"]

IPV4_TCP_HEADERS = 40  # IPv4 + TCP headers without options
DEFAULT_SEND_MSS = 536  # RFC 9293 MUST-15: assumed when the peer sends no MSS option
# The largest TSO payload: an IPv4 datagram is at most 65535 bytes, less a
# 20-byte IP header and a TCP header with the most options (60 bytes).
TSO_MAX_PAYLOAD = 65535 - 20 - 60


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Knobs of one connection. Times are in seconds, sizes in bytes."""

    mtu: int = 1500  # of the interface; our MSS option is mtu - 40 (MUST-67)
    rcvbuf: int = 262144  # receive buffer: bounds the advertised window
    sndbuf: int = 262144  # send buffer: bounds unacknowledged + unsent data
    window_scaling: bool = True  # RFC 7323
    timestamps: bool = True  # RFC 7323 (RTTM and PAWS)
    sack: bool = True  # RFC 2018
    nodelay: bool = False  # TCP_NODELAY: no Nagle
    congestion: str = "cubic"  # or "newreno"
    initial_window: int = 10  # segments (RFC 6928)
    initial_rto: float = 1.0  # RFC 6298
    min_rto: float = 0.2  # Linux's TCP_RTO_MIN
    max_rto: float = 120.0  # Linux's TCP_RTO_MAX
    max_retries: int = 15  # RTO expiries in a row before ETIMEDOUT (tcp_retries2)
    syn_retries: int = 6  # SYN retransmissions before ETIMEDOUT (tcp_syn_retries)
    synack_retries: int = 5  # SYN-ACK retransmissions (tcp_synack_retries)
    delayed_ack: float = 0.04  # Linux's TCP_DELACK_MIN; must stay below 0.5 (MUST-40)
    time_wait: float = 60.0  # 2*MSL (Linux: TCP_TIMEWAIT_LEN)
    fin_wait2_timeout: float = 60.0  # orphaned FIN-WAIT-2 (tcp_fin_timeout)
    keepalive: bool = False  # SO_KEEPALIVE; off by default (MUST-25)
    keepalive_idle: float = 7200.0  # TCP_KEEPIDLE (MUST-28: at least two hours)
    keepalive_interval: float = 75.0  # TCP_KEEPINTVL
    keepalive_count: int = 9  # TCP_KEEPCNT
    max_ooo_bytes: int | None = None  # out-of-order bound; None: the receive buffer
    max_ooo_blocks: int = 256
    challenge_ack_burst: int = 10  # RFC 5961 challenge ACKs: burst, then per second
    challenge_ack_rate: float = 10.0
    oow_ack_interval: float = 0.5  # at most one dupACK per this for out-of-window pure ACKs
    dupthresh: int = 3
    tail_loss_probe: bool = True  # RFC 8985 TLP (with SACK only)
    ttl: int = 64  # MUST-49: the IP layer uses it for our segments
    # MUST-48: the DSCP for our segments' IP headers (IP_TOS without the ECN
    # bits, which belong to TCP: we do not do ECN, so they stay 0).
    tos: int = 0
    # TSO: largest segment (payload bytes) handed to the NIC, cut there into
    # MSS-sized segments; 0 = off (one segment per MSS). The interface sets it
    # only when the NIC segments TCP (NicOffloads.TSO with TX_CSUM).
    tso_max: int = 0

    def __post_init__(self) -> None:
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"MTU must be 68..65535, got {self.mtu}")
        if self.rcvbuf < 1 or self.sndbuf < 1:
            raise ValueError("buffer sizes must be positive")
        if not 0 < self.delayed_ack < 0.5:
            raise ValueError("the delayed ACK timeout must be below 0.5 s (RFC 9293 MUST-40)")
        if self.congestion.lower() not in ALGORITHMS:
            raise ValueError(f"unknown congestion control {self.congestion!r}")
        if self.keepalive_idle <= 0 or self.keepalive_interval <= 0 or self.keepalive_count < 1:
            raise ValueError("keepalive idle/interval must be > 0 and count >= 1")
        if self.max_retries < 1 or self.syn_retries < 0 or self.synack_retries < 0:
            raise ValueError("retry limits must not be negative")
        if self.time_wait < 0 or self.fin_wait2_timeout <= 0:
            raise ValueError("bad TIME-WAIT / FIN-WAIT-2 timeout")
        if self.dupthresh < 1:
            raise ValueError("dupthresh must be >= 1")
        if not 0 <= self.tos <= 255 or self.tos & 0x03:
            raise ValueError(f"tos must be 0..255 with the two ECN bits clear, got {self.tos}")
        if not 0 <= self.tso_max <= TSO_MAX_PAYLOAD:
            raise ValueError(f"tso_max must be 0 (off) .. {TSO_MAX_PAYLOAD}, got {self.tso_max}")

    @property
    def mss(self) -> int:
        """The MSS we announce: what fits our MTU (RFC 9293 3.7.1, MUST-67)."""
        return self.mtu - IPV4_TCP_HEADERS

    @property
    def window_shift(self) -> int:
        """The window scale we offer: the smallest that covers ``rcvbuf``."""
        if not self.window_scaling:
            return 0
        shift = 0
        while (65535 << shift) < self.rcvbuf and shift < 14:
            shift += 1
        return shift

    @property
    def ooo_bytes(self) -> int:
        return self.rcvbuf if self.max_ooo_bytes is None else self.max_ooo_bytes
