"""A bounded wait inside a running guest: poll a shell condition there.

The loop runs in the guest (busybox `usleep`), so a wait costs one round
trip on the command channel, not one per poll.
"""
from __future__ import annotations

from .errors import GuestTimeout

POLL_SECONDS = 0.2


def wait_in_guest(vm, condition: str, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll the shell `condition` in `vm` (anything with `.name` and `.run(command,
    timeout)`) every 0.2 s; GuestTimeout naming `what` if not true within `timeout`."""
    steps = int(timeout / POLL_SECONDS)
    r = vm.run(f"i=0; until {condition}; do i=$((i+1)); [ $i -gt {steps} ] && exit 1; "
               f"usleep {int(POLL_SECONDS * 1_000_000)}; done", timeout=timeout + 15)
    if r.status != 0:
        raise GuestTimeout(f"{vm.name}: {what} not reached within {timeout:.0f} s ({condition})")
