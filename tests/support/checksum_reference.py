"""The Internet checksum done the slow, obvious way, as a reference for the fast one."""


def naive_sum(data: bytes) -> int:
    """RFC 1071 done the slow, obvious way: 16-bit words, end-around carry each step."""
    if len(data) % 2:
        data = data + b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def naive_checksum(data: bytes) -> int:
    return ~naive_sum(data) & 0xFFFF
