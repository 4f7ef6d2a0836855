"""The reply to a segment that belongs to no connection (RFC 9293 3.10.7.1).

"If the state is CLOSED (i.e., TCB does not exist) then all data in the
incoming segment is discarded. An incoming segment containing a RST is
discarded. An incoming segment not containing a RST causes a RST to be sent
in response." The same rule answers an ACK that reaches a listener.
"""
from __future__ import annotations

from stack.tcp.seq import MASK
from stack.wire.tcp import TcpFlags, TcpRepr

__all__ = ["reset_for"]


def reset_for(seg: TcpRepr, payload_len: int) -> TcpRepr | None:
    """The RST answering ``seg`` (ports swapped), or None if ``seg`` is itself a RST."""
    flags = seg.flags
    if flags & TcpFlags.RST:
        return None
    if flags & TcpFlags.ACK:
        # <SEQ=SEG.ACK><CTL=RST>
        return TcpRepr(seg.dst_port, seg.src_port, seg.ack, 0, TcpFlags.RST, 0)
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN and FIN count in SEG.LEN.
    seg_len = payload_len + (1 if flags & TcpFlags.SYN else 0) + (1 if flags & TcpFlags.FIN else 0)
    return TcpRepr(seg.dst_port, seg.src_port, 0, (seg.seq + seg_len) & MASK, TcpFlags.RST | TcpFlags.ACK, 0)
