"""What a connection received and the application has not read yet.

In-order bytes wait in :attr:`ReceiveQueue.data`; segments beyond a hole
wait in the :class:`~stack.tcp.reassembly.ReassemblyQueue` (with a FIN
that arrived out of order); the peer's FIN once taken, the urgent
pointer (MUST-33: the data stays in line), and a duplicate segment to
report in the next ACK's first SACK block (RFC 2883 D-SACK).
Sequence numbers are the connection's unwrapped ints.
"""
from __future__ import annotations

from stack.tcp.reassembly import ReassemblyQueue

__all__ = ["ReceiveQueue"]


class ReceiveQueue:
    """Received bytes in order and out of order, the FIN, the urgent mark, a pending D-SACK."""

    __slots__ = ("data", "ooo", "ooo_fin", "fin_received", "read_shutdown", "urgent", "dsack")

    def __init__(self, ooo_bytes: int, max_ooo_blocks: int) -> None:
        self.data = bytearray()  # in order, not yet read
        self.ooo = ReassemblyQueue(ooo_bytes, max_ooo_blocks)
        self.ooo_fin: int | None = None  # a FIN seen beyond a hole: its sequence number
        self.fin_received = False
        self.read_shutdown = False  # SHUT_RD: data is acknowledged and dropped
        self.urgent: int | None = None  # the receive urgent pointer (end of urgent data)
        self.dsack: tuple[int, int] | None = None  # a duplicate to report first

    def take(self, payload) -> None:
        """In-order bytes arrived (dropped, though acknowledged, after SHUT_RD)."""
        if not self.read_shutdown:
            self.data += payload

    def take_ready(self, rcv_nxt: int) -> int:
        """Move what the reassembly queue holds from ``rcv_nxt`` on; return the bytes moved."""
        moved = 0
        while True:
            chunk = self.ooo.pop_ready(rcv_nxt + moved)
            if chunk is None:
                return moved
            self.take(chunk)
            moved += len(chunk)

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` in-order bytes, removed from the queue."""
        data = self.data
        if not data or max_bytes <= 0:
            return b""
        if max_bytes >= len(data):
            out = bytes(data)
            data.clear()
        else:
            out = bytes(data[:max_bytes])
            del data[:max_bytes]
        return out

    def shutdown(self) -> None:
        """SHUT_RD: queued data is dropped, later data too."""
        self.read_shutdown = True
        self.data.clear()

    def sack_block_count(self) -> int:
        """SACK blocks the next ACK would carry without a limit."""
        return len(self.ooo) + (self.dsack is not None)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` blocks for the next ACK: the D-SACK first (then it is spent)."""
        blocks = []
        if self.dsack is not None:
            blocks.append(self.dsack)
            self.dsack = None
        if self.ooo:
            blocks += self.ooo.sack_blocks(limit - len(blocks))
        return blocks

    def urgent_pending(self, rcv_nxt: int) -> int:
        """Urgent bytes received and not yet read."""
        if self.urgent is None:
            return 0
        read_pos = rcv_nxt - len(self.data)
        return max(0, self.urgent - read_pos)
