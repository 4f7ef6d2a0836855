"""vhost-user messages: every payload kind parsed and encoded against fixed bytes,
and malformed messages rejected with a reason."""
import os
import struct

import pytest

from nicdev.vhost_user.messages import (
    BACKEND, ConfigSpace, LogArea, MemoryRegionDesc, MemoryTable, Message, ProtocolError, RarpMac,
    SingleMemoryRegion, VringAddr, VringFile, VringState, parse, parse_header,
)
from nicdev.vhost_user.protocol import (
    FLAG_NEED_REPLY, FLAG_REPLY, MAX_PAYLOAD, VERSION, BackendRequest, ProtocolFeature, Request,
    protocol_feature_names,
)


def hdr(request, flags, size):
    return struct.pack("<III", request, flags, size)


# (message, its exact wire bytes, fds)
CASES = [
    (Message(Request.GET_FEATURES), hdr(1, 1, 0), []),
    (Message(Request.GET_FEATURES, VERSION | FLAG_REPLY, 0x1_4000_0000),
     hdr(1, 5, 8) + bytes.fromhex("0000004001000000"), []),
    (Message(Request.SET_FEATURES, VERSION, 0x1_0000_0020), hdr(2, 1, 8) + bytes.fromhex("2000000001000000"), []),
    (Message(Request.SET_OWNER), hdr(3, 1, 0), []),
    (Message(Request.RESET_OWNER), hdr(4, 1, 0), []),
    (Message(Request.SET_VRING_NUM, VERSION, VringState(1, 256)), hdr(8, 1, 8) + bytes.fromhex("0100000000010000"), []),
    (Message(Request.SET_VRING_BASE, VERSION, VringState(0, 0xFFFF)),
     hdr(10, 1, 8) + bytes.fromhex("00000000ffff0000"), []),
    (Message(Request.GET_VRING_BASE, VERSION, VringState(1, 0)), hdr(11, 1, 8) + bytes.fromhex("0100000000000000"), []),
    (Message(Request.GET_VRING_BASE, VERSION | FLAG_REPLY, VringState(1, 7)),
     hdr(11, 5, 8) + bytes.fromhex("0100000007000000"), []),
    (Message(Request.SET_VRING_ADDR, VERSION, VringAddr(1, 0, 0x7F00_0000_1000, 0x7F00_0000_3000, 0x7F00_0000_2000, 0)),
     hdr(9, 1, 40) + bytes.fromhex("01000000" "00000000" "00100000007f0000" "00300000007f0000" "00200000007f0000"
                                   "0000000000000000"), []),
    (Message(Request.SET_VRING_KICK, VERSION, VringFile(1), [7]), hdr(12, 1, 8) + bytes.fromhex("0100000000000000"), [7]),
    (Message(Request.SET_VRING_CALL, VERSION, VringFile(0, no_fd=True)),
     hdr(13, 1, 8) + bytes.fromhex("0001000000000000"), []),
    (Message(Request.SET_VRING_ERR, VERSION, VringFile(2), [9]), hdr(14, 1, 8) + bytes.fromhex("0200000000000000"), [9]),
    (Message(Request.GET_PROTOCOL_FEATURES), hdr(15, 1, 0), []),
    (Message(Request.SET_PROTOCOL_FEATURES, VERSION, 0x1001D), hdr(16, 1, 8) + bytes.fromhex("1d00010000000000"), []),
    (Message(Request.GET_QUEUE_NUM, VERSION | FLAG_REPLY, 1), hdr(17, 5, 8) + bytes.fromhex("0100000000000000"), []),
    (Message(Request.SET_VRING_ENABLE, VERSION, VringState(0, 1)), hdr(18, 1, 8) + bytes.fromhex("0000000001000000"), []),
    (Message(Request.SEND_RARP, VERSION, RarpMac(bytes.fromhex("525400123456"))),
     hdr(19, 1, 8) + bytes.fromhex("5254001234560000"), []),
    (Message(Request.NET_SET_MTU, VERSION | FLAG_NEED_REPLY, 9000), hdr(20, 9, 8) + struct.pack("<Q", 9000), []),
    (Message(Request.SET_BACKEND_REQ_FD, VERSION | FLAG_NEED_REPLY, None, [4]), hdr(21, 9, 0), [4]),
    (Message(Request.SET_STATUS, VERSION, 0x0F), hdr(39, 1, 8) + bytes.fromhex("0f00000000000000"), []),
    (Message(Request.GET_STATUS, VERSION | FLAG_REPLY, 0x0F), hdr(40, 5, 8) + bytes.fromhex("0f00000000000000"), []),
    (Message(Request.SET_LOG_BASE, VERSION, LogArea(0x1000, 0x20), [3]),
     hdr(6, 1, 16) + bytes.fromhex("0010000000000000" "2000000000000000"), [3]),
    (Message(Request.ADD_MEM_REG, VERSION, SingleMemoryRegion(MemoryRegionDesc(0x1000, 0x2000, 0x7000, 0)), [5]),
     hdr(37, 1, 40) + bytes(8) + struct.pack("<QQQQ", 0x1000, 0x2000, 0x7000, 0), [5]),
    (Message(Request.GET_CONFIG, VERSION, ConfigSpace(0, 0, bytes(6))), hdr(24, 1, 18) + struct.pack("<III", 0, 6, 0) + bytes(6), []),
    (Message(Request.SET_MEM_TABLE, VERSION | FLAG_NEED_REPLY,
             MemoryTable([(0, 0xA0000, 0x7F00_0000_0000, 0), (0xC0000, 0x3FF40000, 0x7F00_000C_0000, 0xC0000)]), [5, 6]),
     hdr(5, 9, 72) + struct.pack("<II", 2, 0) + struct.pack("<QQQQ", 0, 0xA0000, 0x7F00_0000_0000, 0)
     + struct.pack("<QQQQ", 0xC0000, 0x3FF40000, 0x7F00_000C_0000, 0xC0000), [5, 6]),
    (Message(Request.SET_MEM_TABLE, VERSION | FLAG_REPLY, 0), hdr(5, 5, 8) + bytes(8), []),
]


@pytest.mark.parametrize("message,wire,fds", CASES, ids=[c[0].name + ("-reply" if c[0].is_reply else "") for c in CASES])
def test_encode_and_parse_fixed_bytes(message, wire, fds):
    assert message.encode() == wire
    parsed = parse(wire, fds)
    assert parsed == message


def test_backend_channel_messages():
    m = Message(BackendRequest.VRING_CALL, VERSION, VringState(1, 0), channel=BACKEND)
    wire = hdr(4, 1, 8) + bytes.fromhex("0100000000000000")
    assert m.encode() == wire
    assert parse(wire, channel=BACKEND) == m
    ack = Message(BackendRequest.CONFIG_CHANGE_MSG, VERSION | FLAG_REPLY, 0, channel=BACKEND)
    assert parse(ack.encode(), channel=BACKEND).payload == 0


def test_full_size_memory_table_is_accepted():
    # Some senders copy the whole 8-slot C struct; the unused slots are ignored.
    body = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 0x1000, 0x5000, 0) + bytes(7 * 32)
    m = parse(hdr(5, 1, len(body)) + body, [3])
    assert m.payload.regions == (MemoryRegionDesc(0, 0x1000, 0x5000, 0),)


def test_reply_helper_sets_only_version_and_reply():
    request = Message(Request.NET_SET_MTU, VERSION | FLAG_NEED_REPLY, 1500)
    reply = request.reply(0)
    # DPDK's front-end insists on exactly VERSION|REPLY in a reply.
    assert reply.flags == VERSION | FLAG_REPLY
    assert reply.encode() == hdr(20, 5, 8) + bytes(8)


def test_vring_file_reserved_bits_are_ignored():
    wire = hdr(12, 1, 8) + struct.pack("<Q", 0xFFFF_0000_0000_0003)
    assert parse(wire, [8]).payload == VringFile(3, False)


def test_protocol_feature_names():
    assert protocol_feature_names(1 << ProtocolFeature.MQ | 1 << ProtocolFeature.STATUS | 1 << 40) == [
        "MQ", "STATUS", "bit40"]


# -- malformed -----------------------------------------------------------
def reason(wire, fds=(), **kw):
    with pytest.raises(ProtocolError) as info:
        parse(wire, list(fds), **kw)
    return info.value.reason


def test_short_header():
    assert "short header" in reason(b"\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ProtocolError):
        parse_header(b"")


def test_size_field_larger_than_payload():
    assert "says 8 payload bytes" in reason(hdr(2, 1, 8) + b"\x00" * 4)


def test_size_field_smaller_than_payload():
    assert "says 0 payload bytes" in reason(hdr(1, 1, 0) + b"\x00" * 8)


def test_payload_of_wrong_size_for_request():
    assert "must be 8 bytes" in reason(hdr(2, 1, 4) + b"\x00" * 4)
    assert "must be 40 bytes" in reason(hdr(9, 1, 8) + b"\x00" * 8)
    assert "carries no payload" in reason(hdr(3, 1, 8) + b"\x00" * 8)


def test_payload_too_big():
    big = MAX_PAYLOAD + 1
    assert "limit" in reason(hdr(22, 1, big) + bytes(big))


def test_unknown_request_and_bad_version():
    assert "unknown frontend request id 999" in reason(hdr(999, 1, 0))
    assert "unknown backend request id 9" in reason(hdr(9, 1, 0), channel=BACKEND)
    assert "version" in reason(hdr(1, 2, 0))
    assert "unknown flag bits" in reason(hdr(1, 1 | 0x100, 0))


def test_wrong_fd_count():
    assert "expected 0" in reason(hdr(1, 1, 0), [5])
    assert "came with 0 file descriptors, expected 1" in reason(hdr(12, 1, 8) + struct.pack("<Q", 0))
    # NOFD set, but an fd came anyway
    assert "expected 0" in reason(hdr(13, 1, 8) + struct.pack("<Q", 0x100), [5])
    assert "expected 1" in reason(hdr(21, 1, 0), [5, 6])


def mem_table(regions, count=None):
    body = struct.pack("<II", len(regions) if count is None else count, 0)
    body += b"".join(struct.pack("<QQQQ", *r) for r in regions)
    return hdr(5, 1, len(body)) + body


def test_memory_table_region_count_and_fds():
    nine = [(i * 0x1000, 0x1000, 0x10000 + i * 0x1000, 0) for i in range(9)]
    assert "at most 8" in reason(mem_table(nine), range(9))
    two = nine[:2]
    assert "expected 2" in reason(mem_table(two), [3])
    assert "payload size 72, expected 104" in reason(mem_table(two, count=3), [3, 4, 5])
    assert "shorter than its 8-byte header" in reason(hdr(5, 1, 4) + bytes(4))


def test_memory_table_overlap_and_empty_regions():
    assert "overlap in gpa" in reason(mem_table([(0, 0x2000, 0x10000, 0), (0x1000, 0x1000, 0x20000, 0)]), [3, 4])
    assert "overlap in uva" in reason(mem_table([(0, 0x1000, 0x10000, 0), (0x1000, 0x1000, 0x10800, 0)]), [3, 4])
    assert "size 0" in reason(mem_table([(0, 0, 0x10000, 0)]), [3])
    assert "overflows" in reason(mem_table([(0xFFFF_FFFF_FFFF_F000, 0x2000, 0, 0)]), [3])


def test_encode_refuses_inconsistent_messages():
    with pytest.raises(ProtocolError):
        Message(Request.SET_VRING_KICK, VERSION, VringFile(0)).encode()       # fd missing
    with pytest.raises(TypeError):
        Message(Request.SET_VRING_ADDR, VERSION, VringState(0, 1)).encode()   # wrong payload kind
    with pytest.raises(ProtocolError):
        Message(Request.SET_MEM_TABLE, VERSION, MemoryTable([(0, 0x1000, 0, 0)] * 9), list(range(9))).encode()
    with pytest.raises(ProtocolError):
        RarpMac(b"\x00" * 5)


# -- properties -------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 3))
def test_random_bytes_parse_or_raise_protocol_error(data, nfds):
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(nfds)]
    try:
        msg = parse(data, fds)
    except ProtocolError as e:
        assert e.reason
    else:
        assert parse(msg.encode(), fds) == msg
    finally:
        for fd in fds:
            os.close(fd)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(Request)), st.binary(max_size=64), st.booleans())
def test_random_payloads_for_every_request(request, body, need_reply):
    flags = VERSION | (FLAG_NEED_REPLY if need_reply else 0)
    wire = hdr(request, flags, len(body)) + body
    try:
        msg = parse(wire, [])
    except ProtocolError:
        return
    assert parse(msg.encode(), []) == msg


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@given(st.one_of(
    st.builds(VringState, u32, u32).map(lambda p: Message(Request.SET_VRING_NUM, VERSION, p)),
    st.builds(VringAddr, u32, u32, u64, u64, u64, u64).map(lambda p: Message(Request.SET_VRING_ADDR, VERSION, p)),
    u64.map(lambda v: Message(Request.SET_FEATURES, VERSION, v)),
    u64.map(lambda v: Message(Request.GET_FEATURES, VERSION | FLAG_REPLY, v)),
    st.builds(VringState, u32, u32).map(lambda p: Message(Request.GET_VRING_BASE, VERSION | FLAG_REPLY, p)),
))
def test_encode_parse_round_trip(message):
    assert parse(message.encode(), []) == message
