"""Ethernet II: MAC addresses, frame view and repr on a captured frame."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import EtherType, EthernetFrame, EthernetRepr, MacAddress, MalformedPacket
from stack.wire.ethernet import HEADER_LEN, MIN_FRAME_LEN

# Linux's ARP request for 10.0.0.2 from 10.0.0.1 (52:54:00:12:34:56), captured
# with tcpdump on a veth in a network namespace (tcpdump -e decodes it as
# "52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42").
ARP_FRAME = bytes.fromhex(
    "ffffffffffff" "525400123456" "0806"
    "0001080006040001525400123456" "0a000001" "000000000000" "0a000002"
)
ARP_BODY = ARP_FRAME[14:]
BROADCAST = MacAddress("ff:ff:ff:ff:ff:ff")
HOST_A = MacAddress("52:54:00:12:34:56")


def test_deconstruct():
    f = EthernetFrame(ARP_FRAME)
    assert f.dst == BROADCAST
    assert f.src == HOST_A
    assert f.ethertype == EtherType.ARP
    assert bytes(f.payload) == ARP_BODY


def test_construct():
    buf = bytearray(len(ARP_FRAME))
    f = EthernetFrame(buf)
    f.dst = BROADCAST
    f.src = HOST_A
    f.ethertype = EtherType.ARP
    f.payload[:] = ARP_BODY
    assert bytes(buf) == ARP_FRAME


def test_parse():
    r, payload = EthernetRepr.parse(ARP_FRAME)
    assert r == EthernetRepr(BROADCAST, HOST_A, EtherType.ARP)
    assert isinstance(r.ethertype, EtherType)
    assert isinstance(payload, memoryview) and bytes(payload) == ARP_BODY


def test_emit():
    r = EthernetRepr(BROADCAST, HOST_A, EtherType.ARP)
    assert r.emit(ARP_BODY) == ARP_FRAME
    assert r.emit(memoryview(ARP_BODY)) == ARP_FRAME
    assert r.header_bytes() == ARP_FRAME[:HEADER_LEN]


def test_emit_pad_to_minimum():
    r = EthernetRepr(BROADCAST, HOST_A, EtherType.ARP)
    padded = r.emit(ARP_BODY, pad=True)
    assert len(padded) == MIN_FRAME_LEN
    assert padded[:42] == ARP_FRAME and padded[42:] == bytes(18)
    big = bytes(100)
    assert len(r.emit(big, pad=True)) == HEADER_LEN + 100


def test_parse_payload_is_a_view_not_a_copy():
    buf = bytearray(ARP_FRAME)
    _, payload = EthernetRepr.parse(buf)
    buf[14] = 0x77
    assert payload[0] == 0x77


def test_unknown_ethertype_stays_int():
    r, _ = EthernetRepr.parse(ARP_FRAME[:12] + b"\x88\xcc" + bytes(10))
    assert r.ethertype == 0x88CC and not isinstance(r.ethertype, EtherType)


@pytest.mark.parametrize("n", [0, 1, 13])
def test_truncated(n):
    with pytest.raises(MalformedPacket) as e:
        EthernetRepr.parse(ARP_FRAME[:n])
    assert e.value.reason == "ethernet: truncated"
    with pytest.raises(MalformedPacket):
        EthernetFrame(ARP_FRAME[:n])


def test_header_only_frame_has_empty_payload():
    r, payload = EthernetRepr.parse(ARP_FRAME[:14])
    assert r.ethertype == EtherType.ARP and len(payload) == 0


# -- MacAddress


def test_mac_from_str_bytes_and_mac():
    m = MacAddress("52:54:00:12:34:56")
    assert MacAddress(b"RT\x00\x124V") == m
    assert MacAddress(m) == m
    assert MacAddress("52-54-00-12-34-56") == m
    assert MacAddress("52:54:0:12:34:56") == m
    assert str(m) == "52:54:00:12:34:56"
    assert bytes(m) == m.packed == bytes.fromhex("525400123456")
    assert repr(m) == "MacAddress('52:54:00:12:34:56')"


@pytest.mark.parametrize(
    "bad", ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:zz", "525:4:00:12:34:56", b"12345", b"1234567"]
)
def test_mac_rejects_garbage(bad):
    with pytest.raises(ValueError):
        MacAddress(bad)


def test_mac_kinds():
    assert MacAddress.broadcast() == BROADCAST
    assert BROADCAST.is_broadcast and BROADCAST.is_multicast and not BROADCAST.is_unicast
    ipv6_mcast = MacAddress("33:33:00:00:00:16")
    assert ipv6_mcast.is_multicast and not ipv6_mcast.is_broadcast and not ipv6_mcast.is_unicast
    assert HOST_A.is_unicast and not HOST_A.is_multicast and not HOST_A.is_broadcast
    assert HOST_A.is_local  # QEMU's 52:54:00 prefix is locally administered


def test_mac_hash_and_eq():
    a = MacAddress("52:54:00:12:34:56")
    b = MacAddress(bytes.fromhex("525400123456"))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != MacAddress("52:54:00:12:34:57")
    assert a != "52:54:00:12:34:56"


def test_mac_random_local():
    seen = {MacAddress.random_local() for _ in range(50)}
    assert len(seen) > 45
    for m in seen:
        assert m.is_unicast and m.is_local and len(m.packed) == 6


@given(st.binary(max_size=80))
def test_fuzz_parse(data):
    try:
        r, payload = EthernetRepr.parse(data)
    except MalformedPacket as e:
        assert e.reason == "ethernet: truncated"
    else:
        assert r.emit(payload) == data
