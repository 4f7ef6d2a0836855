"""The Internet checksum (RFC 1071), the project's one implementation.

The device (checksum completion, segmentation) and the stack's packet
formats (through `stack.wire`) both use it.

Speed trick: read the buffer as big-endian integers. Because 2**16 == 1
(mod 0xFFFF), such an integer is congruent to the sum of its 16-bit words
modulo 0xFFFF, which is exactly the ones' complement sum, except that ones'
complement arithmetic has two zeros: a sum of words that is not all zero
folds to 0xFFFF, never to 0. `int.from_bytes`, additions and one small
modulo run in C. The modulo of a huge integer costs about twice as much as
reading it, so a long buffer is read in pieces that start at even offsets
(each piece then weighs 1 modulo 0xFFFF) and only their sum is reduced:
about 2x faster on 64 KiB than one modulo of the whole buffer.

That Python sum is the readable reference. With the C data path
(`MNET_DATAPATH=c`, the default: nicdev.virtio.kernels) the same sum runs in
C, 6x faster on a 1500-byte frame, and `IMPLEMENTATIONS` holds both so tests
can hold one to the other.
"""
from __future__ import annotations

from . import kernels

__all__ = ["fold", "internet_checksum", "ones_complement_sum", "verify", "IMPLEMENTATIONS"]

# Up to this size one integer and one modulo are cheapest; above it, pieces
# of the sizes below (measured: 512 bytes is best up to a few KiB, 2 KiB for
# GSO-sized buffers).
_ONE_PIECE = 1024
_SMALL_PIECE, _LARGE_PIECE, _LARGE_FROM = 512, 2048, 4096


def _congruent_sum(data) -> int:
    """A non-negative integer congruent modulo 0xFFFF to the sum of `data`'s
    16-bit big-endian words (an odd last byte counts as if a zero followed);
    0 exactly when every byte is zero."""
    size = len(data)
    if size <= _ONE_PIECE:
        n = int.from_bytes(data, "big")
        return n << 8 if size & 1 else n
    piece = _SMALL_PIECE if size <= _LARGE_FROM else _LARGE_PIECE
    view = memoryview(data)
    from_bytes = int.from_bytes
    n = 0
    for start in range(0, size, piece):
        n += from_bytes(view[start:start + piece], "big")
    if size & 1:
        # The last piece was read one byte short of a word: it is worth 256
        # times what was added.
        n += from_bytes(view[(size - 1) // piece * piece:], "big") * 255
    return n


def ones_complement_sum_python(data, initial: int = 0) -> int:
    """An unfolded partial ones' complement sum of `data` plus `initial`.

    `data` is bytes, bytearray or memoryview; an odd length counts as if a
    zero byte followed. Partial sums of pieces that start at even offsets of
    the checksummed region combine by plain addition; `fold` turns the total
    into 16 bits."""
    n = _congruent_sum(data)
    if n == 0:
        return initial
    # n % 0xFFFF == 0 with a non-zero sum is ones' complement "minus zero".
    return initial + (n % 0xFFFF or 0xFFFF)


IMPLEMENTATIONS = {"python": ones_complement_sum_python}
ones_complement_sum = ones_complement_sum_python

if kernels.use_c():
    _c_sum = kernels.lib.mnet_ones_complement_sum
    _from_buffer = kernels.ffi.from_buffer

    def ones_complement_sum_c(data, initial: int = 0) -> int:
        """`ones_complement_sum_python`'s result, computed in C."""
        if type(data) is bytes:     # cffi passes bytes to a char * as they are
            return _c_sum(data, len(data), initial)
        return _c_sum(_from_buffer(data), len(data), initial)

    IMPLEMENTATIONS["c"] = ones_complement_sum = ones_complement_sum_c


def fold(total: int) -> int:
    """Fold a non-negative partial sum to 16 bits with end-around carry."""
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def internet_checksum(data, initial: int = 0) -> int:
    """The 16-bit Internet checksum of `data` with the partial sum `initial`
    (typically a pseudo-header sum) added in: the value to store in a
    checksum field that was zero while summing."""
    return ~fold(ones_complement_sum(data, initial)) & 0xFFFF


def verify(data, initial: int = 0) -> bool:
    """True if `data` (checksum field included) plus `initial` sums to 0xFFFF."""
    return fold(ones_complement_sum(data, initial)) == 0xFFFF
