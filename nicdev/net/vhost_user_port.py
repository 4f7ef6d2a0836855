"""A switch port that is a virtio-net device behind a vhost-user socket.

QEMU (or DPDK's virtio-user, or our own stack) connects to `socket_path` as
the front-end. Frames the switch sends out of this port go into the guest's
receive ring; frames the guest transmits come into the switch.

Offloads follow what the guest negotiated: its partial-checksum and GSO
frames enter the switch with their metadata (the device hands the port's
`deliver` each `(frame, meta)`), and the port takes such frames
(`accepts_csum_partial`, `accepts_gso`) when the guest negotiated
GUEST_CSUM and GUEST_TSO4/6 (and GUEST_ECN for ECN-marked ones).

`poll` (a `nicdev.net.polling.PollMode`) says whether the device polls the
guest's rings after traffic with its kicks off (docs/switch.md, "Polling").

Bursts: the guest's transmit ring is drained in bursts, and each burst
reaches the switch at once (`deliver_burst`). With the C data path a burst
of finished frames stays in the device's pool (`PooledFrames`): the switch
(`attach_pooled`) looks its MAC addresses up per run of frames and, when
they all go to another vhost-user port, hands it the burst
(`transmit_pooled`), which copies them from the pool into its guest's
receive buffers in C: one copy, no Python object per frame. Frames from
other ports (a TAP, a socket), and offloaded frames from another guest,
come as one `transmit_burst` per burst: one C call per run of frames, with
their virtio-net headers (partial checksum, GSO) carried through.
"""
from __future__ import annotations

import logging
from typing import Callable

from nicdev.vhost_user.server import SocketPathError, VhostUserServer

from .errors import PortError
from nicdev.virtio.device_burst import PooledFrames
from nicdev.virtio.offload import FrameMeta
from .port import Port
from .device import VirtioNetDevice
from .polling import DEFAULT_POLL, PollMode

__all__ = ["VhostUserPort"]

log = logging.getLogger(__name__)


class VhostUserPort(Port):
    """`VhostUserPort(name, socket_path=None, *, offloads=True, poll=DEFAULT_POLL, datapath=None)`: a virtio-net device port.

    With no `socket_path` a private directory is made for the socket; the
    real path is in `socket_path` after construction. `offloads=False`
    offers the guest no checksum or segmentation offloads. `poll`: when to
    poll the guest's rings instead of waiting for its kicks. `datapath` ("c"
    or "python") picks the device's data path, by default MNET_DATAPATH's."""

    kind = "vhost-user"
    takes_bursts = True
    takes_pooled_bursts = True

    def __init__(self, name: str, socket_path: str | None = None, *, offloads: bool = True,
                 poll: PollMode = DEFAULT_POLL, datapath: str | None = None) -> None:
        super().__init__(name)
        self.device = VirtioNetDevice(self.deliver, name=name, on_drop=self._count_drop, offloads=offloads,
                                      poll=poll, datapath=datapath, on_burst=self.deliver_burst,
                                      on_pooled=self.deliver_pooled)
        self._pooled_sink: Callable[[Port, PooledFrames], None] | None = None
        self.backend = self.device.make_backend(name)
        try:
            self.server = VhostUserServer(self.backend, socket_path, name=name)
        except SocketPathError as e:
            raise PortError(f"vhost-user port {name!r}: {e}") from e
        self.socket_path = self.server.path
        self._started = False

    # -- life cycle ------------------------------------------------------------
    def start(self, loop) -> None:
        """Listen on the socket; raises PortError (from a SocketPathError or
        SocketInUseError: "socket path in use") if the path cannot be used."""
        self.device.attach_loop(loop)
        try:
            self.server.start(loop)
        except SocketPathError as e:
            raise PortError(f"vhost-user port {self.name!r}: {e}") from e
        self._started = True

    def close(self) -> None:
        self.server.close()

    # -- data path ---------------------------------------------------------------
    @property
    def accepts_csum_partial(self) -> bool:
        return self.device.datapath.guest_csum

    @property
    def accepts_gso(self) -> frozenset:
        return self.device.datapath.rx_gso

    def attach_pooled(self, sink: Callable[[Port, PooledFrames], None] | None) -> None:
        """Send bursts still in the C pool to `sink(port, frames)` (the switch)."""
        self._pooled_sink = sink

    def deliver_pooled(self, frames: PooledFrames) -> None:
        """A burst of finished frames from the guest, still in the C pool."""
        sink = self._pooled_sink if self._sink is not None else None
        if sink is None:
            self.deliver_burst(frames.items())
            return
        self.counters.rx_frames += frames.count
        self.counters.rx_bytes += frames.total_bytes
        sink(self, frames)

    def transmit_pooled(self, frames: PooledFrames, first: int, count: int) -> int:
        """Frames first..first+count of another port's pooled burst to the
        guest; returns how many were taken (the rest are counted drops)."""
        taken, nbytes = self.device.receive_pooled(frames, first, count)
        self.counters.tx_frames += taken
        self.counters.tx_bytes += nbytes
        return taken

    def transmit_burst(self, items) -> int:
        """`(frame, meta)` pairs to the guest in order: on the C data path one
        C call per run of frames (offload headers carried through), not one
        per frame. Returns how many were taken (the rest are counted drops)."""
        taken, nbytes = self.device.receive_burst(items if type(items) is list else list(items))
        self.counters.tx_frames += taken
        self.counters.tx_bytes += nbytes
        return taken

    def transmit(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        if not self.device.receive(frame, meta):
            return False            # counted by _count_drop
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(frame)
        return True

    def _count_drop(self, direction: str, reason: str) -> None:
        # The device names directions from the guest's side: its "rx" is our tx.
        if direction == "rx":
            self.counters.tx_dropped += 1
        else:
            self.counters.rx_dropped += 1
        self.counters.count_error(reason)

    # -- status ------------------------------------------------------------------
    @property
    def status(self) -> str:
        if not self._started:
            return f"not started (socket {self.socket_path})"
        broken = self.device.broken
        if broken:
            return f"broken: {broken}"
        if not self.server.connected:
            last = f" (last: {self.server.last_disconnect})" if self.server.last_disconnect else ""
            return f"waiting for frontend on {self.socket_path}{last}"
        rx, tx = self.device.rx, self.device.tx
        running = all(r is not None and r.started and r.enabled for r in (rx, tx))
        return f"connected, {self.device.describe()}" + (", rings running" if running else "")

