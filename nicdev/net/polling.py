"""When a port polls its guest's rings instead of waiting for kicks: the policy.

A guest's kick (an available-buffer notification) costs it a VM exit, and
under TCG an expensive one; it costs us a wake-up of the event loop. Like
Linux vhost's busy poll and NAPI, a port can instead poll the rings for a
while after traffic with the guest's kicks turned off, and turn them back on
(and sleep on the kick eventfd) only when the rings stay idle.

Three modes (`PollMode`, the port spec's `poll=` key):

- `off`: kick-driven, no polling.
- `adaptive` with a budget: after traffic (frames from or to the guest),
  poll until the rings have been idle for `budget` seconds, then sleep.
- `busy`: poll for as long as the rings run; never ask for kicks.

`PollPolicy` is the state machine, pure: it is told the time and whether the
last poll found work, and says whether to poll again or to arm
notifications and sleep. The glue that touches rings and the event loop is
`nicdev.net.device_polling`.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PollMode", "PollPolicy", "POLL_OFF", "POLL_BUSY", "DEFAULT_POLL", "MAX_POLL_BUDGET"]

MAX_POLL_BUDGET = 1.0       # seconds; polling idle rings longer than this is busy polling


@dataclass(frozen=True)
class PollMode:
    """`kind` is "off", "adaptive" or "busy"; `budget` (seconds) is the idle
    time an adaptive poll lasts, 0 for the other kinds."""

    kind: str
    budget: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("off", "adaptive", "busy"):
            raise ValueError(f"poll mode must be off, adaptive or busy, not {self.kind!r}")
        if self.kind == "adaptive":
            if not 0 < self.budget <= MAX_POLL_BUDGET:
                raise ValueError(f"adaptive poll budget must be more than 0 and at most {MAX_POLL_BUDGET:g} s")
        elif self.budget:
            raise ValueError(f"poll={self.kind} takes no budget")

    @classmethod
    def adaptive(cls, budget: float) -> "PollMode":
        return cls("adaptive", budget)

    @property
    def polls(self) -> bool:
        return self.kind != "off"

    def __str__(self) -> str:
        if self.kind != "adaptive":
            return self.kind
        us = round(self.budget * 1e6)
        return f"adaptive:{us // 1000}ms" if us % 1000 == 0 else f"adaptive:{us}us"


POLL_OFF = PollMode("off")
POLL_BUSY = PollMode("busy")
# Measured with two TCG guests (docs/benchmarks.md, "Polling"): see docs/switch.md for why.
DEFAULT_POLL = PollMode.adaptive(200e-6)


class PollPolicy:
    """Poll or sleep, for one port. Pure: the caller passes `now` (seconds, any
    monotonic clock).

    - `traffic(now)`: frames moved outside a poll (a kick's drain, frames
      delivered to the guest). True when polling should start now (the
      caller turns kicks off and starts polling); while polling, it extends
      the poll.
    - `after_poll(now, found_work)`: after each poll; True = poll again,
      False = stop: the caller arms notifications (closing the race with a
      re-check), and calls `traffic` again if the re-check found work.
    - `stop()`: forget the poll (the rings stopped).
    """

    def __init__(self, mode: PollMode) -> None:
        self.mode = mode
        self.polling = False
        self._deadline = 0.0

    def start_with_ring(self) -> bool:
        """The rings run: True if polling starts right away (busy mode)."""
        if self.mode.kind != "busy" or self.polling:
            return False
        self.polling = True
        return True

    def traffic(self, now: float) -> bool:
        if not self.mode.polls:
            return False
        self._deadline = now + self.mode.budget
        if self.polling:
            return False
        self.polling = True
        return True

    def after_poll(self, now: float, found_work: bool) -> bool:
        if not self.polling:
            return False
        if self.mode.kind == "busy":
            return True
        if found_work:
            self._deadline = now + self.mode.budget
            return True
        if now < self._deadline:
            return True
        self.polling = False
        return False

    def stop(self) -> None:
        self.polling = False
