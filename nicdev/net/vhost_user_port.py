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

Link down/up (`set_link`): with `qmp` (the unix socket of a QMP monitor of
the guest's QEMU, `mnet vm --qmp PATH`) the guest is told through QMP
`set_link` on its NIC `qmp_device` and sees a carrier change. Without it
the guest is not told (our back-end has no config space of its own to
change): the switch just stops forwarding to and from the port, counted.

Device modes (`fault`, `set_fault`): the device misbehaves on purpose for
driver tests (nicdev.net.faults, docs/device-modes.md).
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
from .faults import Fault, parse_fault
from .polling import DEFAULT_POLL, PollMode
from .qmp_link import DEFAULT_QMP_DEVICE, QmpLinkNotifier

__all__ = ["VhostUserPort"]

log = logging.getLogger(__name__)


class VhostUserPort(Port):
    """`VhostUserPort(name, socket_path=None, *, offloads=True, poll=DEFAULT_POLL, datapath=None, qmp=None, qmp_device=DEFAULT_QMP_DEVICE, fault=None)`: a virtio-net device port.

    With no `socket_path` a private directory is made for the socket; the
    real path is in `socket_path` after construction. `offloads=False`
    offers the guest no checksum or segmentation offloads. `poll`: when to
    poll the guest's rings instead of waiting for its kicks. `datapath` ("c"
    or "python") picks the device's data path, by default MNET_DATAPATH's.
    `fault`: a device mode from the start (a `Fault`, or its text as in
    `fault=MODE`)."""

    kind = "vhost-user"
    takes_bursts = True
    takes_pooled_bursts = True

    def __init__(self, name: str, socket_path: str | None = None, *, offloads: bool = True,
                 poll: PollMode = DEFAULT_POLL, datapath: str | None = None, qmp: str | None = None,
                 qmp_device: str = DEFAULT_QMP_DEVICE, fault: Fault | str | None = None) -> None:
        super().__init__(name)
        self.qmp_link = QmpLinkNotifier(qmp, qmp_device) if qmp is not None else None
        self.link_notifier = self.qmp_link
        self.device = VirtioNetDevice(self.deliver, name=name, on_drop=self._count_drop, offloads=offloads,
                                      poll=poll, datapath=datapath, on_burst=self.deliver_burst,
                                      on_pooled=self.deliver_pooled, tracer=self.tracer)
        self._pooled_sink: Callable[[Port, PooledFrames], None] | None = None
        self.backend = self.device.make_backend(name)
        try:
            self.server = VhostUserServer(self.backend, socket_path, name=name)
        except SocketPathError as e:
            raise PortError(f"vhost-user port {name!r}: {e}") from e
        self.socket_path = self.server.path
        self._started = False
        if fault is not None:
            self.set_fault(fault)

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
        if not self.link_up:
            self.counters.rx_frames += frames.count
            self.counters.rx_bytes += frames.total_bytes
            self.count_link_down(frames.count, rx=True)
            return
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

    # -- device modes ------------------------------------------------------------
    @property
    def fault(self) -> str | None:
        """The device mode as `fault=` spells it, or None."""
        fault = self.device.fault
        return None if fault is None else str(fault)

    def set_fault(self, mode: Fault | str | None) -> None:
        """Set the device mode (`stall-tx`, `delay-used=50ms+reorder-used`...;
        None, "none" or "off" clears it and gives the driver back what the
        mode held). ValueError (one line) for a bad mode. Call on the loop's
        thread."""
        fault = parse_fault(mode) if isinstance(mode, str) else mode
        if fault is not None and not isinstance(fault, Fault):
            raise ValueError(f"a fault is a mode string or a Fault, not {type(mode).__name__}")
        self.device.set_fault(fault)
        log.info("%s: device mode %s", self.name, fault if fault is not None else "cleared")
        if self.tracer.on:
            self.tracer.emit("fault", None, None, mode=None if fault is None else str(fault))

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
        fault = f", device mode {self.fault}" if self.fault is not None else ""
        text = f"connected, {self.device.describe()}" + (", rings running" if running else "") + fault
        return text if self.link_up else text + ", link down"

