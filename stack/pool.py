"""A pool of TCP connections to a few hosts (the socket guide's ``ConnectionPool``).

``get_connection(addr)`` hands out an idle connection to that host and port
after a liveness check, or opens a new one; ``return_connection(sock)`` puts it
back. At most ``max_per_host`` connections to one host and port are open at
a time (handed out plus idle): a caller that finds them all handed out waits
for one to come back, up to ``wait_timeout``, then gets :class:`PoolTimeout`.

The liveness check never reads from the socket. The default one asks the
stack: the connection is still ESTABLISHED, nothing is waiting to be read (no
data, no FIN, no RST, no pending error) and it was not shut down. A
``ping(sock) -> bool`` given to the pool runs after that (an application's
own ping: send a request, read the reply); False or an ``OSError`` means dead.
A dead connection is closed and counted, and the next idle one (or a new
one) is tried, so the caller never sees it.

Idle connections older than ``idle_timeout`` (on the stack's clock) are
closed at the next call of the pool (any of them). One lock and one condition
guard the pool's books; connecting, checking and closing sockets happen
outside it, with the connection's place counted (a "slot"), so a slow host
never blocks callers of another.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from stack.socket_api import AddressLike, IpAddress, PollEvent, SocketType, address_of
from stack.socket_host import SocketHost, get_default_stack
from stack.tcp.state import TcpState

__all__ = ["ConnectionPool", "PoolClosed", "PoolStats", "PoolTimeout", "HostStats", "stack_says_alive"]

# Anything of these on a connection nobody is reading means it cannot be reused.
_NOT_QUIET = PollEvent.READ | PollEvent.ERROR | PollEvent.HANGUP | PollEvent.INVALID


class PoolTimeout(TimeoutError):
    """Every connection to the host was handed out and none came back in time (ETIMEDOUT)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ETIMEDOUT, message)


class PoolClosed(OSError):
    """The pool was closed (EBADF)."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, "the connection pool is closed")


@dataclass(frozen=True)
class HostStats:
    in_use: int  # handed out, being opened or being checked
    idle: int


@dataclass(frozen=True)
class PoolStats:
    opened: int  # new connections made
    reused: int  # idle connections handed out again after the liveness check
    dead: int  # idle connections the liveness check found dead (closed, never handed out)
    expired: int  # idle connections closed after idle_timeout
    discarded: int  # returned connections not fit to keep (unread data, closed, reset...)
    waited: int  # get_connection calls that had to wait for a connection to come back
    timed_out: int  # ... and gave up (PoolTimeout)
    in_use: int
    idle: int
    hosts: dict[str, HostStats] = field(default_factory=dict, hash=False)


def stack_says_alive(sock) -> bool:
    """The default liveness check: ESTABLISHED, nothing unread, no FIN/RST/error, not shut down.

    It reads nothing and makes no descriptor (readiness is asked the way
    ``stack.poll`` asks it, without waiting)."""
    try:
        info = sock.tcp_info()
    except OSError:
        return False  # closed (EBADF) or never connected
    if info.state is not TcpState.ESTABLISHED or info.recv_queue or info.error is not None:
        return False
    return not sock._revents(PollEvent.READ) & _NOT_QUIET


@dataclass
class _Host:
    in_use: int = 0
    idle: collections.deque = field(default_factory=collections.deque)  # (sock, since), newest last


def _key(addr: AddressLike) -> IpAddress:
    address = address_of(addr)
    if address.is_unspecified or address.port == 0:
        raise ValueError(f"a pool connects to a host and port, got {address}")
    return address


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


class ConnectionPool:
    """TCP connections kept open for reuse, at most ``max_per_host`` to each host and port.

    ``ConnectionPool(stack=None, max_per_host=4, idle_timeout=60.0,
    connect_timeout=5.0, ping=None, wait_timeout=10.0)``: ``stack`` is the
    stack whose sockets it opens (the default stack when None); timeouts are
    seconds on that stack's clock. A connection handed out is blocking (set
    its timeout as needed). The pool closes every connection, handed out or
    idle, at ``close()`` or at the end of a ``with`` block."""

    def __init__(self, stack: SocketHost | None = None, max_per_host: int = 4, idle_timeout: float = 60.0,
                 connect_timeout: float = 5.0, ping: Callable[[object], bool] | None = None, *,
                 wait_timeout: float = 10.0) -> None:
        if isinstance(max_per_host, bool) or not isinstance(max_per_host, int) or max_per_host < 1:
            raise ValueError(f"max_per_host must be an int >= 1, got {max_per_host!r}")
        if ping is not None and not callable(ping):
            raise TypeError(f"ping must be a callable sock -> bool, or None, got {ping!r}")
        self._stack = stack if stack is not None else get_default_stack()
        self._clock = self._stack.clock
        self.max_per_host = max_per_host
        self.idle_timeout = _positive("idle_timeout", idle_timeout)
        self.connect_timeout = _positive("connect_timeout", connect_timeout)
        self.wait_timeout = _positive("wait_timeout", wait_timeout)
        self._ping = ping
        self._cond = threading.Condition(threading.Lock())
        self._hosts: dict[IpAddress, _Host] = {}
        self._out: dict[object, IpAddress] = {}  # handed-out socket -> its host (identity)
        self._counts: collections.Counter = collections.Counter()
        self._closed = False

    # -- handing out ----------------------------------------------------------------------
    def get_connection(self, addr: AddressLike):
        """A connected STREAM socket to ``addr``: a live idle one, or a new one.

        Waits (up to ``wait_timeout``) while ``max_per_host`` connections to
        ``addr`` are handed out; then :class:`PoolTimeout`. Connecting raises
        what ``connect`` raises (ConnectionRefusedError, TimeoutError...)."""
        key = _key(addr)
        sock = self._reserve(key)
        try:
            while sock is not None:
                if self._alive(sock):
                    return self._hand_out(key, sock, "reused")
                self._close_quietly([sock])
                sock = self._next_idle(key, "dead")
            return self._hand_out(key, self._open(key), "opened")
        except BaseException:
            if sock is not None:
                self._close_quietly([sock])  # (a ping that raised something else than OSError)
            self._release(key)
            raise

    def _reserve(self, key: IpAddress):
        """Take a slot for ``key`` (waiting if all are handed out): an idle socket to check, or None."""
        deadline = self._clock.now() + self.wait_timeout
        waited = False
        with self._cond:
            while True:
                self._check_open_locked()
                stale = self._expire_locked()
                host = self._hosts.setdefault(key, _Host())
                if host.idle or host.in_use < self.max_per_host:
                    host.in_use += 1
                    sock = host.idle.pop()[0] if host.idle else None
                    break
                if not waited:
                    waited = True
                    self._counts["waited"] += 1
                if self._clock.now() >= deadline:
                    self._counts["timed_out"] += 1
                    raise PoolTimeout(f"connection pool: all {self.max_per_host} connections to {key} are in use "
                                      f"and none came back within {self.wait_timeout:g} s")
                self._clock.wait(self._cond, deadline)
        self._close_quietly(stale)
        return sock

    def _next_idle(self, key: IpAddress, counted: str):
        """Count the socket just dropped; another idle one for the same slot, or None."""
        with self._cond:
            self._counts[counted] += 1
            host = self._hosts[key]
            return host.idle.pop()[0] if host.idle else None

    def _alive(self, sock) -> bool:
        if not stack_says_alive(sock):
            return False
        if self._ping is None:
            return True
        try:
            return bool(self._ping(sock))
        except OSError:
            return False

    def _open(self, key: IpAddress):
        sock = self._stack.socket(SocketType.STREAM)
        try:
            sock.set_timeout(self.connect_timeout)
            sock.connect(key)
            sock.set_timeout(None)
        except BaseException:
            sock.close()
            raise
        return sock

    def _hand_out(self, key: IpAddress, sock, counted: str):
        with self._cond:
            if not self._closed:
                self._counts[counted] += 1
                self._out[sock] = key
                return sock
        sock.close()  # (the slot is released by get_connection)
        raise PoolClosed()

    def _release(self, key: IpAddress) -> None:
        with self._cond:
            host = self._hosts.get(key)
            if host is not None:
                host.in_use -= 1
                self._forget_if_empty_locked(key, host)
            self._cond.notify_all()

    # -- taking back ------------------------------------------------------------------------
    def return_connection(self, sock) -> None:
        """Give back a socket from :meth:`get_connection`: kept idle if it can be reused.

        A socket with unread data, or closed, reset or shut down, is closed and
        not kept (close a connection whose state you do not trust, then return
        it: that frees its place). ``ValueError`` for a socket the pool did not
        hand out (or one returned twice)."""
        with self._cond:
            key = self._out.pop(sock, None)
            closed = self._closed
            if key is None and not closed:
                raise ValueError(f"{sock!r} is not a connection handed out by this pool")
        if closed:  # (close() closed it already, or will: nothing to keep it for)
            self._close_quietly([sock])
            return
        keep = stack_says_alive(sock)  # (checked outside the lock; the slot is still held)
        with self._cond:
            host = self._hosts[key]
            host.in_use -= 1
            if keep and not self._closed:
                host.idle.append((sock, self._clock.now()))
            elif not keep:
                self._counts["discarded"] += 1
            stale = self._expire_locked()
            self._forget_if_empty_locked(key, host)
            self._cond.notify_all()
        if not keep or self._closed:
            stale.append(sock)
        self._close_quietly(stale)

    @contextlib.contextmanager
    def connection(self, addr: AddressLike) -> Iterator[object]:
        """``with pool.connection(addr) as sock:`` gets one and returns it after the block;
        if the block raises, the connection is closed first (its state is unknown)."""
        sock = self.get_connection(addr)
        try:
            yield sock
        except BaseException:
            sock.close()
            raise
        finally:
            self.return_connection(sock)

    # -- upkeep -------------------------------------------------------------------------------
    def _expire_locked(self) -> list:
        """Take idle sockets older than idle_timeout out of the books (closed by the caller, unlocked)."""
        now = self._clock.now()
        stale = []
        for key, host in list(self._hosts.items()):
            while host.idle and now - host.idle[0][1] >= self.idle_timeout:
                stale.append(host.idle.popleft()[0])
                self._counts["expired"] += 1
            self._forget_if_empty_locked(key, host)
        return stale

    def _forget_if_empty_locked(self, key: IpAddress, host: _Host) -> None:
        if not host.in_use and not host.idle and self._hosts.get(key) is host:
            del self._hosts[key]

    def _check_open_locked(self) -> None:
        if self._closed:
            raise PoolClosed()

    @staticmethod
    def _close_quietly(socks) -> None:
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass  # a stack that stopped already closed it

    def stats(self) -> PoolStats:
        """Counters since the pool was made, and what is open now (expired idle ones closed first)."""
        with self._cond:
            stale = self._expire_locked()
            hosts = {str(k): HostStats(h.in_use, len(h.idle)) for k, h in self._hosts.items()}
            c = self._counts
            snapshot = PoolStats(c["opened"], c["reused"], c["dead"], c["expired"], c["discarded"], c["waited"],
                                 c["timed_out"], sum(h.in_use for h in hosts.values()),
                                 sum(h.idle for h in hosts.values()), hosts)
        self._close_quietly(stale)
        return snapshot

    def close(self) -> None:
        """Close every connection, idle or handed out; waiting callers get :class:`PoolClosed`."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            socks = [s for h in self._hosts.values() for s, _ in h.idle] + list(self._out)
            for host in self._hosts.values():
                host.idle.clear()
            self._out.clear()
            self._cond.notify_all()
        self._close_quietly(socks)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ConnectionPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<ConnectionPool max_per_host={self.max_per_host} in_use={s.in_use} idle={s.idle}>"
