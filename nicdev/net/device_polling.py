"""A virtio-net device's rings polled from the event loop, by a `PollPolicy`.

While a poll runs, the guest's kicks are off on both rings (NO_NOTIFY, or
EVENT_IDX's avail_event put half the index space away:
`DeviceQueue.stop_notifications`) and each turn of the loop looks at the
rings itself: the transmit ring for new frames (drained by the device's own
`process_tx`), and, while frames wait for receive buffers, the receive ring
for buffers the guest posted (moved by the device's `_flush_backlog`). When the policy says stop, the transmit
ring's kicks go back on through `process_tx`, whose enable-then-recheck
closes the race with a guest that added buffers meanwhile (work found there
starts a new poll), and waiting frames ask for a receive kick the same way.

The device calls `traffic()` after a kick's drain and once per turn in which
frames went to the guest, `ring_started()` and `stop()`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from nicdev.virtio.ring import QueueBroken

from .polling import PollMode, PollPolicy

__all__ = ["DevicePoller", "PollCounters"]

log = logging.getLogger(__name__)


@dataclass
class PollCounters:
    polls: int = 0          # polls started (each ends when the rings stay idle for the budget)
    turns: int = 0          # poll turns of the event loop
    busy_turns: int = 0     # turns that found work

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class DevicePoller:
    """Polls `device`'s rings (a `VirtioNetDevice`) from `device.loop`."""

    def __init__(self, device, mode: PollMode) -> None:
        self.device = device
        self.policy = PollPolicy(mode)
        self.counters = PollCounters()
        self._rx_seen = 0

    @property
    def mode(self) -> PollMode:
        return self.policy.mode

    @property
    def polling(self) -> bool:
        return self.policy.polling

    # -- called by the device ----------------------------------------------------
    def ring_started(self) -> None:
        loop = self.device.loop
        if loop is None:
            return
        if self.policy.start_with_ring():
            self._begin()
        if self.policy.polling:
            # After the drain the device runs first on a started ring, which turns kicks on.
            loop.call_later(0, self._kicks_off_while_polling)

    def traffic(self) -> None:
        """Frames moved outside a poll: start one, or keep the kicks off
        that a drain during the poll turned back on."""
        loop = self.device.loop
        if loop is None or not self.policy.mode.polls:
            return
        if self.policy.traffic(loop.now()):
            self._begin()
        elif self.policy.polling:
            self._kicks_off()

    def stop(self) -> None:
        """The rings stop or reset: no poll any more (kicks are set up anew with the rings)."""
        self.policy.stop()
        if self.device.loop is not None:
            self.device.loop.remove_poller(self.poll)

    # -- the poll ------------------------------------------------------------------
    def _begin(self) -> None:
        self.counters.polls += 1
        self._rx_seen = self.device.counters.rx_frames
        self._kicks_off()
        self.device.loop.add_poller(self.poll)

    def _usable(self, ring) -> bool:
        return ring is not None and ring.queue is not None and not ring.broken and self.device.mem is not None

    def _kicks_off(self) -> None:
        device = self.device
        for ring in (device.tx, device.rx):
            if self._usable(ring):
                device._guarded(ring, lambda q: q.stop_notifications(device.mem))

    def _kicks_off_while_polling(self) -> None:
        if self.policy.polling:
            self._kicks_off()

    def poll(self) -> bool:
        """One turn: look at both rings; True = poll again (the loop's poller contract)."""
        device = self.device
        self.counters.turns += 1
        found = self._poll_tx() | self._poll_rx()
        rx_frames = device.counters.rx_frames
        if rx_frames != self._rx_seen:      # frames went to the guest since the last turn
            self._rx_seen = rx_frames
            found = True
        if found:
            self.counters.busy_turns += 1
        if not self.policy.after_poll(device.loop.now(), found):
            self._sleep()
        return self.policy.polling

    def _poll_tx(self) -> bool:
        device = self.device
        ring = device.tx
        if not self._usable(ring):
            return False
        try:
            if not ring.queue.avail_count(device.mem):
                return False
        except QueueBroken as e:
            device._break(ring, e.reason)
            return False
        return device.process_tx() > 0     # leaves the kicks off while we poll

    def _poll_rx(self) -> bool:
        device = self.device
        ring = device.rx
        if not device.datapath.rx_waiting or not self._usable(ring):
            return False
        try:
            if not ring.queue.avail_count(device.mem):
                return False
        except QueueBroken as e:
            device._break(ring, e.reason)
            return False
        device._flush_backlog()             # asks for a kick if buffers ran out:
        if self._usable(ring):
            device._guarded(ring, lambda q: q.stop_notifications(device.mem))     # not while polling
        return True

    def _sleep(self) -> None:
        """The poll ends: kicks back on, each with its re-check."""
        device = self.device
        if device.process_tx():             # the re-check found frames: poll on
            self.traffic()
        elif device.datapath.rx_waiting:
            device._flush_backlog()         # out of buffers: asks for a receive kick, re-checked

    def ring_stopping(self) -> None:
        """A ring stops: the poll ends, and the other ring gets its kicks back
        (re-checked, on the next turn: the stopping ring is gone by then)."""
        if not self.policy.polling:
            return
        self.stop()
        loop, device = self.device.loop, self.device
        loop.call_later(0, device.process_tx)      # each looks at its ring's state first
        loop.call_later(0, device._flush_backlog)
