"""A TapPort without a real TAP, for unit tests: its descriptor is one end
of a datagram socketpair (one read = one frame, as on a TAP), `kernel` the
other end, where the test plays the kernel."""
from __future__ import annotations

import os
import socket

from nicdev.net.tap_port import TapPort


class PairedTap(TapPort):
    """A TapPort (the defaults unless `kw` says otherwise) whose descriptor is
    one end of a datagram socketpair; `kernel` is the other end."""

    def __init__(self, name: str, **kw) -> None:
        super().__init__(name, "mnettest0", **kw)
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
