"""TapPort's virtio header handling with offloads, without a real TAP: the
port's descriptor is one end of a datagram socketpair (one read = one frame,
as on a TAP), the test plays the kernel at the other end."""
from __future__ import annotations

import os
import socket

import pytest

from nicdev.net.egress import EgressFrame
from nicdev.net.errors import PortError
from nicdev.net.port import Port
from nicdev.virtio.offload import DATA_VALID, GSO_ECN, GSO_TCPV4, GSO_TCPV6, FrameMeta
from nicdev.net.tap_port import VNET_HDR_LEN, TapPort
from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, NetHdr

from support.offload_frames import split_tcp4, tcp4_checksums_ok, tcp4_frame, udp4_frame

TSO_HDR = NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16)


@pytest.fixture
def tap():
    """(port, kernel socket, frames the switch got)"""
    port = TapPort("host", "mnettest0", vnet_hdr=True)
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    port._fd = os.dup(ours.fileno())
    ours.close()
    got = []
    port.attach(lambda p, frame, meta: got.append((frame, meta)))
    yield port, kernel, got
    os.close(port._fd)
    kernel.close()


def from_kernel(tap, hdr: NetHdr | bytes, frame: bytes) -> None:
    port, kernel, _ = tap
    kernel.send((hdr.pack(VNET_HDR_LEN) if isinstance(hdr, NetHdr) else hdr) + frame)
    port._on_readable()


def test_a_vnet_hdr_tap_declares_what_the_kernel_takes():
    port = TapPort("host", "mnettest0", vnet_hdr=True)
    assert port.offloads and port.accepts_csum_partial and port.accepts_gso == {GSO_TCPV4, GSO_TCPV6, GSO_ECN}
    plain = TapPort("host", "mnettest0", vnet_hdr=False)
    assert not plain.offloads and not plain.accepts_csum_partial and not plain.accepts_gso
    assert not TapPort("host", "mnettest0", vnet_hdr=True, offloads=False).offloads
    with pytest.raises(PortError, match="offloads need vnet_hdr"):
        TapPort("host", "mnettest0", vnet_hdr=False, offloads=True)


def test_header_and_offloads_are_the_default():
    port = TapPort("host", "mnettest0")
    assert port.vnet_hdr and port.offloads
    assert port.accepts_csum_partial and port.accepts_gso == {GSO_TCPV4, GSO_TCPV6, GSO_ECN}


def test_kernel_frames_come_with_their_metadata(tap):
    _, _, got = tap
    tso = tcp4_frame(bytes(5000))
    from_kernel(tap, TSO_HDR, tso)
    from_kernel(tap, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6), udp4_frame(b"p"))
    from_kernel(tap, NetHdr(VIRTIO_NET_HDR_F_DATA_VALID), udp4_frame(b"v", partial=False))
    from_kernel(tap, NetHdr(), udp4_frame(b"plain", partial=False))
    assert got == [
        (tso, FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)),
        (udp4_frame(b"p"), FrameMeta(True, 34, 6)),
        (udp4_frame(b"v", partial=False), DATA_VALID),
        (udp4_frame(b"plain", partial=False), None),
    ]


def test_bad_headers_from_the_kernel_are_counted_drops(tap):
    port, _, got = tap
    from_kernel(tap, b"\x01\x00", b"")                                        # shorter than the header
    from_kernel(tap, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 500, 6), udp4_frame(b"x"))
    from_kernel(tap, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 0, 34, 16), tcp4_frame(bytes(3000)))
    from_kernel(tap, TSO_HDR, udp4_frame(bytes(3000)))
    from_kernel(tap, NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 3, 0, 1000, 34, 6), udp4_frame(bytes(3000)))  # UFO
    assert got == []
    assert port.counters.rx_dropped == 5
    assert port.counters.errors == {"short vnet header": 1, "bad_csum_offsets": 1, "gso_size_zero": 1,
                                    "gso_headers": 1, "gso_unsupported": 1}


def test_frames_to_the_kernel_carry_their_header(tap):
    port, kernel, _ = tap
    tso = tcp4_frame(bytes(5000))
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)
    assert port.transmit(tso, meta) and port.transmit(b"\x02" * 60) and port.transmit(udp4_frame(b"v"), DATA_VALID)
    first, second, third = kernel.recv(70000), kernel.recv(70000), kernel.recv(70000)
    assert NetHdr.unpack(first) == NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16)
    assert first[VNET_HDR_LEN:] == tso
    assert second == bytes(VNET_HDR_LEN) + b"\x02" * 60
    assert NetHdr.unpack(third).flags == VIRTIO_NET_HDR_F_DATA_VALID
    assert port.counters.tx_frames == 3


def test_the_kernels_tso_is_segmented_at_an_egress_that_takes_no_metadata(tap):
    port, _, _ = tap
    plain = []
    port.attach(lambda p, frame, meta: plain.extend(f for f, _ in EgressFrame(frame, meta).for_egress(False, ())))
    from_kernel(tap, TSO_HDR, tcp4_frame(bytes(3000)))
    assert len(plain) == 3 and all(tcp4_checksums_ok(f) for f in plain)
    assert sum(len(split_tcp4(f)[2]) for f in plain) == 3000


class PairedTap(TapPort):
    """A default TapPort (no arguments but its names) whose descriptor is one
    end of a datagram socketpair; `kernel` is the other end."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "mnettest0")
        ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        self._pair_fd = os.dup(ours.fileno())
        ours.close()

    def start(self, loop) -> None:
        self._fd, self._loop = self._pair_fd, loop
        loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        super().close()
        self.kernel.close()


class FinishedOnly(Port):
    """A port that takes no metadata (as a stream or dgram port)."""

    kind = "plain"

    def __init__(self, name):
        super().__init__(name)
        self.sent = []

    def start(self, loop):
        pass

    def transmit(self, frame, meta=None):
        assert meta is None
        self.sent.append(frame)
        return True


def test_default_taps_carry_gso_frames_both_ways_through_the_switch():
    from nicdev.net.loop import EventLoop
    from nicdev.net.switch import Switch

    loop = EventLoop()
    switch = Switch(loop)
    try:
        a, b = switch.add_port(PairedTap("a")), switch.add_port(PairedTap("b"))
        plain = switch.add_port(FinishedOnly("plain"))
        a_to_b = tcp4_frame(bytes(5000))                      # DST_MAC <- SRC_MAC
        b_to_a = a_to_b[6:12] + a_to_b[0:6] + a_to_b[12:]
        for sender, receiver, frame in ((a, b, a_to_b), (b, a, b_to_a)):
            sender.kernel.send(TSO_HDR.pack(VNET_HDR_LEN) + frame)
            receiver.kernel.setblocking(False)
            got = []

            def arrived():
                try:
                    got.append(receiver.kernel.recv(70000))
                except BlockingIOError:
                    pass
                return got

            loop.run(until=arrived, timeout=5)
            # one 5000-byte TCP frame out of the other TAP, with its GSO header
            assert got == [NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16).pack(VNET_HDR_LEN)
                           + frame]
        # The port that takes no metadata got the first one (flooded) cut into
        # segments; the second was forwarded to a's learned address only.
        assert len(plain.sent) == 4 and all(tcp4_checksums_ok(f) for f in plain.sent)
        assert switch.counters.segmented == 1 and a.counters.tx_frames == b.counters.tx_frames == 1
    finally:
        switch.close()
        loop.close()
