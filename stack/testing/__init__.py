"""Test helpers: two sans-IO interfaces joined by a fake wire and a fake clock.

Like h11's ConnectionPair: nothing runs by itself; ``exchange()`` passes
frames back and forth until both sides are quiet, ``advance(dt)`` moves time.
Every frame that crossed is kept (``a_sent``/``b_sent``) for the test to read.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from stack.iface import Interface
from stack.drivers import NO_RX_META
from stack.wire import EthernetRepr, MacAddress

__all__ = ["Link", "MAC_A", "MAC_B", "IP_A", "IP_B"]

MAC_A = MacAddress("02:00:00:00:00:0a")
MAC_B = MacAddress("02:00:00:00:00:0b")
IP_A = IPv4Address("10.0.0.1")
IP_B = IPv4Address("10.0.0.2")


class Link:
    """Interfaces ``a`` (10.0.0.1/24) and ``b`` (10.0.0.2/24) on one fake wire."""

    def __init__(self, a_kwargs=None, b_kwargs=None, b_connected=True) -> None:
        self.now = 0.0
        self.a = Interface(MAC_A, ["10.0.0.1/24"], **(a_kwargs or {}))
        self.b = Interface(MAC_B, ["10.0.0.2/24"], **(b_kwargs or {}))
        self.b_connected = b_connected  # False: frames from a vanish (nobody home)
        self.a_sent: list[bytes] = []
        self.b_sent: list[bytes] = []
        self.a_filter = None  # callable(frames) -> frames, to lose/reorder a's output

    def exchange(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            fa = [f for f, _ in self.a.poll(self.now)]
            fb = [f for f, _ in self.b.poll(self.now)]
            if not fa and not fb and not self._due(self.a) and not self._due(self.b):
                return
            self.a_sent += fa
            self.b_sent += fb
            if self.a_filter is not None:
                fa = self.a_filter(fa)
            if self.b_connected:
                for f in fa:
                    self.b.receive_frame(f, self.now, NO_RX_META)
                for f in fb:
                    self.a.receive_frame(f, self.now, NO_RX_META)
        raise AssertionError("the two interfaces never went quiet")

    def _due(self, iface: Interface) -> bool:
        at = iface.poll_at()
        return at is not None and at <= self.now

    def advance(self, dt: float) -> None:
        self.now += dt
        self.exchange()

    def take_a(self) -> list[tuple[EthernetRepr, bytes]]:
        """Frames a sent since the last call, parsed at the Ethernet level."""
        out = [EthernetRepr.parse(f) for f in self.a_sent]
        self.a_sent = []
        return [(eth, bytes(p)) for eth, p in out]

    def take_b(self) -> list[tuple[EthernetRepr, bytes]]:
        out = [EthernetRepr.parse(f) for f in self.b_sent]
        self.b_sent = []
        return [(eth, bytes(p)) for eth, p in out]
