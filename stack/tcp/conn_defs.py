"""Names shared by the modules of :class:`~stack.tcp.connection.TcpConnection`.

Type aliases, state and flag shorthands and a few constants; module-level
names so the hot path reads them as plain globals.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from stack.tcp.state import TcpState
from stack.wire.tcp import TcpFlags, TcpRepr

Endpoint = tuple[IPv4Address, int]
Segment = tuple[TcpRepr, bytes]

S = TcpState
CLOSED, SYN_SENT, SYN_RECEIVED, ESTABLISHED = S.CLOSED, S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED
FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT = S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT
CLOSING, LAST_ACK, TIME_WAIT = S.CLOSING, S.LAST_ACK, S.TIME_WAIT

FIN, SYN, RST, PSH, ACK, URG = TcpFlags.FIN, TcpFlags.SYN, TcpFlags.RST, TcpFlags.PSH, TcpFlags.ACK, TcpFlags.URG
_F_ACK = TcpFlags.ACK
# The same bits as plain ints, for a segment's ``int(flags)``: ``int & TcpFlags`` builds an
# enum member each time, too slow for segment arrival.
FIN_BIT, SYN_BIT, RST_BIT, ACK_BIT, URG_BIT = 0x01, 0x02, 0x04, 0x10, 0x20
_FLAG = tuple(TcpFlags(i) for i in range(256))  # int -> TcpFlags without IntFlag arithmetic
_F_SYN_ACK = TcpFlags.SYN | TcpFlags.ACK
_HALF = 0x80000000
# Linux's tcp_min_snd_mss: a tiny MSS option must not explode segment counts.
# It is room for a full 40 bytes of options and 8 bytes of data, the floor of
# the payload per segment whatever options a segment carries (_seg_mss).
_MIN_SND_MSS = 48
_TS_OPTION_LEN = 12
# SACK blocks that fit in the 40 option bytes of a segment: beside timestamps, and without.
_SACK_LIMIT_TS, _SACK_LIMIT = 3, 4


def _sack_option_len(blocks: int) -> int:
    """Option bytes for ``blocks`` SACK blocks as emitted (NOP, NOP, kind, length, 8 per block)."""
    return 4 + 8 * blocks if blocks else 0
