"""Frames with offload metadata crossing the switch: one contract, (frame,
meta) from port to switch to port; unchanged to ports that take them,
finished (once, at the egress) for the others, captured finished."""
from __future__ import annotations

import os
import struct

import pytest

from nicdev.net.loop import EventLoop
from nicdev.virtio.offload import DATA_VALID, GSO_ECN, GSO_TCPV4, FrameMeta
from nicdev.net.pcap_port import PcapPort
from nicdev.net.port import Port
from nicdev.net.switch import Switch

from support.offload_frames import DST_MAC, SRC_MAC, split_tcp4, tcp4_checksums_ok, tcp4_frame, udp4_frame

TSO = FrameMeta(True, 34, 16, False, GSO_TCPV4, 1448, 54)
PARTIAL_UDP = FrameMeta(True, 34, 6)


class OffloadPort(Port):
    """Records (frame, meta); takes partial checksums and `gso` kinds if told."""

    kind = "fake"

    def __init__(self, name, *, csum=False, gso=()):
        super().__init__(name)
        self.accepts_csum_partial = csum
        self.accepts_gso = frozenset(gso)
        self.sent = []

    def start(self, loop):
        pass

    def transmit(self, frame, meta=None):
        assert meta is None or self.accepts_csum_partial, "metadata went to a port that takes none"
        self.sent.append((frame, meta))
        self.counters.tx_frames += 1
        return True


class PlainPort(Port):
    """A port that takes no metadata: it only ever gets finished frames."""

    kind = "plain"

    def __init__(self, name):
        super().__init__(name)
        self.sent = []

    def start(self, loop):
        pass

    def transmit(self, frame, meta=None):
        assert meta is None, "metadata went to a port that takes none"
        self.sent.append(frame)
        return True


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def learn(port: Port, mac: bytes) -> None:
    port.deliver(b"\xff" * 6 + mac + b"\x08\x06" + bytes(28))


def test_gso_frame_goes_whole_to_a_port_that_takes_it(loop):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    dst = sw.add_port(OffloadPort("dst", csum=True, gso={GSO_TCPV4}))
    learn(dst, DST_MAC)
    frame = tcp4_frame(os.urandom(20000))
    src.deliver(frame, TSO)
    assert dst.sent == [(frame, TSO)]
    assert sw.counters.segmented == 0 and sw.counters.forwarded == 1


def test_gso_frame_is_segmented_for_ports_that_cannot_take_it(loop, tmp_path):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    csum_only = sw.add_port(OffloadPort("csum", csum=True))
    plain = sw.add_port(PlainPort("plain"))
    cap = sw.add_port(PcapPort("cap", str(tmp_path / "c.pcap")))
    payload = os.urandom(5000)
    frame = tcp4_frame(payload)                      # unknown destination: flooded
    src.deliver(frame, TSO)
    assert [m for _, m in csum_only.sent] == [DATA_VALID] * 4, "finished by us: DATA_VALID where it is taken"
    assert [f for f, _ in csum_only.sent] == plain.sent
    assert all(tcp4_checksums_ok(f) for f in plain.sent)
    assert b"".join(split_tcp4(f)[2] for f in plain.sent) == payload
    assert sw.counters.segmented == 1 and sw.counters.segments == 4, "segmented once for all three ports"
    assert cap.counters.tx_frames == 4, "the capture gets finished frames"
    cap.close()
    data = (tmp_path / "c.pcap").read_bytes()[24:]
    captured = []
    while data:
        caplen = struct.unpack_from("=I", data, 8)[0]
        captured.append(data[16:16 + caplen])
        data = data[16 + caplen:]
    assert captured == plain.sent
    assert "1 GSO frames cut into 4" in sw.summary()


def test_partial_checksum_is_completed_only_where_needed(loop):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    taker = sw.add_port(OffloadPort("taker", csum=True))
    plain = sw.add_port(PlainPort("plain"))
    frame = udp4_frame(b"finish me")
    src.deliver(frame, PARTIAL_UDP)
    assert taker.sent == [(frame, PARTIAL_UDP)]
    assert plain.sent == [udp4_frame(b"finish me", partial=False)]
    assert sw.counters.csum_completed == 1


def test_data_valid_alone_reaches_only_ports_that_take_metadata(loop):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    taker = sw.add_port(OffloadPort("taker", csum=True))
    plain = sw.add_port(PlainPort("plain"))
    frame = udp4_frame(b"ok", partial=False)
    src.deliver(frame, DATA_VALID)
    assert taker.sent == [(frame, DATA_VALID)] and plain.sent == [frame]
    assert sw.counters.csum_completed == 0


def test_ecn_gso_needs_a_port_that_takes_ecn(loop):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    no_ecn = sw.add_port(OffloadPort("no-ecn", csum=True, gso={GSO_TCPV4}))
    ecn = sw.add_port(OffloadPort("ecn", csum=True, gso={GSO_TCPV4, GSO_ECN}))
    meta = FrameMeta(True, 34, 16, False, GSO_TCPV4 | GSO_ECN, 1448, 54)
    frame = tcp4_frame(bytes(3000))
    src.deliver(frame, meta)
    assert ecn.sent == [(frame, meta)]
    assert len(no_ecn.sent) == 3 and all(m is DATA_VALID for _, m in no_ecn.sent)


def test_forwarded_gso_frame_is_captured_finished(loop, tmp_path):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    dst = sw.add_port(OffloadPort("dst", csum=True, gso={GSO_TCPV4}))
    cap = sw.add_port(PcapPort("cap", str(tmp_path / "c.pcap")))
    learn(dst, DST_MAC)
    learn(src, SRC_MAC)
    cap.counters.tx_frames = 0
    src.deliver(tcp4_frame(bytes(3000)), TSO)
    assert len(dst.sent) == 2 and cap.counters.tx_frames == 3     # 1 learning frame + 3 segments
    cap.close()


def test_metadata_that_cannot_be_honoured_is_malformed(loop):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    plain = sw.add_port(PlainPort("plain"))
    src.deliver(tcp4_frame(bytes(3000)), FrameMeta(True, 34, 16, False, GSO_TCPV4, 0))
    assert plain.sent == [] and sw.counters.malformed == 1
    assert src.counters.rx_dropped == 1 and src.counters.errors == {"gso_size_zero": 1}


def test_a_port_that_takes_no_metadata_gets_finished_frames(loop):
    # The ingress hands frames on as they came; the egress finishes them.
    sw = Switch(loop)
    port = sw.add_port(OffloadPort("p"))
    got = sw.add_port(PlainPort("plain")).sent
    port.deliver(tcp4_frame(bytes(3000)), TSO)
    port.deliver(udp4_frame(b"x"), PARTIAL_UDP)
    port.deliver(udp4_frame(b"y"), FrameMeta(True, 34, 600))
    assert len(got) == 4 and all(tcp4_checksums_ok(f) for f in got[:3])
    assert got[3] == udp4_frame(b"x", partial=False)
    assert port.counters.rx_dropped == 1 and port.counters.errors == {"bad_csum_offsets": 1}
    with_meta = sw.add_port(OffloadPort("taker", csum=True)).sent
    port.deliver(udp4_frame(b"x"), PARTIAL_UDP)
    assert with_meta == [(udp4_frame(b"x"), PARTIAL_UDP)]


def test_ports_deliver_frame_and_meta_to_one_sink_as_they_came():
    port = OffloadPort("p")
    got = []
    port.attach(lambda p, f, m: got.append((p, f, m)))
    port.deliver(udp4_frame(b"x"), PARTIAL_UDP)
    port.deliver(udp4_frame(b"y", partial=False))
    port.deliver(tcp4_frame(bytes(3000)), FrameMeta(True, 34, 16, False, GSO_TCPV4, 0))   # bad: not checked here
    assert got == [(port, udp4_frame(b"x"), PARTIAL_UDP), (port, udp4_frame(b"y", partial=False), None),
                   (port, tcp4_frame(bytes(3000)), FrameMeta(True, 34, 16, False, GSO_TCPV4, 0))]
    assert port.counters.rx_frames == 3 and port.counters.rx_dropped == 0


def test_flooded_to_two_ports_that_cannot_take_it_the_frame_is_finished_once(loop, monkeypatch):
    from nicdev.virtio import offload

    calls = []
    real_finish = offload.finish
    monkeypatch.setattr(offload, "finish", lambda f, m: calls.append(m) or real_finish(f, m))
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    a, b = sw.add_port(PlainPort("a")), sw.add_port(PlainPort("b"))
    csum = sw.add_port(OffloadPort("csum", csum=True))
    taker = sw.add_port(OffloadPort("taker", csum=True, gso={GSO_TCPV4}))
    frame = tcp4_frame(os.urandom(3000))
    src.deliver(frame, TSO)
    assert calls == [TSO], "finished once for all the ports that needed it"
    assert len(a.sent) == 3 and a.sent == b.sent == [f for f, _ in csum.sent]
    assert [m for _, m in csum.sent] == [DATA_VALID] * 3
    assert taker.sent == [(frame, TSO)], "a port that takes the metadata gets the frame unchanged"
    assert sw.counters.segmented == 1 and sw.counters.segments == 3
    calls.clear()
    src.deliver(udp4_frame(b"z"), PARTIAL_UDP)
    assert calls == [PARTIAL_UDP] and a.sent[-1] == b.sent[-1] == udp4_frame(b"z", partial=False)
    assert sw.counters.csum_completed == 1
    calls.clear()
    learn(taker, DST_MAC)
    src.deliver(frame, TSO)                           # forwarded: taker only, nothing to finish
    assert calls == [] and taker.sent[-1] == (frame, TSO)


def test_unusable_metadata_is_one_counted_drop_and_takers_still_get_the_frame(loop):
    sw = Switch(loop)
    src = sw.add_port(OffloadPort("src"))
    a, b = sw.add_port(PlainPort("a")), sw.add_port(PlainPort("b"))
    taker = sw.add_port(OffloadPort("taker", csum=True))
    bad = FrameMeta(True, 34, 600)                    # checksum field beyond the frame
    frame = udp4_frame(b"bad")
    src.deliver(frame, bad)
    assert a.sent == [] and b.sent == []
    assert taker.sent == [(frame, bad)], "a port that takes the metadata is the receiver's business"
    assert sw.counters.malformed == 1 and sw.counters.csum_completed == 0
    assert src.counters.rx_dropped == 1 and src.counters.errors == {"bad_csum_offsets": 1}
    src.deliver(udp4_frame(b"ok"), PARTIAL_UDP)      # the next frame is fine
    assert a.sent == b.sent == [udp4_frame(b"ok", partial=False)]
