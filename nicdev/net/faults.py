"""Misbehaving-device modes: a vhost-user port's device breaking the rules on purpose.

A driver test sets a mode on a port (`fault=MODE` in its port spec,
`VhostUserPort.set_fault(mode)` at run time) and watches what the driver
does. docs/device-modes.md says, for each mode, what the device does, what
a correct driver should do and what Linux's virtio_net and the stack's
driver did in our tests.

This module is the policy: the modes, their parsing (`parse_fault`, with a
one-line ValueError for bad input), and the pure rules the device applies
(`Fault.rx_used` for bad-rx-len's lie, `HeldUsed` for used entries that
delay-used and reorder-used hold back). The device (`nicdev.net.device`,
`nicdev.net.device_datapath`) asks its `Fault` once per burst.

Several modes may be set at once, joined by '+': `delay-used=20ms+reorder-used`.
"""
from __future__ import annotations

import collections
import re
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["FAULT_MODES", "Fault", "HeldUsed", "parse_fault", "MAX_DELAY_USED", "U32_MAX"]

# Mode -> what the device does (the value after '=' where the mode takes one).
FAULT_MODES: dict[str, str] = {
    "stall-tx": "take no TX chains and complete none: the driver's TX ring fills and stays full",
    "drop-calls": "send no used-buffer notification (interrupt) on either ring; clearing the mode sends "
                  "one on each ring",
    "delay-used": "delay-used=T: publish each used entry T (1ms..10s) after the device is done with its buffers",
    "bad-rx-len": "report every received frame's first buffer as one byte longer than that buffer",
    "reorder-used": "publish the used entries of each burst newest first",
    "starve-rx": "take no RX buffers: frames for the guest are dropped (fault_starve_rx)",
}

MAX_DELAY_USED = 10.0
_MIN_DELAY_USED = 1e-3
U32_MAX = 0xFFFF_FFFF
_DELAY_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Fault:
    """The modes set on one device (all off: no fault)."""

    stall_tx: bool = False
    drop_calls: bool = False
    delay_used: float = 0.0         # seconds; 0 = off
    bad_rx_len: bool = False
    reorder_used: bool = False
    starve_rx: bool = False

    def __str__(self) -> str:
        parts = []
        for name in FAULT_MODES:
            value = getattr(self, name.replace("-", "_"))
            if name == "delay-used" and value:
                parts.append(f"delay-used={_format_seconds(value)}")
            elif value is True:
                parts.append(name)
        return "+".join(parts) or "none"

    @property
    def holds_used(self) -> bool:
        """Used entries wait in a `HeldUsed` instead of going straight to the ring."""
        return self.delay_used > 0 or self.reorder_used

    @property
    def per_entry(self) -> bool:
        """The mode rewrites or holds single used entries, which the C kernels
        publish themselves: the device takes the Python data path meanwhile."""
        return self.holds_used or self.bad_rx_len

    def rx_used(self, used: list[tuple[int, int]], first_capacity: int) -> list[tuple[int, int]]:
        """One received frame's used entries as the device reports them.

        bad-rx-len: the first buffer's length becomes its capacity + 1 (the
        smallest lie that a driver trusting it would read past its buffer
        with; a 4 GiB buffer, which no driver posts, gets the u32 maximum)."""
        if not self.bad_rx_len or not used:
            return used
        head, _ = used[0]
        return [(head, min(first_capacity + 1, U32_MAX))] + used[1:]


def _format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{round(seconds * 1e6):g}us"
    if seconds < 1:
        return f"{round(seconds * 1e3, 3):g}ms"
    return f"{seconds:g}s"


def parse_fault(text: str) -> Fault | None:
    """`MODE[+MODE...]` as in `fault=MODE`; "none" or "off" is no fault (None).
    Raises ValueError with a one-line reason."""
    if not isinstance(text, str) or not text:
        raise ValueError("fault needs a mode: " + ", ".join(_mode_names()))
    if text in ("none", "off"):
        return None
    flags: dict = {}
    for part in text.split("+"):
        name, eq, value = part.partition("=")
        if name not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {name!r}; modes are " + ", ".join(_mode_names()))
        key = name.replace("-", "_")
        if key in flags:
            raise ValueError(f"fault mode {name!r} given twice")
        if name == "delay-used":
            flags[key] = _delay(value if eq else "")
        elif eq:
            raise ValueError(f"fault mode {name!r} takes no value")
        else:
            flags[key] = True
    return Fault(**flags)


def _mode_names() -> list[str]:
    return [name + ("=T" if name == "delay-used" else "") for name in FAULT_MODES]


def _delay(text: str) -> float:
    m = _DELAY_RE.fullmatch(text)
    if not m:
        raise ValueError(f"delay-used needs a time with a unit (delay-used=50ms, 500us, 1s), not {text!r}")
    seconds = round(float(m.group(1)) * _UNITS[m.group(2)], 9)
    if not _MIN_DELAY_USED <= seconds <= MAX_DELAY_USED:
        raise ValueError(f"delay-used must be from 1ms to {MAX_DELAY_USED:g}s, not {text!r}")
    return seconds


class HeldUsed:
    """Used entries held back by delay-used or reorder-used, per direction
    ("rx" or "tx"), each with the time it may go.

    A group is the used entries of one chain, or of one received frame over
    several buffers (they must stay together and in order). `due` hands back
    the groups whose time has come, oldest first, or newest first for
    reorder-used. Groups remember the queue they belong to: a ring set up
    again in the meantime has a new queue, and the old groups are forgotten
    (their buffers went back to the driver with the old ring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._waiting: dict[str, collections.deque] = {}

    def hold(self, direction: str, queue: object, group: list[tuple[int, int]], delay: float) -> None:
        self._waiting.setdefault(direction, collections.deque()).append((self._clock() + delay, queue, group))

    def held(self, direction: str) -> int:
        """Groups waiting in `direction`."""
        return len(self._waiting.get(direction, ()))

    def due(self, direction: str, queue: object, *, everything: bool = False,
            newest_first: bool = False) -> list[list[tuple[int, int]]]:
        """The groups now due (all of them with `everything`), taken out of
        the hold; those of a queue other than `queue` are dropped."""
        waiting = self._waiting.get(direction)
        if not waiting:
            return []
        now = self._clock()
        groups = []
        while waiting and (everything or waiting[0][0] <= now):
            _, owner, group = waiting.popleft()
            if owner is queue:
                groups.append(group)
        if newest_first:
            groups.reverse()
        return groups

    def next_release(self, direction: str) -> float | None:
        """Seconds until the next group is due (0 if one is), or None."""
        waiting = self._waiting.get(direction)
        if not waiting:
            return None
        return max(0.0, waiting[0][0] - self._clock())

    def forget(self, direction: str | None = None) -> int:
        """Drop what `direction` holds (both with None); how many groups."""
        keys = list(self._waiting) if direction is None else [direction]
        return sum(len(self._waiting.pop(k, ())) for k in keys)
