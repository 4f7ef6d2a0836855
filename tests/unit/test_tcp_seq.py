"""Sequence arithmetic, RFC 6528 ISNs and RFC 6056 port selection."""
import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.seq import (
    MASK,
    IsnGenerator,
    PortAllocator,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    unwrap,
)

u32 = st.integers(0, MASK)
KEY = bytes(range(32))


# -- comparisons -----------------------------------------------------------------


def test_compare_without_wrap():
    assert seq_lt(1, 2) and not seq_lt(2, 1) and not seq_lt(5, 5)
    assert seq_le(5, 5) and seq_le(4, 5) and not seq_le(6, 5)
    assert seq_gt(2, 1) and seq_ge(2, 2) and not seq_gt(2, 2)


def test_compare_across_the_wrap():
    assert seq_lt(0xFFFFFFF0, 0x10)
    assert seq_gt(0x10, 0xFFFFFFF0)
    assert seq_le(MASK, 0)
    assert seq_add(MASK, 1) == 0
    assert seq_add(0xFFFFFFFF, 0x20) == 0x1F
    assert seq_diff(0x10, 0xFFFFFFF0) == 0x20
    assert seq_diff(0xFFFFFFF0, 0x10) == -0x20


@given(u32, st.integers(1, 2**31 - 1))
def test_adding_less_than_half_the_space_moves_forward(a, n):
    b = seq_add(a, n)
    assert seq_lt(a, b) and seq_gt(b, a) and seq_le(a, b) and seq_ge(b, a)
    assert seq_diff(b, a) == n and seq_diff(a, b) == -n


@given(u32, u32)
def test_exactly_one_order_holds(a, b):
    orders = [seq_lt(a, b), a == b, seq_gt(a, b)]
    if (a - b) & MASK == 2**31:
        # Half the space away: both look "before" the other (signed-int rule).
        assert seq_lt(a, b) and seq_lt(b, a)
    else:
        assert orders.count(True) == 1


@given(st.integers(0, 2**40), st.integers(-(2**31), 2**31 - 1))
def test_unwrap_recovers_nearby_numbers(ref, delta):
    real = ref + delta
    if real < 0:
        return
    assert unwrap(real & MASK, ref) == real


def test_unwrap_examples():
    assert unwrap(5, 0x1_0000_0000 - 3) == 0x1_0000_0005  # wrapped forward
    assert unwrap(0xFFFFFFFE, 0x1_0000_0001) == 0xFFFF_FFFE  # just behind


# -- ISN ----------------------------------------------------------------------------


def test_isn_grows_with_the_4us_clock():
    g = IsnGenerator(KEY)
    a = g.isn("10.0.0.1", 1000, "10.0.0.2", 80, now=1.0)
    b = g.isn("10.0.0.1", 1000, "10.0.0.2", 80, now=1.0 + 2**-14)  # 61 µs later
    c = g.isn("10.0.0.1", 1000, "10.0.0.2", 80, now=2.0)
    assert seq_diff(b, a) == 15
    assert seq_diff(c, a) == 250_000


def test_isn_differs_per_4_tuple_and_key():
    g = IsnGenerator(KEY)
    base = g.isn("10.0.0.1", 1000, "10.0.0.2", 80, now=0.0)
    others = {
        g.isn("10.0.0.1", 1001, "10.0.0.2", 80, now=0.0),
        g.isn("10.0.0.1", 1000, "10.0.0.3", 80, now=0.0),
        g.isn("10.0.0.1", 1000, "10.0.0.2", 81, now=0.0),
        g.isn("10.0.0.9", 1000, "10.0.0.2", 80, now=0.0),
        IsnGenerator(bytes(32)).isn("10.0.0.1", 1000, "10.0.0.2", 80, now=0.0),
    }
    assert base not in others and len(others) == 5


def test_isn_is_reproducible_with_a_key_and_random_without():
    assert IsnGenerator(KEY).isn("1.2.3.4", 1, "5.6.7.8", 2, 3.0) == IsnGenerator(KEY).isn(
        "1.2.3.4", 1, "5.6.7.8", 2, 3.0
    )
    values = {IsnGenerator().isn("1.2.3.4", 1, "5.6.7.8", 2, 3.0) for _ in range(8)}
    assert len(values) > 1


def test_isn_wraps_into_32_bits():
    g = IsnGenerator(KEY)
    assert 0 <= g.isn("1.2.3.4", 1, "5.6.7.8", 2, now=1e9) <= MASK


def test_ts_offset_is_per_connection():
    g = IsnGenerator(KEY)
    assert g.ts_offset("1.1.1.1", 1, "2.2.2.2", 2) != g.ts_offset("1.1.1.1", 3, "2.2.2.2", 2)


def test_bad_isn_key():
    with pytest.raises(ValueError):
        IsnGenerator(b"short")


# -- ephemeral ports ---------------------------------------------------------------


def test_ports_stay_in_range_and_repeat_calls_differ():
    alloc = PortAllocator((40000, 40009), key=KEY, table=[0] * PortAllocator.TABLE_SIZE)
    ports = [alloc.pick("10.0.0.1", "10.0.0.2", 80, lambda p: False) for _ in range(10)]
    assert all(40000 <= p <= 40009 for p in ports)
    # The per-bucket counter advances: ten picks towards one peer walk the range.
    assert sorted(ports) == list(range(40000, 40010))


def test_ports_skip_ports_in_use_and_report_exhaustion():
    alloc = PortAllocator((50000, 50003), key=KEY)
    busy = {50000, 50001, 50003}
    assert alloc.pick("10.0.0.1", "10.0.0.2", 80, busy.__contains__) == 50002
    with pytest.raises(OSError) as exc:
        alloc.pick("10.0.0.1", "10.0.0.2", 80, lambda p: True)
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_every_port_is_tried_once_before_giving_up():
    alloc = PortAllocator((1000, 1099), key=KEY)
    tried = []

    def in_use(port):
        tried.append(port)
        return True

    with pytest.raises(OSError):
        alloc.pick("10.0.0.1", "10.0.0.2", 80, in_use)
    assert sorted(tried) == list(range(1000, 1100))


def test_different_destinations_start_at_unrelated_ports():
    table = [0] * PortAllocator.TABLE_SIZE
    alloc = PortAllocator(key=KEY, table=table)
    starts = {alloc.pick("10.0.0.1", f"10.0.1.{i}", 443, lambda p: False) for i in range(20)}
    assert len(starts) > 15  # a keyed hash, not a shared counter


def test_bad_allocator_arguments():
    with pytest.raises(ValueError):
        PortAllocator((5, 4))
    with pytest.raises(ValueError):
        PortAllocator(key=b"x")
    with pytest.raises(ValueError):
        PortAllocator(table=[1, 2, 3])
