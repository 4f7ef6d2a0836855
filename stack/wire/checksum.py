"""The Internet checksum (RFC 1071) and the IPv4 pseudo-header.

Speed trick: read the whole buffer as one big-endian integer.  Because
2**16 == 1 (mod 0xFFFF), that integer is congruent to the sum of its 16-bit
words modulo 0xFFFF, which is exactly the one's complement sum, except that
one's complement arithmetic has two zeros: a sum of words that is not all
zero folds to 0xFFFF, never to 0.  ``int.from_bytes`` and one small modulo
run in C, about 4x faster than ``sum(array('H'))`` and far faster than a
Python loop.
"""

from __future__ import annotations

from ipaddress import IPv4Address

__all__ = [
    "fold",
    "internet_checksum",
    "ones_complement_sum",
    "pseudo_header_sum_v4",
    "verify",
]


def ones_complement_sum(data, initial: int = 0) -> int:
    """Return an unfolded partial one's complement sum of ``data`` plus ``initial``.

    ``data`` is bytes, bytearray or memoryview; an odd length counts as if a
    zero byte followed.  Partial sums of 16-bit-aligned pieces combine by
    plain addition; :func:`fold` turns the total into 16 bits.  ``data`` must
    start on an even offset of the checksummed region to be combinable.
    """
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    if n == 0:
        return initial
    r = n % 0xFFFF
    # r == 0 with a non-zero sum is one's complement "negative zero".
    return initial + (r or 0xFFFF)


def fold(total: int) -> int:
    """Fold a non-negative partial sum to 16 bits with end-around carry."""
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def internet_checksum(data, initial: int = 0) -> int:
    """Return the 16-bit Internet checksum of ``data`` (with ``initial`` added in).

    This is the value to store in a checksum field that was zero while
    summing.  ``initial`` is typically a pseudo-header sum.
    """
    return ~fold(ones_complement_sum(data, initial)) & 0xFFFF


def verify(data, initial: int = 0) -> bool:
    """True if ``data`` (checksum field included) plus ``initial`` sums to 0xFFFF."""
    return fold(ones_complement_sum(data, initial)) == 0xFFFF


def pseudo_header_sum_v4(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo-header used by UDP and TCP checksums.

    ``length`` is the transport header plus payload length in bytes.
    """
    s = int(src)
    d = int(dst)
    return (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + protocol + length
