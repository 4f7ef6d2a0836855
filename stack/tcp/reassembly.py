"""Out-of-order data waiting for a hole to fill (the receive side).

Segments that arrive beyond RCV.NXT are kept as merged blocks of bytes.
Data already held wins over a later copy of the same bytes (a retransmission
cannot rewrite what was received). The queue is bounded in bytes and in
blocks, so a peer that sprays tiny disjoint segments cannot make it grow
without limit; a refused segment is simply not stored (and not SACKed), the
sender retransmits it later.

It also remembers which blocks changed most recently, for the SACK option
(RFC 2018 section 4: the first block reports the segment that triggered the
ACK, then the most recently reported others).
"""
from __future__ import annotations

from bisect import bisect_right

__all__ = ["ReassemblyQueue"]


class ReassemblyQueue:
    """Blocks of out-of-order bytes keyed by unwrapped sequence number."""

    __slots__ = ("max_bytes", "max_blocks", "_starts", "_data", "total", "_recent")

    def __init__(self, max_bytes: int, max_blocks: int = 256) -> None:
        if max_bytes < 0 or max_blocks < 1:
            raise ValueError("bad reassembly bounds")
        self.max_bytes = max_bytes
        self.max_blocks = max_blocks
        self._starts: list[int] = []
        self._data: list[bytearray] = []
        self.total = 0
        self._recent: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def blocks(self) -> list[tuple[int, int]]:
        """The held ranges, ``[(start, end)]`` in order."""
        return [(s, s + len(d)) for s, d in zip(self._starts, self._data)]

    def clear(self) -> None:
        self._starts.clear()
        self._data.clear()
        self._recent.clear()
        self.total = 0

    def add(self, seq: int, data) -> int:
        """Store ``data`` at ``seq``; return the number of new bytes, or -1 if refused."""
        n = len(data)
        if n == 0:
            return 0
        end = seq + n
        starts, blocks = self._starts, self._data
        i = bisect_right(starts, seq) - 1  # the block starting at or before seq
        if i >= 0:
            bend = starts[i] + len(blocks[i])
            if bend >= end:
                self._touch(seq)
                return 0  # all of it is already here
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            if bend >= seq and (nxt is None or end < nxt):
                # Common case: the segment extends one block at its tail.
                added = end - bend
                if self.total + added > self.max_bytes:
                    return -1
                blocks[i] += data[bend - seq :]
                self.total += added
                self._touch(seq)
                return added
        j = i + 1
        nxt = starts[j] if j < len(starts) else None
        if (i < 0 or starts[i] + len(blocks[i]) < seq) and (nxt is None or end < nxt):
            # Touches nothing: a new block.
            if self.total + n > self.max_bytes or len(starts) >= self.max_blocks:
                return -1
            starts.insert(j, seq)
            blocks.insert(j, bytearray(data))
            self.total += n
            self._touch(seq)
            return n
        return self._merge(seq, data)

    def _merge(self, seq: int, data) -> int:
        # General case: rebuild the run of blocks [seq, end] overlaps or touches.
        end = seq + len(data)
        starts, blocks = self._starts, self._data
        lo = bisect_right(starts, seq) - 1
        if lo < 0 or starts[lo] + len(blocks[lo]) < seq:
            lo += 1
        hi = lo
        while hi < len(starts) and starts[hi] <= end:
            hi += 1
        old = sum(len(blocks[k]) for k in range(lo, hi))
        new_start = min(seq, starts[lo])
        new_end = max(end, starts[hi - 1] + len(blocks[hi - 1]))
        added = (new_end - new_start) - old
        if self.total + added > self.max_bytes:
            return -1
        merged = bytearray()
        pos = new_start
        for k in range(lo, hi):
            s = starts[k]
            if pos < s:  # a gap before this block: new bytes
                merged += data[pos - seq : s - seq]
            merged += blocks[k]
            pos = s + len(blocks[k])
        if pos < new_end:
            merged += data[pos - seq : new_end - seq]
        starts[lo:hi] = [new_start]
        blocks[lo:hi] = [merged]
        self.total += added
        self._touch(seq)
        return added

    def pop_ready(self, rcv_nxt: int) -> bytes | None:
        """Bytes from ``rcv_nxt`` on if the first block reaches it (then removed)."""
        starts = self._starts
        while starts and starts[0] <= rcv_nxt:
            s = starts.pop(0)
            block = self._data.pop(0)
            self.total -= len(block)
            if s + len(block) > rcv_nxt:
                return bytes(block[rcv_nxt - s :])
        return None

    def _touch(self, seq: int) -> None:
        recent = self._recent
        if recent and recent[0] == seq:
            return
        recent.insert(0, seq)
        del recent[8:]

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` blocks, the most recently changed first (RFC 2018)."""
        starts, blocks = self._starts, self._data
        out: list[tuple[int, int]] = []
        for p in self._recent:
            i = bisect_right(starts, p) - 1
            if i >= 0 and p < starts[i] + len(blocks[i]):
                b = (starts[i], starts[i] + len(blocks[i]))
                if b not in out:
                    out.append(b)
                    if len(out) >= limit:
                        return out
        for s, d in zip(starts, blocks):
            b = (s, s + len(d))
            if b not in out:
                out.append(b)
                if len(out) >= limit:
                    break
        return out
