"""The ARP cache (neighbour table), sans-IO.

Maps next-hop IPv4 addresses to MAC addresses. An address being resolved has
an *incomplete* entry with a small queue of packets waiting for the answer;
a request is sent at once and retried (``tries`` times, ``retry_interval``
apart); when the last one goes unanswered the entry fails and the waiting
packets are handed back so their senders can be told (EHOSTUNREACH). Resolved
entries age out after ``reachable_time`` and are then resolved again.

An entry still in use is refreshed before it ages out, by RFC 1122 2.3.2.1's
"unicast poll": the first lookup in its last ``tries * retry_interval``
seconds sends a request to the known MAC (retried like any request) while
packets keep going to that MAC. The answer renews the entry, so a live flow
never finds its neighbour gone and its packets queued behind a new broadcast
request; an entry nobody answers for ages out as before.

The cache stores the waiting packets as opaque items; it never builds a
frame. Time is passed in; ``poll_at()`` says when ``poll()`` next has work.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from stack.wire import MacAddress

__all__ = ["ArpCache", "ArpPollResult", "Neighbour"]


@dataclass
class _Entry:
    mac: MacAddress | None = None  # None while incomplete
    expires: float = 0.0  # resolved entries: when they age out
    tries: int = 0  # requests sent so far (incomplete entries, or probes of a refreshing one)
    next_try: float = 0.0  # when to send the next request / give up
    refreshing: bool = False  # resolved, in use near its end: unicast probes are out
    queue: deque = field(default_factory=deque)


@dataclass
class ArpPollResult:
    """What ``ArpCache.poll`` wants done."""

    requests: list[IPv4Address] = field(default_factory=list)  # send a request for each
    probes: list[tuple[IPv4Address, MacAddress]] = field(default_factory=list)  # a request to that MAC only
    failed: list[tuple[IPv4Address, list[Any]]] = field(default_factory=list)  # unresolved + their packets


@dataclass(frozen=True)
class Neighbour:
    """One entry of the table as ``ip neigh`` shows it (plain data).

    ``state``: ``INCOMPLETE`` (being resolved), ``REACHABLE`` (resolved) or
    ``PROBE`` (resolved, in use near its end: unicast probes are out).
    ``confirmed`` says how many seconds ago the last answer came (None while
    incomplete), ``expires_in`` when a resolved entry ages out; ``queued`` are
    the packets waiting for the answer, ``tries`` the requests sent so far."""

    ip: IPv4Address
    mac: MacAddress | None
    state: str
    confirmed: float | None
    expires_in: float | None
    queued: int
    tries: int


class ArpCache:
    """Neighbour table with request retries, ageing and bounded queues."""

    def __init__(
        self,
        *,
        tries: int = 3,
        retry_interval: float = 1.0,
        reachable_time: float = 60.0,
        queue_len: int = 100,  # about Linux's unres_qlen_bytes worth of full frames
        max_entries: int = 256,
    ) -> None:
        if tries < 1 or retry_interval <= 0 or reachable_time <= 0 or queue_len < 1 or max_entries < 1:
            raise ValueError("ARP cache parameters must be positive")
        self.tries = tries
        self.retry_interval = retry_interval
        self.reachable_time = reachable_time
        self.queue_len = queue_len
        self.max_entries = max_entries
        self._entries: dict[IPv4Address, _Entry] = {}

    # -- queries --------------------------------------------------------------
    def lookup(self, ip: IPv4Address, now: float) -> MacAddress | None:
        """The MAC address for ``ip`` if resolved and not aged out (a use: near its end the
        entry starts refreshing itself, see the module doc)."""
        entry = self._entries.get(ip)
        if entry is None or entry.mac is None:
            return None
        if now >= entry.expires:
            del self._entries[ip]
            return None
        if not entry.refreshing and now >= entry.expires - self.tries * self.retry_interval:
            entry.refreshing = True
            entry.tries = 0
            entry.next_try = now  # the first probe goes out on the next poll
        return entry.mac

    def is_pending(self, ip: IPv4Address) -> bool:
        entry = self._entries.get(ip)
        return entry is not None and entry.mac is None

    def entries(self, now: float) -> dict[IPv4Address, MacAddress | None]:
        """A snapshot: resolved entries with their MAC, incomplete ones with None."""
        return {ip: e.mac for ip, e in self._entries.items() if e.mac is None or now < e.expires}

    def neighbours(self, now: float) -> list[Neighbour]:
        """Every live entry with its state and age, sorted by address (read only)."""
        rows = []
        for ip, e in sorted(self._entries.items()):
            if e.mac is None:
                rows.append(Neighbour(ip, None, "INCOMPLETE", None, None, len(e.queue), e.tries))
            elif now < e.expires:
                rows.append(Neighbour(ip, e.mac, "PROBE" if e.refreshing else "REACHABLE",
                                      now - (e.expires - self.reachable_time), e.expires - now, 0, e.tries))
        return rows

    # -- changes --------------------------------------------------------------
    def enqueue(self, ip: IPv4Address, item: Any, now: float) -> list[Any]:
        """Queue ``item`` until ``ip`` is resolved; start resolving if needed.

        Returns the items dropped to make room (the oldest one when the
        queue is full, or ``item`` itself when the table is full of
        addresses still being resolved).
        """
        entry = self._entries.get(ip)
        if entry is not None and entry.mac is not None and now >= entry.expires:
            del self._entries[ip]
            entry = None
        if entry is None:
            if not self._make_room(now):
                return [item]
            entry = _Entry(next_try=now)  # first request goes out on the next poll
            self._entries[ip] = entry
        elif entry.mac is not None:
            raise ValueError(f"{ip} is already resolved; send instead of queueing")
        dropped = []
        if len(entry.queue) >= self.queue_len:
            dropped.append(entry.queue.popleft())
        entry.queue.append(item)
        return dropped

    def learn(self, ip: IPv4Address, mac: MacAddress, now: float, *, create: bool) -> list[Any]:
        """Record ``ip`` at ``mac`` (from an ARP packet); return released items.

        RFC 826: an existing entry is always updated; a new one is made only
        when ``create`` (the packet was meant for us).
        """
        entry = self._entries.get(ip)
        if entry is None:
            if not create or not self._make_room(now):
                return []
            entry = _Entry()
            self._entries[ip] = entry
        entry.mac = mac
        entry.expires = now + self.reachable_time
        entry.tries = 0
        entry.refreshing = False
        released = list(entry.queue)
        entry.queue.clear()
        return released

    def forget(self, ip: IPv4Address) -> list[Any]:
        """Remove an entry; return whatever was waiting on it."""
        entry = self._entries.pop(ip, None)
        return list(entry.queue) if entry is not None else []

    # -- time -----------------------------------------------------------------
    def poll(self, now: float) -> ArpPollResult:
        """Send due requests and refresh probes, fail entries that ran out of tries."""
        result = ArpPollResult()
        for ip, entry in list(self._entries.items()):
            if entry.mac is not None:
                if entry.refreshing and now >= entry.next_try and now < entry.expires:
                    self._probe(ip, entry, now, result)
                continue
            if now < entry.next_try:
                continue
            if entry.tries >= self.tries:
                del self._entries[ip]
                result.failed.append((ip, list(entry.queue)))
                continue
            entry.tries += 1
            entry.next_try = now + self.retry_interval
            result.requests.append(ip)
        return result

    def _probe(self, ip: IPv4Address, entry: _Entry, now: float, result: ArpPollResult) -> None:
        """A refreshing entry's next unicast probe; after ``tries`` it simply ages out."""
        if entry.tries >= self.tries:
            entry.next_try = entry.expires  # no more probes (poll_at: nothing before it is gone)
            return
        entry.tries += 1
        entry.next_try = now + self.retry_interval
        result.probes.append((ip, entry.mac))

    def poll_at(self) -> float | None:
        """When ``poll`` next has something to do (None: nothing pending)."""
        times = [
            e.next_try for e in self._entries.values()
            if e.mac is None or (e.refreshing and e.tries < self.tries)
        ]
        return min(times) if times else None

    def _make_room(self, now: float) -> bool:
        """Keep the table bounded: evict aged-out, then oldest resolved entries."""
        if len(self._entries) < self.max_entries:
            return True
        for ip in [ip for ip, e in self._entries.items() if e.mac is not None and now >= e.expires]:
            del self._entries[ip]
        if len(self._entries) < self.max_entries:
            return True
        resolved = [(e.expires, ip) for ip, e in self._entries.items() if e.mac is not None]
        if not resolved:
            return False  # everything is mid-resolution: refuse rather than fail them
        del self._entries[min(resolved)[1]]
        return True
