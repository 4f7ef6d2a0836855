"""ARP view and repr on a captured Linux request/reply pair."""

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import ArpOperation, ArpPacket, ArpRepr, MacAddress, MalformedPacket
from stack.wire.errors import REASONS

A_MAC, A_IP = MacAddress("52:54:00:12:34:56"), IPv4Address("10.0.0.1")
B_MAC, B_IP = MacAddress("52:54:00:65:43:21"), IPv4Address("10.0.0.2")
ZERO_MAC = MacAddress(bytes(6))

# Captured on a veth between two network namespaces (Ethernet header removed);
# tcpdump: "Request who-has 10.0.0.2 tell 10.0.0.1, length 28" and
# "Reply 10.0.0.2 is-at 52:54:00:65:43:21, length 28".
REQUEST = bytes.fromhex("0001080006040001" "525400123456" "0a000001" "000000000000" "0a000002")
REPLY = bytes.fromhex("0001080006040002" "525400654321" "0a000002" "525400123456" "0a000001")

REQUEST_REPR = ArpRepr(ArpOperation.REQUEST, A_MAC, A_IP, ZERO_MAC, B_IP)
REPLY_REPR = ArpRepr(ArpOperation.REPLY, B_MAC, B_IP, A_MAC, A_IP)


def test_deconstruct():
    p = ArpPacket(REQUEST)
    assert p.hardware_type == 1 and p.protocol_type == 0x0800
    assert p.hardware_len == 6 and p.protocol_len == 4
    assert p.operation == ArpOperation.REQUEST
    assert p.source_hardware_addr == A_MAC.packed
    assert p.source_protocol_addr == A_IP.packed
    assert p.target_hardware_addr == bytes(6)
    assert p.target_protocol_addr == B_IP.packed


def test_construct():
    buf = bytearray(28)
    p = ArpPacket(buf)  # the length bytes are zero so far: set them before addresses
    p.hardware_type = 1
    p.protocol_type = 0x0800
    p.hardware_len = 6
    p.protocol_len = 4
    p.operation = ArpOperation.REPLY
    p.source_hardware_addr = B_MAC.packed
    p.source_protocol_addr = B_IP.packed
    p.target_hardware_addr = A_MAC.packed
    p.target_protocol_addr = A_IP.packed
    assert bytes(buf) == REPLY
    with pytest.raises(ValueError):
        p.source_protocol_addr = b"\x01\x02"


def test_view_reads_other_address_lengths():
    # A made-up hardware type with 2-byte hardware addresses: the view follows
    # the length bytes, the repr refuses it.
    pkt = bytes.fromhex("00ff0800020400017777" "0a000001" "8888" "0a000002")
    p = ArpPacket(pkt)
    assert p.source_hardware_addr == b"\x77\x77" and p.target_hardware_addr == b"\x88\x88"
    assert p.target_protocol_addr == B_IP.packed
    with pytest.raises(MalformedPacket) as e:
        ArpRepr.parse(pkt)
    assert e.value.reason == "arp: unsupported hardware/protocol"


def test_parse():
    assert ArpRepr.parse(REQUEST) == REQUEST_REPR
    assert ArpRepr.parse(REPLY) == REPLY_REPR
    assert isinstance(ArpRepr.parse(REPLY).operation, ArpOperation)


def test_parse_ignores_ethernet_padding():
    assert ArpRepr.parse(REQUEST + bytes(18)) == REQUEST_REPR


def test_emit():
    assert REQUEST_REPR.emit() == REQUEST
    assert REPLY_REPR.emit() == REPLY


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "arp: truncated"),
        (REQUEST[:7], "arp: truncated"),
        (REQUEST[:27], "arp: truncated"),
        (b"\x00\x06" + REQUEST[2:], "arp: unsupported hardware/protocol"),
        (REQUEST[:2] + b"\x86\xdd" + REQUEST[4:], "arp: unsupported hardware/protocol"),
        (REQUEST[:4] + b"\x08" + REQUEST[5:], "arp: unsupported hardware/protocol"),
        (REQUEST[:5] + b"\x10" + REQUEST[6:], "arp: unsupported hardware/protocol"),
        (REQUEST[:6] + b"\x00\x03" + REQUEST[8:], "arp: unsupported operation"),  # RARP
        (REQUEST[:6] + b"\x00\x00" + REQUEST[8:], "arp: unsupported operation"),
    ],
)
def test_malformed(data, reason):
    with pytest.raises(MalformedPacket) as e:
        ArpRepr.parse(data)
    assert e.value.reason == reason
    assert reason in REASONS


@pytest.mark.parametrize("data", [b"", REQUEST[:7], REQUEST[:27], REQUEST[:4] + b"\xff\xff" + REQUEST[6:]])
def test_view_rejects_truncated(data):
    with pytest.raises(MalformedPacket):
        ArpPacket(data)


@given(st.binary(max_size=64))
def test_fuzz_parse(data):
    try:
        r = ArpRepr.parse(data)
    except MalformedPacket as e:
        assert e.reason.startswith("arp: ") and e.reason in REASONS
    else:
        assert r.emit() == bytes(data[:28])


@given(st.binary(min_size=28, max_size=40), st.sampled_from([1, 2]))
def test_fuzz_ethernet_ipv4_addresses(data, op):
    # Valid fixed part, random addresses: always parses and round-trips.
    pkt = bytes.fromhex("00010800060400") + bytes([op]) + data[8:28]
    r = ArpRepr.parse(pkt)
    assert r.emit() == pkt
