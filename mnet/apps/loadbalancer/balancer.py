"""Which backend gets the next connection, and which backends are up: sans-IO.

The :class:`Balancer` sees events (a connection to a backend opened or
closed, a connection attempt or a health check that failed or passed) with
the time they happened, and answers with decisions: the backend to try
next, the health checks due now, and a :class:`Change` whenever a backend
goes up or down. It never touches a socket or a clock, so its rules are
tested on their own.

Rules:

- Only backends that are up are chosen. Every backend starts up.
- ``fall`` health checks failed in a row mark a backend down, ``rise``
  passed in a row mark it up again (both 1 by default: one check decides).
  A failed connection attempt for a client marks it down at once, whatever
  ``fall`` is: the client is already waiting, and the next one should not
  try a backend that just refused.
- round-robin: the backends in turn, skipping those that are down.
- least-conn: the backend with the fewest active connections (relayed, or
  being opened);
  among equals, the next one in turn, so idle backends share the load.
- Each backend is checked every ``check_interval`` seconds, one check at a
  time (the next is due ``check_interval`` after the last one started).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

POLICIES = ("round-robin", "least-conn")


@dataclass
class BackendState:
    """One backend: its health and its counters."""

    address: str
    up: bool = True
    reason: str = ""          # why it is down
    active: int = 0           # connections relayed to it or being opened, now
    connections: int = 0      # connections relayed to it in all
    failures: int = 0         # connection attempts and health checks that failed
    sent: int = 0             # bytes relayed from clients to it
    received: int = 0         # bytes relayed from it to clients
    checking: bool = False    # a health check is under way
    next_check: float = 0.0   # when the next check is due
    passed: int = 0           # health checks passed in a row (since the last failure)
    failed: int = 0           # health checks failed in a row (since the last pass)


@dataclass(frozen=True)
class Change:
    """Backend ``index`` went up or down (``reason``: why it went down)."""

    index: int
    address: str
    up: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"backend {self.address} is up" if self.up else f"backend {self.address} is down: {self.reason}"


class Balancer:
    """The backends of one load balancer, their health and the policy that picks one."""

    def __init__(self, addresses: Sequence[str], policy: str, check_interval: float, now: float,
                 rise: int = 1, fall: int = 1) -> None:
        if not addresses:
            raise ValueError("a load balancer needs at least one backend")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if not check_interval > 0:
            raise ValueError("the check interval must be > 0")
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.policy = policy
        self.check_interval = check_interval
        self.rise, self.fall = rise, fall
        self.backends = [BackendState(str(a), next_check=now) for a in addresses]
        self._turn = 0  # where the next round-robin search starts

    # -- choosing --------------------------------------------------------------------------
    def choose(self, exclude: Collection[int] = ()) -> int | None:
        """The backend for a new connection, none of ``exclude`` (those already tried for it);
        None when no backend is up."""
        n = len(self.backends)
        in_turn = [(self._turn + k) % n for k in range(n)]
        candidates = [i for i in in_turn if self.backends[i].up and i not in exclude]
        if not candidates:
            return None
        if self.policy == "least-conn":
            fewest = min(self.backends[i].active for i in candidates)
            candidates = [i for i in candidates if self.backends[i].active == fewest]
        chosen = candidates[0]
        self._turn = (chosen + 1) % n
        return chosen

    # -- connections -----------------------------------------------------------------------
    def opening(self, index: int) -> None:
        """A connection to backend ``index`` is being opened for a client: it counts as active
        from now on, so a burst of clients is spread before their connections complete."""
        self.backends[index].active += 1

    def connected(self, index: int) -> None:
        """The connection being opened to backend ``index`` is open, and relayed from now on."""
        self.backends[index].connections += 1

    def closed(self, index: int, sent: int, received: int) -> None:
        """A relayed connection ended after ``sent`` bytes to the backend and ``received`` from it."""
        b = self.backends[index]
        b.active -= 1
        b.sent += sent
        b.received += received

    def connect_failed(self, index: int, reason: str) -> Change | None:
        """The connection being opened to backend ``index`` failed (refused, timed out...)."""
        b = self.backends[index]
        b.active -= 1
        b.failures += 1
        b.passed = 0  # down now: it needs `rise` checks from here to come back
        return self._set(index, False, reason)

    # -- health checks ---------------------------------------------------------------------
    def checks_due(self, now: float) -> list[int]:
        """The backends to check now; each is then checked until :meth:`check_passed` or
        :meth:`check_failed` says how it went."""
        due = [i for i, b in enumerate(self.backends) if not b.checking and b.next_check <= now]
        for i in due:
            b = self.backends[i]
            b.checking = True
            b.next_check = now + self.check_interval
        return due

    def next_check_at(self) -> float | None:
        """When the next check is due (None while every backend is being checked)."""
        waiting = [b.next_check for b in self.backends if not b.checking]
        return min(waiting) if waiting else None

    def check_passed(self, index: int) -> Change | None:
        """A health check of backend ``index`` passed: up once ``rise`` have passed in a row."""
        b = self.backends[index]
        b.checking = False
        b.passed += 1
        b.failed = 0
        return self._set(index, True, "") if b.passed >= self.rise else None

    def check_failed(self, index: int, reason: str) -> Change | None:
        """A health check of backend ``index`` failed: down once ``fall`` have failed in a row."""
        b = self.backends[index]
        b.checking = False
        b.failures += 1
        b.failed += 1
        b.passed = 0
        return self._set(index, False, reason) if b.failed >= self.fall else None

    def _set(self, index: int, up: bool, reason: str) -> Change | None:
        b = self.backends[index]
        if b.up == up:
            return None
        b.up, b.reason = up, reason
        return Change(index, b.address, up, reason)

    # -- what it looks like ----------------------------------------------------------------
    def table(self) -> str:
        """One line per backend: state, active and total connections, failures, bytes each way."""
        rows = [("backend", "state", "active", "connections", "failures", "sent", "received")]
        rows += [(b.address, "up" if b.up else "down", str(b.active), str(b.connections), str(b.failures),
                  str(b.sent), str(b.received)) for b in self.backends]
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
