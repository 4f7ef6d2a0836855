"""virtio_net_hdr, feature bits, and mergeable RX buffers through both queue halves."""
import pytest

import nicdev.virtio as virtio
from nicdev.virtio import features as f
from nicdev.virtio.net_hdr import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    NetHdr,
    NetHdrError,
    header_size,
)

# A TCPv4 TSO header: NEEDS_CSUM, GSO TCPV4|ECN, hdr_len 54, gso_size 1448,
# csum_start 34 (after Ethernet + IPv4), csum_offset 16 (TCP checksum), 3 buffers.
RAW12 = bytes.fromhex("01 81 3600 a805 2200 1000 0300")
HDR = NetHdr(
    flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gso_type=VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
    hdr_len=54,
    gso_size=1448,
    csum_start=34,
    csum_offset=16,
    num_buffers=3,
)


def test_unpack_fixed_bytes():
    hdr = NetHdr.unpack(RAW12 + b"frame follows")
    assert hdr == HDR
    assert hdr.needs_csum
    assert hdr.gso == VIRTIO_NET_HDR_GSO_TCPV4


def test_pack_fixed_bytes():
    assert HDR.pack() == RAW12
    assert HDR.pack(10) == RAW12[:10]


def test_pack_into_and_the_10_byte_form():
    buf = bytearray(b"\xaa" * 16)
    HDR.pack_into(buf, 2, size=10)
    assert buf[2:12] == RAW12[:10]
    assert buf[12:] == b"\xaa" * 4
    short = NetHdr.unpack(RAW12, size=10)
    assert short.num_buffers == 0
    assert short.hdr_len == 54


def test_defaults_mean_no_offload():
    hdr = NetHdr()
    assert hdr.pack() == bytes(12)
    assert not hdr.needs_csum
    assert hdr.gso == VIRTIO_NET_HDR_GSO_NONE
    assert NetHdr(flags=VIRTIO_NET_HDR_F_DATA_VALID).pack()[0] == 2


@pytest.mark.parametrize("gso", [VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_TCPV6])
def test_gso_strips_ecn(gso):
    assert NetHdr(gso_type=gso | VIRTIO_NET_HDR_GSO_ECN).gso == gso


def test_short_buffer_is_a_clear_error():
    with pytest.raises(NetHdrError, match="too short"):
        NetHdr.unpack(RAW12[:11])
    assert NetHdr.unpack(RAW12[:10], size=10).csum_offset == 16


def test_unpack_at_an_offset_of_a_buffer():
    pool = bytearray(100) + RAW12 + b"frame"
    assert NetHdr.unpack(pool, offset=100) == NetHdr.unpack(RAW12)
    assert NetHdr.unpack(memoryview(pool), 10, offset=100).csum_offset == 16
    with pytest.raises(NetHdrError, match="too short"):
        NetHdr.unpack(pool, offset=len(pool) - 11)


def test_bad_sizes_and_values():
    with pytest.raises(NetHdrError):
        NetHdr().pack(11)
    with pytest.raises(NetHdrError):
        NetHdr.unpack(RAW12, size=20)
    with pytest.raises(NetHdrError):
        NetHdr(hdr_len=70000).pack()
    with pytest.raises(NetHdrError):
        NetHdr(flags=-1).pack_into(bytearray(12))
    with pytest.raises(NetHdrError):
        NetHdr().pack_into(bytearray(11))


def test_header_size():
    assert header_size(0) == 10
    assert header_size(f.mask(f.VIRTIO_NET_F_MRG_RXBUF)) == 12
    assert header_size(f.mask(f.VIRTIO_F_VERSION_1)) == 12
    assert header_size(f.mask(f.VIRTIO_F_VERSION_1, f.VIRTIO_NET_F_MRG_RXBUF, f.VIRTIO_NET_F_CSUM)) == 12
    assert header_size(f.mask(f.VIRTIO_NET_F_CSUM, f.VIRTIO_F_RING_EVENT_IDX)) == 10
    with pytest.raises(ValueError, match="HASH_REPORT"):
        header_size(f.mask(f.VIRTIO_F_VERSION_1, f.VIRTIO_NET_F_HASH_REPORT))


# -- feature bits -------------------------------------------------------------
def test_feature_bit_numbers_match_the_spec():
    assert (f.VIRTIO_F_VERSION_1, f.VIRTIO_F_RING_INDIRECT_DESC, f.VIRTIO_F_RING_EVENT_IDX) == (32, 28, 29)
    assert (f.VIRTIO_F_NOTIFY_ON_EMPTY, f.VIRTIO_F_ANY_LAYOUT) == (24, 27)
    net = [
        f.VIRTIO_NET_F_CSUM, f.VIRTIO_NET_F_GUEST_CSUM, f.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, f.VIRTIO_NET_F_MTU,
        f.VIRTIO_NET_F_MAC, f.VIRTIO_NET_F_GUEST_TSO4, f.VIRTIO_NET_F_GUEST_TSO6, f.VIRTIO_NET_F_GUEST_ECN,
        f.VIRTIO_NET_F_GUEST_UFO, f.VIRTIO_NET_F_HOST_TSO4, f.VIRTIO_NET_F_HOST_TSO6, f.VIRTIO_NET_F_HOST_ECN,
        f.VIRTIO_NET_F_HOST_UFO, f.VIRTIO_NET_F_MRG_RXBUF, f.VIRTIO_NET_F_STATUS, f.VIRTIO_NET_F_CTRL_VQ,
        f.VIRTIO_NET_F_CTRL_RX, f.VIRTIO_NET_F_CTRL_VLAN, f.VIRTIO_NET_F_GUEST_ANNOUNCE, f.VIRTIO_NET_F_MQ,
        f.VIRTIO_NET_F_CTRL_MAC_ADDR,
    ]  # fmt: skip
    assert net == [0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23]


def test_describe_names_bits_lowest_first():
    word = f.mask(f.VIRTIO_F_VERSION_1, f.VIRTIO_NET_F_MRG_RXBUF, f.VIRTIO_F_RING_EVENT_IDX, f.VIRTIO_NET_F_CSUM)
    assert f.describe(word) == ["CSUM", "MRG_RXBUF", "RING_EVENT_IDX", "VERSION_1"]
    assert f.describe(1 << 30 | 1 << 45) == ["VHOST_USER_PROTOCOL_FEATURES", "bit45"]
    assert f.describe(0) == []


def test_a_guests_sysfs_feature_string_decodes():
    # /sys/bus/virtio/devices/*/features: character i is bit i
    sysfs = "1100000000000001010000000000110010000000000000000000000000000000"
    word = sum(1 << i for i, c in enumerate(sysfs) if c == "1")
    assert f.describe(word) == [
        "CSUM", "GUEST_CSUM", "MRG_RXBUF", "CTRL_VQ", "RING_INDIRECT_DESC", "RING_EVENT_IDX", "VERSION_1",
    ]  # fmt: skip
    assert f.has(word, f.VIRTIO_F_VERSION_1)
    assert not f.has(word, f.VIRTIO_NET_F_MQ)


def test_mask_and_describe_refuse_out_of_range():
    with pytest.raises(ValueError):
        f.mask(64)
    with pytest.raises(ValueError):
        f.describe(1 << 64)
    with pytest.raises(ValueError):
        f.describe(-1)


# -- mergeable RX buffers -------------------------------------------------------
def test_mergeable_rx_frame_spans_several_buffers_published_at_once():
    mem = virtio.GuestMemory([virtio.MemoryRegion(0, 0x40000, bytearray(0x40000))])
    lay = virtio.SplitRingLayout(16, 0x1000)
    drv = virtio.DriverQueue.from_layout(lay, event_idx=True)
    drv.init(mem)
    dev = virtio.DeviceQueue.from_layout(lay, event_idx=True)
    bufsize = 256
    for i in range(8):  # the guest posts eight single-descriptor RX buffers
        drv.add(mem, [], [(0x10000 + 0x1000 * i, bufsize)], token=0x10000 + 0x1000 * i)
    drv.publish(mem)
    drv.enable_interrupts(mem)

    hdr_size = header_size(f.mask(f.VIRTIO_F_VERSION_1, f.VIRTIO_NET_F_MRG_RXBUF))
    frames = [bytes(range(256)) * 3 + b"tail", b"small frame"]
    notified = []
    for frame in frames:
        packet = bytearray(hdr_size) + frame
        chains = []
        placed = 0
        while placed < len(packet):  # take buffers until the packet fits
            chain = dev.pop(mem)
            n = chain.write(mem, memoryview(packet)[placed:])
            chains.append((chain, n))
            placed += n
        # num_buffers goes into the first buffer's header once the count is known
        first = chains[0][0]
        first.write(mem, NetHdr(flags=VIRTIO_NET_HDR_F_DATA_VALID, num_buffers=len(chains)).pack(hdr_size))
        dev.push_many(mem, [(c.head, n) for c, n in chains])  # one used idx store for the frame
        notified.append(dev.needs_notification(mem))
    assert notified == [True, False]  # used_event 0: only the first frame's entries crossed it

    done = drv.reap(mem)
    assert [n for _, n in done] == [256, 256, 256, 16, 23]
    received = []
    while done:
        gpa, n = done.pop(0)
        data = mem.read(gpa, n)
        hdr = NetHdr.unpack(data)
        assert hdr.flags == VIRTIO_NET_HDR_F_DATA_VALID
        payload = data[hdr_size:]
        for _ in range(hdr.num_buffers - 1):
            gpa, n = done.pop(0)
            payload += mem.read(gpa, n)
        received.append(payload)
    assert received == frames
    assert drv.num_free == 16 - 3


def test_package_facade_exports_the_public_names():
    for name in virtio.__all__:
        assert getattr(virtio, name) is not None, name
    assert virtio.QueueBroken is virtio.device_queue.QueueBroken is virtio.driver_queue.QueueBroken
