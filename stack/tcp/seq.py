"""32-bit sequence arithmetic, initial sequence numbers and ephemeral ports.

Sequence numbers on the wire wrap at 2**32 (RFC 9293 3.4). Comparisons are
done the usual way, on the signed 32-bit difference. Inside a connection the
engine keeps *unwrapped* sequence numbers (plain, ever-growing Python ints)
and converts at the edge with :func:`unwrap`, so the hot path compares ints
and never thinks about wrapping.

:class:`IsnGenerator` is RFC 6528's ``ISN = M + F(4-tuple, secretkey)``:
``M`` is a 4 microsecond clock (time passed in as ``now``) and ``F`` a keyed
BLAKE2s hash, so a blind attacker cannot guess the ISN of someone else's
connection while the ISNs of one 4-tuple still grow with time (old duplicates
of an earlier incarnation fall behind the new one).

:class:`PortAllocator` is RFC 6056 algorithm 4 ("double-hash port
selection"): the search for a free port starts at a keyed hash of the
destination, plus a per-bucket counter from a table of random values, so
consecutive connections to one peer get different ports but an observer of
one destination learns nothing about the ports used towards another.
"""
from __future__ import annotations

import errno
import hashlib
import os
import struct
from ipaddress import IPv4Address
from typing import Callable

__all__ = [
    "MASK",
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
    "unwrap",
    "IsnGenerator",
    "PortAllocator",
    "EPHEMERAL_PORTS",
]

MASK = 0xFFFFFFFF
_HALF = 0x80000000
_WHOLE = 0x100000000

# Linux's default net.ipv4.ip_local_port_range.
EPHEMERAL_PORTS = (32768, 60999)


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """The signed distance ``a - b`` in sequence space, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - _WHOLE if d & _HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b`` (RFC 9293's "<" on sequence numbers)."""
    return (a - b) & MASK >= _HALF


def seq_le(a: int, b: int) -> bool:
    return a == b or (a - b) & MASK >= _HALF


def seq_gt(a: int, b: int) -> bool:
    return seq_lt(b, a)


def seq_ge(a: int, b: int) -> bool:
    return seq_le(b, a)


def unwrap(wire: int, ref: int) -> int:
    """The unwrapped sequence number nearest ``ref`` whose low 32 bits are ``wire``.

    ``ref`` is an unwrapped number the connection already knows (RCV.NXT
    or SND.UNA); the result is within 2**31 of it either way.
    """
    d = (wire - ref) & MASK
    if d & _HALF:
        d -= _WHOLE
    return ref + d


def _endpoint_bytes(ip: IPv4Address | int | str, port: int) -> bytes:
    return int(IPv4Address(ip)).to_bytes(4, "big") + port.to_bytes(2, "big")


class IsnGenerator:
    """RFC 6528 initial sequence numbers: a 4 µs clock plus a keyed hash.

    ``key`` defaults to 32 bytes from ``os.urandom``; tests pass a fixed key
    to get reproducible numbers. The same key also gives each connection a
    random-looking timestamp offset (:meth:`ts_offset`), as Linux does, so
    TSval does not reveal the host's uptime.
    """

    TICKS_PER_SECOND = 250_000  # one tick every 4 microseconds (RFC 9293 3.4.1)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        if not 16 <= len(self._key) <= 32:
            raise ValueError("the ISN key must be 16 to 32 bytes")

    def _hash(self, tag: bytes, local_ip, local_port: int, remote_ip, remote_port: int) -> int:
        h = hashlib.blake2s(
            tag + _endpoint_bytes(local_ip, local_port) + _endpoint_bytes(remote_ip, remote_port),
            key=self._key,
            digest_size=4,
        )
        return int.from_bytes(h.digest(), "big")

    def isn(self, local_ip, local_port: int, remote_ip, remote_port: int, now: float) -> int:
        """The ISN for this 4-tuple at time ``now`` (seconds), in [0, 2**32)."""
        m = int(now * self.TICKS_PER_SECOND)
        return (m + self._hash(b"isn", local_ip, local_port, remote_ip, remote_port)) & MASK

    def ts_offset(self, local_ip, local_port: int, remote_ip, remote_port: int) -> int:
        """A per-connection offset added to the timestamp clock (RFC 7323 7.1)."""
        return self._hash(b"tso", local_ip, local_port, remote_ip, remote_port)


class PortAllocator:
    """RFC 6056 algorithm 4: double-hash ephemeral port selection.

    ``pick(local_ip, remote_ip, remote_port, in_use)`` returns the first
    port of its keyed search sequence for which ``in_use(port)`` is False,
    or raises ``OSError(EADDRNOTAVAIL)`` (what Linux's connect() says) when
    every port of the range is taken.
    """

    TABLE_SIZE = 1024

    def __init__(
        self,
        ephemeral: tuple[int, int] = EPHEMERAL_PORTS,
        key: bytes | None = None,
        table: list[int] | None = None,
    ) -> None:
        lo, hi = ephemeral
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad ephemeral port range {ephemeral}")
        self.low, self.high = lo, hi
        key = key if key is not None else os.urandom(32)
        if not 16 <= len(key) <= 32:
            raise ValueError("the port key must be 16 to 32 bytes")
        # Two independent secrets: one for the offset F, one for the index G.
        self._key_f = hashlib.blake2s(b"F" + key).digest()
        self._key_g = hashlib.blake2s(b"G" + key).digest()
        if table is None:
            raw = os.urandom(2 * self.TABLE_SIZE)
            table = list(struct.unpack(f"!{self.TABLE_SIZE}H", raw))
        if len(table) != self.TABLE_SIZE:
            raise ValueError(f"the port table needs {self.TABLE_SIZE} entries")
        self._table = list(table)

    def _h(self, key: bytes, local_ip, remote_ip, remote_port: int) -> int:
        data = int(IPv4Address(local_ip)).to_bytes(4, "big") + _endpoint_bytes(remote_ip, remote_port)
        return int.from_bytes(hashlib.blake2s(data, key=key, digest_size=4).digest(), "big")

    def pick(self, local_ip, remote_ip, remote_port: int, in_use: Callable[[int], bool]) -> int:
        """An ephemeral port for a connection to ``remote_ip:remote_port``."""
        count = self.high - self.low + 1
        offset = self._h(self._key_f, local_ip, remote_ip, remote_port)
        index = self._h(self._key_g, local_ip, remote_ip, remote_port) % self.TABLE_SIZE
        table = self._table
        for _ in range(count):
            port = self.low + (offset + table[index]) % count
            table[index] += 1  # unbounded: one round visits every port once
            if not in_use(port):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free ephemeral TCP port")
