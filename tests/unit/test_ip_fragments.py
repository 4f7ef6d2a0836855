"""IPv4 fragmentation and reassembly, starting from fragments Linux sent."""

import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.ip_fragments import FRAGMENT_OVERHEAD, FragmentationNeeded, Reassembler, fragment
from stack.wire import EchoRequest, IpProtocol, Ipv4Repr, error_payload, parse_icmpv4

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")

# busybox ping -s 2000 10.0.0.2 over a 1500-byte veth, captured with tcpdump:
# "id 2641, offset 0, flags [+], proto ICMP (1), length 1500" and
# "id 2641, offset 1480, flags [none], proto ICMP (1), length 548".  The ICMP
# message (2008 bytes) is 16 meaningful bytes and zeros.
FRAG0 = (
    bytes.fromhex("450005dc0a512000400136ce0a0000010a000002" "080051f529a40000dc55a01000000000")
    + bytes(1480 - 16)
)
FRAG1 = bytes.fromhex("450002240a5100b9400159cd0a0000010a000002") + bytes(528)
PING_MESSAGE = bytes.fromhex("080051f529a40000dc55a01000000000") + bytes(2008 - 16)


def parsed(pkt: bytes):
    r, payload = Ipv4Repr.parse(pkt)
    return r, payload


def feed(reasm: Reassembler, pkt: bytes, now: float = 0.0, **kw):
    r, payload = parsed(pkt)
    return reasm.add(r, payload, now, **kw)


def test_reassembles_captured_linux_fragments():
    reasm = Reassembler()
    assert feed(reasm, FRAG0) is None
    whole = feed(reasm, FRAG1)
    assert whole == PING_MESSAGE
    # The ICMP checksum covers the whole message: it verifies only if the
    # pieces were put together right.
    msg = parse_icmpv4(whole)
    assert msg == EchoRequest(10660, 0, PING_MESSAGE[8:])
    assert reasm.counters["reassembled"] == 1 and reasm.pending == 0 and reasm.held_bytes == 0


def test_reassembles_captured_fragments_reversed():
    reasm = Reassembler()
    assert feed(reasm, FRAG1) is None
    assert feed(reasm, FRAG0) == PING_MESSAGE


def test_fragment_matches_linux_byte_for_byte():
    whole = Ipv4Repr(A, B, IpProtocol.ICMP, len(PING_MESSAGE), ttl=64, ident=2641)
    assert fragment(whole, PING_MESSAGE, 1500) == [FRAG0, FRAG1]


def test_not_a_fragment_passes_through():
    reasm = Reassembler()
    r = Ipv4Repr(A, B, IpProtocol.UDP, 3)
    assert reasm.add(r, memoryview(b"abc"), 0.0) == b"abc"
    assert reasm.pending == 0


def test_payload_is_copied():
    reasm = Reassembler()
    buf = bytearray(FRAG0)
    r, payload = parsed(buf)
    reasm.add(r, payload, 0.0)
    buf[20:] = bytes(len(buf) - 20)  # the driver reuses its buffer
    assert feed(reasm, FRAG1) == PING_MESSAGE


def pieces(payload: bytes, mtu: int, ident: int = 7, src=A):
    r = Ipv4Repr(src, B, IpProtocol.UDP, len(payload), ident=ident)
    return fragment(r, payload, mtu)


def test_in_order_and_interleaved_datagrams_stay_apart():
    reasm = Reassembler()
    p1 = bytes(range(256)) * 8
    p2 = bytes(reversed(range(256))) * 8
    f1 = pieces(p1, 576, ident=1)
    f2 = pieces(p2, 576, ident=2)
    f3 = pieces(p1, 576, ident=1, src=IPv4Address("10.0.0.3"))  # same ident, other source
    results = []
    for a, b, c in zip(f1, f2, f3):
        results += [feed(reasm, a), feed(reasm, b), feed(reasm, c)]
    assert [r for r in results if r is not None] == [p1, p2, p1]
    assert reasm.counters["reassembled"] == 3


def test_duplicate_is_ignored():
    reasm = Reassembler()
    frags = pieces(bytes(range(200)) * 10, 576)
    assert feed(reasm, frags[0]) is None
    assert feed(reasm, frags[0]) is None
    assert reasm.counters["duplicate"] == 1
    for f in frags[1:-1]:
        assert feed(reasm, f) is None
    assert feed(reasm, frags[-1]) == bytes(range(200)) * 10


def _frag(offset: int, data: bytes, more: bool, ident: int = 9) -> bytes:
    return Ipv4Repr(A, B, IpProtocol.UDP, len(data), ident=ident, more_frags=more, frag_offset=offset).emit(data)


def test_overlap_drops_whole_datagram_and_later_fragments():
    reasm = Reassembler(timeout=30.0)
    assert feed(reasm, _frag(0, b"A" * 16, True)) is None
    # Bytes 8..24 overlap bytes 8..16 already held: discard everything.
    assert feed(reasm, _frag(8, b"B" * 16, True), now=1.0) is None
    assert reasm.counters["dropped_overlap"] == 1 and reasm.pending == 0 and reasm.held_bytes == 0
    # The rest of that datagram, even the pieces that would complete it
    # without the overlap, is discarded too.
    assert feed(reasm, _frag(16, b"C" * 8, False), now=2.0) is None
    assert feed(reasm, _frag(0, b"A" * 16, True), now=3.0) is None
    assert reasm.counters["dropped_after_overlap"] == 2 and reasm.pending == 0
    # Once the datagram's time is up, the same key may be used again.
    reasm.expire(31.0)
    assert feed(reasm, _frag(0, b"A" * 16, True), now=31.0) is None
    assert feed(reasm, _frag(16, b"C" * 8, False), now=31.0) == b"A" * 16 + b"C" * 8


@pytest.mark.parametrize(
    "second",
    [
        _frag(0, b"X" * 16, True),  # same place, different bytes
        _frag(0, b"A" * 8, True),  # same start, shorter
        _frag(8, b"B" * 8, True),  # inside
        _frag(0, b"A" * 24, True),  # covers and extends
    ],
)
def test_other_overlaps_are_not_duplicates(second):
    reasm = Reassembler()
    feed(reasm, _frag(0, b"A" * 16, True))
    assert feed(reasm, second) is None
    assert reasm.counters["dropped_overlap"] == 1 and reasm.counters["duplicate"] == 0


def test_overlap_with_following_fragment():
    reasm = Reassembler()
    feed(reasm, _frag(16, b"B" * 16, True))
    assert feed(reasm, _frag(8, b"A" * 16, True)) is None
    assert reasm.counters["dropped_overlap"] == 1


def test_adjacent_fragments_do_not_overlap():
    reasm = Reassembler()
    assert feed(reasm, _frag(8, b"B" * 8, True)) is None
    assert feed(reasm, _frag(16, b"C" * 3, False)) is None
    assert feed(reasm, _frag(0, b"A" * 8, True)) == b"A" * 8 + b"B" * 8 + b"CCC"


@pytest.mark.parametrize(
    "first, second",
    [
        (_frag(16, b"C" * 8, False), _frag(24, b"D" * 8, False)),  # two different ends
        (_frag(16, b"C" * 8, False), _frag(24, b"D" * 8, True)),  # data past the end
        (_frag(24, b"D" * 8, True), _frag(16, b"C" * 8, False)),  # end before held data
    ],
)
def test_inconsistent_end_drops_datagram(first, second):
    reasm = Reassembler()
    feed(reasm, first)
    assert feed(reasm, second) is None
    assert reasm.counters["dropped_inconsistent"] == 1 and reasm.pending == 0


@pytest.mark.parametrize(
    "bad", [_frag(0, b"A" * 12, True), _frag(8, b"", True), _frag(8, b"", False)]
)
def test_malformed_fragments_are_dropped(bad):
    reasm = Reassembler()
    assert feed(reasm, bad) is None
    assert reasm.counters["dropped_malformed"] == 1 and reasm.pending == 0


def test_datagram_over_65535_bytes_is_dropped():
    reasm = Reassembler()
    feed(reasm, _frag(0, b"A" * 8, True))
    # 65512 + 8 bytes of payload + a 20-byte header is 65540 > 65535.
    assert feed(reasm, _frag(65512, b"Z" * 8, False)) is None
    assert reasm.counters["dropped_too_big"] == 1 and reasm.pending == 0
    # The largest legal datagram still works: payload up to 65515 bytes.
    payload = bytes(65515)
    r = Ipv4Repr(A, B, IpProtocol.UDP, len(payload), ident=11)
    frags = fragment(r, payload, 9000)
    out = [feed(reasm, f) for f in frags]
    assert out[-1] == payload


def test_timeout_reports_first_fragment_for_icmp():
    reasm = Reassembler(timeout=30.0)
    assert feed(reasm, FRAG0, now=100.0) is None
    assert reasm.next_deadline() == 130.0
    assert reasm.expire(129.9) == []
    expired = reasm.expire(130.0)
    key = (A, B, IpProtocol.ICMP, 2641)
    # What an ICMP time exceeded (code 1) quotes: header + 8 bytes of fragment 0.
    assert expired == [(key, error_payload(FRAG0))]
    assert reasm.counters["timed_out"] == 1 and reasm.pending == 0 and reasm.held_bytes == 0
    assert reasm.next_deadline() is None
    # The late second half starts a new datagram, which never completes.
    assert feed(reasm, FRAG1, now=131.0) is None


def test_timeout_without_first_fragment_reports_none():
    reasm = Reassembler(timeout=5.0)
    feed(reasm, FRAG1, now=0.0)
    assert reasm.expire(5.0) == [((A, B, IpProtocol.ICMP, 2641), None)]


def test_timeout_keeps_raw_header_with_options():
    reasm = Reassembler()
    raw = bytes.fromhex("46000028000a200040110000" "0a0000010a000002" "94040000")  # 24 bytes, with options
    r = Ipv4Repr(A, B, IpProtocol.UDP, 16, ident=10, more_frags=True)
    reasm.add(r, b"0123456789abcdef", 0.0, raw_header=raw)
    assert reasm.expire(60.0)[0][1] == raw + b"01234567"


def test_max_bytes_drops_the_datagram_that_overflows():
    reasm = Reassembler(max_bytes=2 * (1480 + FRAGMENT_OVERHEAD))
    a = pieces(bytes(4000), 1500, ident=1)  # 1480 + 1480 + 1040
    b = pieces(bytes(2000), 1500, ident=2)
    assert feed(reasm, a[0]) is None
    assert feed(reasm, b[0]) is None
    assert reasm.held_bytes == 2 * (1480 + FRAGMENT_OVERHEAD)
    # a's second fragment does not fit: a goes, b carries on.
    assert feed(reasm, a[1]) is None
    assert reasm.counters["dropped_limit"] == 1
    assert reasm.pending == 1 and reasm.held_bytes == 1480 + FRAGMENT_OVERHEAD
    assert feed(reasm, b[1]) == bytes(2000)
    assert reasm.held_bytes == 0


def test_tiny_fragment_flood_hits_byte_limit():
    reasm = Reassembler(max_bytes=100 * (8 + FRAGMENT_OVERHEAD))
    for i in range(200):
        feed(reasm, _frag(8 * i, b"x" * 8, True))
    assert reasm.counters["dropped_limit"] >= 1
    assert reasm.held_bytes <= 100 * (8 + FRAGMENT_OVERHEAD)


def test_max_datagrams():
    reasm = Reassembler(max_datagrams=2)
    assert feed(reasm, _frag(0, b"a" * 8, True, ident=1)) is None
    assert feed(reasm, _frag(0, b"b" * 8, True, ident=2)) is None
    assert feed(reasm, _frag(0, b"c" * 8, True, ident=3)) is None
    assert reasm.counters["dropped_limit"] == 1 and reasm.pending == 2
    # The two already in progress still complete; then there is room again.
    assert feed(reasm, _frag(8, b"A", False, ident=1)) == b"a" * 8 + b"A"
    assert feed(reasm, _frag(8, b"B", False, ident=2)) == b"b" * 8 + b"B"
    assert feed(reasm, _frag(0, b"c" * 8, True, ident=3)) is None
    assert reasm.pending == 1


def test_poisoned_keys_are_bounded():
    reasm = Reassembler(max_datagrams=4)
    for ident in range(10):
        feed(reasm, _frag(0, b"A" * 16, True, ident=ident))
        feed(reasm, _frag(8, b"B" * 16, True, ident=ident))
    assert reasm.counters["dropped_overlap"] == 10
    assert reasm.discarding == 4


# -- fragment()


def test_fragment_fits_gives_one_packet():
    r = Ipv4Repr(A, B, IpProtocol.UDP, 0, dont_frag=True, ident=3)
    assert fragment(r, b"x" * 1480, 1500) == [
        Ipv4Repr(A, B, IpProtocol.UDP, 1480, dont_frag=True, ident=3).emit(b"x" * 1480)
    ]


def test_fragment_dont_frag_raises():
    r = Ipv4Repr(A, B, IpProtocol.UDP, 1481, dont_frag=True)
    with pytest.raises(FragmentationNeeded) as e:
        fragment(r, bytes(1481), 1500)
    assert e.value.mtu == 1500


def test_fragment_mtu_too_small():
    with pytest.raises(ValueError):
        fragment(Ipv4Repr(A, B, IpProtocol.UDP, 100), bytes(100), 27)


def test_refragmenting_a_fragment_keeps_offset_and_more_flag():
    r = Ipv4Repr(A, B, IpProtocol.UDP, 1000, ident=5, more_frags=True, frag_offset=2960)
    out = [parsed(p)[0] for p in fragment(r, bytes(1000), 576)]
    assert [x.frag_offset for x in out] == [2960, 3512]
    assert all(x.more_frags for x in out)


@given(
    st.integers(1, 6000),
    st.integers(68, 1500),
    st.randoms(use_true_random=False),
    st.integers(0, 3),
    st.integers(0, 2**32 - 1),
)
def test_random_order_with_duplicates_roundtrips(extra, mtu, rnd, dups, seed):
    size = mtu - 20 + extra  # always more than one fragment
    payload = random.Random(seed).randbytes(size)
    r = Ipv4Repr(A, B, IpProtocol.UDP, size, ident=0xBEEF)
    frags = fragment(r, payload, mtu)
    for f in frags:
        fr, _ = parsed(f)
        assert len(f) <= mtu and fr.frag_offset % 8 == 0
    order = frags + [rnd.choice(frags) for _ in range(dups)]
    rnd.shuffle(order)
    reasm = Reassembler()
    results = [feed(reasm, f) for f in order]
    # Model: duplicates are ignored, a full set completes and resets.
    held, expected, dups_seen = set(), [], 0
    for f in order:
        if f in held:
            dups_seen += 1
            expected.append(None)
            continue
        held.add(f)
        if len(held) == len(frags):
            held = set()
            expected.append(payload)
        else:
            expected.append(None)
    assert results == expected
    assert payload in results
    assert reasm.counters["duplicate"] == dups_seen and reasm.counters["dropped_overlap"] == 0
    assert reasm.pending == (1 if held else 0)


def test_random_order_many():
    rnd = random.Random(1234)
    payload = bytes(rnd.getrandbits(8) for _ in range(20000))
    frags = pieces(payload, 576)
    for _ in range(20):
        rnd.shuffle(frags)
        reasm = Reassembler()
        out = [feed(reasm, f) for f in frags]
        assert out[-1] == payload and out[:-1] == [None] * (len(frags) - 1)
