"""Frames and fake ports for the switch tests: the ports record what the switch sends them."""
from __future__ import annotations

from nicdev.net.port import Port
from nicdev.virtio.offload import GSO_TCPV4

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46) -> bytes:
    return dst + src + b"\x08\x00" + payload


class FakePort(Port):
    kind = "fake"

    def __init__(self, name: str, *, fail: bool = False) -> None:
        super().__init__(name)
        self.sent: list[bytes] = []
        self.fail = fail
        self.started_with = None
        self.closed = False

    def start(self, loop) -> None:
        self.started_with = loop

    def transmit(self, frame: bytes, meta=None) -> bool:
        if self.fail:
            raise RuntimeError("peer exploded")
        self.sent.append(frame)
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(frame)
        return True

    def close(self) -> None:
        self.closed = True


class RecordingPort(Port):
    """Records (frame, meta) per transmit, and each transmit_burst call if it takes bursts."""

    kind = "rec"

    def __init__(self, name, *, bursts=False, gso=False, fail=False, captures=False):
        super().__init__(name)
        self.takes_bursts = bursts
        self.accepts_csum_partial = gso
        self.accepts_gso = frozenset({GSO_TCPV4}) if gso else frozenset()
        self.captures_all = captures
        self.fail = fail
        self.sent = []
        self.calls = []

    def start(self, loop):
        pass

    def transmit(self, frame, meta=None):
        if self.fail:
            raise RuntimeError("peer exploded")
        self.sent.append((frame, meta))
        self.counters.tx_frames += 1
        return True

    def transmit_burst(self, items):
        if self.fail:
            raise RuntimeError("peer exploded")
        self.calls.append(list(items))
        self.sent.extend(items)
        self.counters.tx_frames += len(items)
        return len(items)
