"""IPv4 fragmentation and reassembly (RFC 791, RFC 815), sans-IO.

Reassembly keys a datagram by ``(src, dst, protocol, ident)``.  Overlap
policy, in the spirit of RFC 5722 (written for IPv6; Linux applies the same
rule to IPv4): a fragment that is an exact duplicate of one already held
(same offset, length and bytes) is ignored; any other overlap discards the
whole datagram, and fragments of it that arrive later are discarded too
until its timer would have run out.  So data already received is never
overwritten, and a datagram whose pieces disagree is never delivered.

Time is passed in (``now``, seconds from any monotonic clock); nothing here
reads a clock or does I/O.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from dataclasses import dataclass, field

from .wire.ipv4 import HEADER_LEN, MAX_PACKET_LEN, Ipv4Repr

__all__ = ["FRAGMENT_OVERHEAD", "FragmentationNeeded", "Reassembler", "fragment"]

#: Bytes charged against ``max_bytes`` for each held fragment on top of its
#: payload, so floods of tiny fragments hit the limit too.
FRAGMENT_OVERHEAD = 64

#: Largest payload a reassembled datagram may have (with a 20-byte header).
MAX_PAYLOAD = MAX_PACKET_LEN - HEADER_LEN


class FragmentationNeeded(Exception):
    """The packet is larger than the MTU and has Don't Fragment set.

    ``mtu`` is the link MTU, what an ICMP "fragmentation needed" would carry.
    """

    def __init__(self, mtu: int) -> None:
        super().__init__(f"packet exceeds MTU {mtu} and has DF set")
        self.mtu = mtu


def fragment(repr: Ipv4Repr, payload, mtu: int) -> list[bytes]:
    """Split one IPv4 datagram into packets of at most ``mtu`` bytes each.

    Returns full IPv4 packets (header + data), in order.  A payload that fits
    gives one unfragmented packet.  Every fragment but the last carries a
    multiple of 8 bytes.  ``repr.payload_len`` is ignored (``len(payload)``
    counts); refragmenting a fragment keeps its offset and MF bit.
    """
    n = len(payload)
    if HEADER_LEN + n <= mtu:
        return [dataclasses.replace(repr, payload_len=n).emit(payload)]
    if repr.dont_frag:
        raise FragmentationNeeded(mtu)
    step = (mtu - HEADER_LEN) // 8 * 8
    if step < 8:
        raise ValueError(f"MTU {mtu} is too small to fragment into (IPv4 needs at least 28)")
    view = memoryview(payload)
    packets = []
    for start in range(0, n, step):
        chunk = view[start : start + step]
        last = start + step >= n
        piece = dataclasses.replace(
            repr,
            payload_len=len(chunk),
            frag_offset=repr.frag_offset + start,
            more_frags=repr.more_frags or not last,
        )
        packets.append(piece.emit(chunk))
    return packets


@dataclass(slots=True)
class _Datagram:
    deadline: float
    offsets: list[int] = field(default_factory=list)  # sorted fragment starts
    ends: list[int] = field(default_factory=list)  # matching ends
    chunks: list[bytes] = field(default_factory=list)  # matching data
    total: int | None = None  # payload length, once the last fragment is seen
    received: int = 0
    charged: int = 0
    first: bytes | None = None  # header + 8 bytes of fragment 0, for ICMP


_COUNTERS = (
    "reassembled",
    "timed_out",
    "duplicate",
    "dropped_overlap",
    "dropped_inconsistent",
    "dropped_after_overlap",
    "dropped_malformed",
    "dropped_too_big",
    "dropped_limit",
)


class Reassembler:
    """Collects IPv4 fragments and returns whole payloads.

    Limits: at most ``max_datagrams`` datagrams in progress (a fragment of a
    new one beyond that is dropped), at most ``max_bytes`` held in total
    (payload plus :data:`FRAGMENT_OVERHEAD` per fragment; the datagram that
    would exceed it is dropped whole), ``timeout`` seconds from a datagram's
    first fragment to its completion.  Every drop is counted in ``counters``.
    """

    def __init__(self, max_datagrams: int = 64, max_bytes: int = 256 * 1024, timeout: float = 30.0) -> None:
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._datagrams: dict[tuple, _Datagram] = {}
        self._poisoned: dict[tuple, float] = {}  # key -> until when to discard
        self._bytes = 0

    @property
    def pending(self) -> int:
        """Datagrams in progress."""
        return len(self._datagrams)

    @property
    def discarding(self) -> int:
        """Datagrams whose remaining fragments are being discarded after an overlap."""
        return len(self._poisoned)

    @property
    def held_bytes(self) -> int:
        """Bytes charged against ``max_bytes`` now."""
        return self._bytes

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (for the interface's poll_at)."""
        return min((d.deadline for d in self._datagrams.values()), default=None)

    def add(self, repr: Ipv4Repr, payload, now: float, raw_header: bytes | None = None) -> bytes | None:
        """Take one fragment; return the whole payload when this completes it.

        ``payload`` is copied (it may be a view into a reused buffer).
        ``raw_header`` is the fragment's original IPv4 header, kept for an
        ICMP time exceeded if this is fragment 0; without it the header is
        re-emitted from ``repr``.  A packet that is not a fragment is returned
        as is.
        """
        off = repr.frag_offset
        if not repr.more_frags and off == 0:
            return bytes(payload)
        key = (repr.src, repr.dst, repr.protocol, repr.ident)
        end = off + len(payload)
        dg = self._datagram_for(key, repr, len(payload), end, now)
        if dg is None:
            return None
        i = self._slot(key, dg, repr, off, end, payload)
        if i is None:
            return None
        return self._store(key, dg, i, repr, payload, raw_header)

    def _datagram_for(self, key: tuple, repr: Ipv4Repr, n: int, end: int, now: float) -> _Datagram | None:
        """The datagram this fragment belongs to (new if need be), or None to drop the fragment."""
        counters = self.counters
        until = self._poisoned.get(key)
        if until is not None:
            if now < until:
                counters["dropped_after_overlap"] += 1
                return None
            del self._poisoned[key]

        # Every fragment but the last carries a non-zero multiple of 8 bytes.
        if n == 0 or (repr.more_frags and n % 8):
            counters["dropped_malformed"] += 1
            return None
        if end > MAX_PAYLOAD:
            counters["dropped_too_big"] += 1
            self._discard(key)
            return None

        dg = self._datagrams.get(key)
        if dg is None:
            if len(self._datagrams) >= self.max_datagrams:
                counters["dropped_limit"] += 1
                return None
            dg = self._datagrams[key] = _Datagram(deadline=now + self.timeout)
        return dg

    def _slot(self, key: tuple, dg: _Datagram, repr: Ipv4Repr, off: int, end: int, payload) -> int | None:
        """Where ``[off, end)`` goes among the held fragments; None if it may not (overlap, length)."""
        # The last fragment fixes the length; nothing may disagree with it.
        if not repr.more_frags:
            if (dg.total is not None and dg.total != end) or (dg.ends and dg.ends[-1] > end):
                self._poison(key, dg, "dropped_inconsistent")
                return None
            dg.total = end
        elif dg.total is not None and end > dg.total:
            self._poison(key, dg, "dropped_inconsistent")
            return None

        i = bisect_right(dg.offsets, off)
        if i and dg.ends[i - 1] > off:
            if dg.offsets[i - 1] == off and dg.ends[i - 1] == end and dg.chunks[i - 1] == payload:
                self.counters["duplicate"] += 1
                return None
            self._poison(key, dg, "dropped_overlap")
            return None
        if i < len(dg.offsets) and dg.offsets[i] < end:
            self._poison(key, dg, "dropped_overlap")
            return None
        return i

    def _store(self, key: tuple, dg: _Datagram, i: int, repr: Ipv4Repr, payload, raw_header) -> bytes | None:
        """Keep the fragment at slot ``i`` (within the byte budget); the payload once complete."""
        off = repr.frag_offset
        n = len(payload)
        cost = n + FRAGMENT_OVERHEAD
        if self._bytes + cost > self.max_bytes:
            self.counters["dropped_limit"] += 1
            self._discard(key)
            return None

        data = bytes(payload)
        dg.offsets.insert(i, off)
        dg.ends.insert(i, off + n)
        dg.chunks.insert(i, data)
        dg.received += n
        dg.charged += cost
        self._bytes += cost
        if off == 0:
            header = bytes(raw_header) if raw_header is not None else repr.header_bytes()
            dg.first = header + data[:8]

        if dg.total is not None and dg.received == dg.total:
            # No overlaps are held, so received == total means no holes.
            self._discard(key)
            self.counters["reassembled"] += 1
            return b"".join(dg.chunks)
        return None

    def expire(self, now: float) -> list[tuple[tuple, bytes | None]]:
        """Drop datagrams whose time is up.

        Returns ``(key, first)`` for each, where ``first`` is fragment 0's
        IPv4 header plus its first 8 payload bytes (ready to quote in an ICMP
        time exceeded, code 1), or None if fragment 0 never came (RFC 792:
        then no ICMP error is sent).
        """
        gone = [(k, d) for k, d in self._datagrams.items() if d.deadline <= now]
        for key, _ in gone:
            self._discard(key)
        self.counters["timed_out"] += len(gone)
        for key in [k for k, until in self._poisoned.items() if until <= now]:
            del self._poisoned[key]
        return [(key, dg.first) for key, dg in gone]

    def _discard(self, key: tuple) -> None:
        dg = self._datagrams.pop(key, None)
        if dg is not None:
            self._bytes -= dg.charged

    def _poison(self, key: tuple, dg: _Datagram, counter: str) -> None:
        # Remember the key until the datagram would have timed out, so the
        # rest of it is discarded too; bounded like the datagram table.
        self.counters[counter] += 1
        self._discard(key)
        if len(self._poisoned) >= self.max_datagrams:
            del self._poisoned[next(iter(self._poisoned))]
        self._poisoned[key] = dg.deadline
