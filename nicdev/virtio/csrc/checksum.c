/* The Internet checksum's ones' complement sum (RFC 1071), giving exactly
 * what nicdev/virtio/checksum.py's ones_complement_sum gives: an unfolded
 * total, `initial` unchanged for an all-zero buffer, and a non-zero sum
 * congruent to 0 mod 0xFFFF counted as 0xFFFF ("minus zero"). */
#include "checksum.h"

uint64_t mnet_ones_complement_sum(const char *bytes, size_t len, uint64_t initial)
{
    /* char * in the signature: cffi then passes a bytes object without a copy. */
    const uint8_t *data = (const uint8_t *)bytes;
    uint64_t sum = 0;
    size_t i = 0;
    /* 32-bit big-endian words into a 64-bit sum: 2**32 == 1 (mod 0xFFFF),
     * and 2**32 words of 2**32 cannot overflow 64 bits for any length a
     * frame has (a u32 len at most). */
    for (; i + 4 <= len; i += 4)
        sum += ((uint64_t)data[i] << 24) | ((uint64_t)data[i + 1] << 16) | ((uint64_t)data[i + 2] << 8) | data[i + 3];
    for (; i + 2 <= len; i += 2)
        sum += ((uint64_t)data[i] << 8) | data[i + 1];
    if (i < len)
        sum += (uint64_t)data[i] << 8;
    if (sum == 0)
        return initial;
    uint64_t r = sum % 0xFFFF;
    return initial + (r ? r : 0xFFFF);
}
