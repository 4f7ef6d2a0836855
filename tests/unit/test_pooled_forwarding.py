"""Frames from one guest to another through two vhost-user ports, still in
C (`PooledFrames` through `Switch._on_pooled_burst`): the guests, the
switch's counters, the ports' and the devices' counters come out as on the
Python data path, frame by frame."""
import pytest

from nicdev.net.device import DEVICE_FEATURES
from nicdev.net.loop import EventLoop
from nicdev.net.switch import Switch
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES
from nicdev.virtio import kernels

from support.switch_ports import FakePort, RecordingPort
from support.vhost_user_guest import Frontend, GuestNic, GuestRam

pytestmark = pytest.mark.skipif(not kernels.use_c(), reason="MNET_DATAPATH=python: the C kernels are not loaded")

MAC_A, MAC_B, NOBODY = bytes.fromhex("020000000a0a"), bytes.fromhex("020000000b0b"), bytes.fromhex("02000000beef")


def frame(dst, src, n, fill):
    return dst + src + b"\x88\xb5" + bytes([fill]) * (n - 14)


class Guest:
    """A vhost-user port on the switch with a guest driver behind it."""

    def __init__(self, switch, name, tmp_path, datapath, queue_size=64):
        self.port = switch.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock"), datapath=datapath))
        self.ram = GuestRam()
        self.nic = GuestNic(self.ram, queue_size=queue_size)
        self.fe = Frontend(backend=self.port.backend)
        self.fe.connect(self.nic)
        self.fe.start(self.nic, DEVICE_FEATURES | 1 << F_PROTOCOL_FEATURES)

    def close(self):
        self.port.backend.reset()
        self.nic.close()
        self.ram.close()


def run(tmp_path, datapath, script, third_port=False, extra=()):
    loop = EventLoop()
    switch = Switch(loop)
    a, b = Guest(switch, "a", tmp_path / datapath, datapath), Guest(switch, "b", tmp_path / datapath, datapath)
    if third_port:
        switch.add_port(FakePort("c"))
    for port in extra:
        switch.add_port(port)
    try:
        received = script(a, b)
        return dict(received=received, switch=switch.counters.as_dict(),
                    ports=[vars(g.port.counters) for g in (a, b)],
                    devices=[g.port.device.counters.as_dict() for g in (a, b)],
                    broken=[g.port.device.broken for g in (a, b)])
    finally:
        for g in (a, b):
            g.close()
        switch.close()
        loop.close()


def both_paths(tmp_path, script, **kw):
    for d in ("python", "c"):
        (tmp_path / d).mkdir()
    python, c = (run(tmp_path, d, script, **kw) for d in ("python", "c"))
    assert c == python
    return c


def flood_then_forward(a, b):
    """A floods to an unknown MAC (B is the only other port), then B
    answers, then A sends to B's learned MAC; more than B has buffers for."""
    b.nic.post_rx(20)
    a.nic.post_rx(8)
    a.nic.send(*[frame(NOBODY, MAC_A, 60 + i, i) for i in range(10)])
    a.port.device.process_tx()
    b.nic.send(frame(MAC_A, MAC_B, 64, 0xBB))
    b.port.device.process_tx()
    a.nic.send(*[frame(MAC_B, MAC_A, 1514, i) for i in range(16)])
    a.port.device.process_tx()
    got_b = b.nic.received()
    b.nic.post_rx(16)
    b.port.device._flush_backlog()
    return [got_b, b.nic.received(), a.nic.received()]


def test_flood_forward_and_backlog_are_the_same_on_both_paths(tmp_path):
    result = both_paths(tmp_path, flood_then_forward)
    got_b, later_b, got_a = result["received"]
    assert len(got_b) == 20 and len(later_b) == 6 and len(got_a) == 1
    assert result["switch"]["flooded"] == 10 and result["switch"]["forwarded"] == 17


def test_a_third_port_takes_the_python_way_with_the_same_result(tmp_path):
    result = both_paths(tmp_path, flood_then_forward, third_port=True)
    assert result["switch"]["flooded"] == 10


def test_a_receiver_whose_ring_is_not_started_counts_drops(tmp_path):
    def script(a, b):
        b.port.backend.reset()          # B's guest went away
        a.nic.send(*[frame(NOBODY, MAC_A, 60, i) for i in range(5)])
        a.port.device.process_tx()
        return []
    result = both_paths(tmp_path, script)
    assert result["devices"][1]["drops"] == {"rx_ring_not_started": 5}


def test_the_pooled_path_is_taken(tmp_path, monkeypatch):
    (tmp_path / "c").mkdir()
    calls = []
    original = VhostUserPort.transmit_pooled

    def spy(self, frames, first, count):
        calls.append((self.name, first, count))
        return original(self, frames, first, count)
    monkeypatch.setattr(VhostUserPort, "transmit_pooled", spy)
    run(tmp_path, "c", flood_then_forward)
    assert calls == [("b", 0, 10), ("a", 0, 1), ("b", 0, 16)]


def test_a_burst_taking_port_gets_each_pooled_run_in_one_call(tmp_path, monkeypatch):
    """A floods to a vhost-user port and a TAP-like port that takes bursts,
    and a capture port records everything: the frames stay pooled for B,
    the other two get each run in one call, and the guests, the switch and
    the ports come out as on the Python data path."""
    results = {}
    for d in ("python", "c"):
        (tmp_path / d).mkdir()
        tap, cap = RecordingPort("tap", bursts=True), RecordingPort("cap", bursts=True, captures=True)
        calls = []
        original = VhostUserPort.transmit_pooled
        monkeypatch.setattr(VhostUserPort, "transmit_pooled",
                            lambda self, f, first, count: calls.append(count) or original(self, f, first, count))
        results[d] = run(tmp_path, d, flood_then_forward, extra=(tap, cap))
        results[d]["tap"] = [[f for f, _ in call] for call in tap.calls]
        results[d]["cap"] = [f for f, _ in cap.sent]
        results[d]["pooled_calls"] = calls
        monkeypatch.undo()
    c, python = results["c"], results["python"]
    assert [len(call) for call in c["tap"]] == [10]         # the flood; the rest is forwarded to B
    assert len(c["cap"]) == 10 + 1 + 16
    assert c["pooled_calls"] == [10, 1, 16] and python["pooled_calls"] == []
    for key in ("tap", "cap", "received", "switch", "ports", "devices", "broken"):
        assert c[key] == python[key], key


def test_gso_frames_between_guests_keep_their_header_in_one_kernel_call(tmp_path, monkeypatch):
    """TSO frames from A to B (both negotiated GSO) go through whole, their
    virtio-net header carried through, in one C call for the burst on the C
    path (`VhostUserPort.transmit_burst`), and come out as on the Python path."""
    from nicdev.virtio.device_burst import RxKernel
    from nicdev.virtio.net_hdr import VIRTIO_NET_HDR_F_NEEDS_CSUM, NetHdr
    from nicdev.virtio.offload import GSO_TCPV4
    from support.offload_frames import DST_MAC, tcp4_frame

    tcp = [tcp4_frame(bytes(range(256)) * 16, seq=1000 + 4096 * i) for i in range(3)]
    calls = []

    def script(a, b):
        b.nic.post_rx(16)
        a.nic.post_rx(4)
        b.nic.send(frame(MAC_A, DST_MAC, 64, 0xBB))          # the switch learns B behind DST_MAC
        b.port.device.process_tx()
        for name in ("put", "put_frames", "put_burst"):
            original = getattr(RxKernel, name)
            monkeypatch.setattr(RxKernel, name, lambda self, *a, _o=original, _n=name, **k:
                                calls.append(_n) or _o(self, *a, **k))
        a.nic.send(*tcp, hdr=NetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 0, 1448, 34, 16))
        a.port.device.process_tx()
        monkeypatch.undo()
        return [b.nic.received()]
    result = both_paths(tmp_path, script)
    assert result["received"] == [tcp]
    assert result["switch"]["segmented"] == 0 and result["devices"][1]["rx_gso"] == 3
    assert calls == ["put_frames"]           # the C run only: the Python path's calls are none
