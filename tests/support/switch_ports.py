"""Frames and a fake port for the switch tests: the port records what the switch sends it."""
from __future__ import annotations

from nicdev.net.port import Port

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
