"""The public socket API of the MultiOS stack (POSIX-style): types, addresses, poll.

``Socket(SocketType.DATAGRAM)`` is a UDP socket, ``SocketType.RAW`` an ICMP
raw socket (privileged stacks only), both
:class:`stack.datagram_socket.DatagramSocket`, and ``SocketType.STREAM`` a TCP
socket (:class:`stack.stream_socket.StreamSocket`). Calling :class:`Socket`
asks the stack's factory (``Stack.socket``) for the right one; both classes
derive from :class:`Socket`. Errors are the standard ``OSError`` subclasses with the
errno a POSIX system would give (``BlockingIOError`` for EAGAIN,
``TimeoutError``, ``ConnectionRefusedError``, ``PermissionError``, or plain
``OSError`` with ``.errno`` set).

Every socket has a real file descriptor that is readable while a receive
call would not block (data, a pending error, or end of input; for STREAM
sockets also a connection to accept) and, for STREAM sockets, writable while
a send would not block, so ``select``, ``selectors`` and ``poll`` work on
it, and :func:`poll` waits on several sockets at once. :class:`Poller`
is the same wait for an event loop over many sockets (like ``epoll``:
register once, wait many times, O(ready sockets) per wait). Sockets are
thread-safe.

This module and the socket classes know the stack only through
:class:`stack.socket_host.SocketHost`; they never import the runtime.
"""
from __future__ import annotations

import collections
import enum
import errno
import logging
import os
import selectors
import threading
import warnings
import weakref
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import Sequence, Union

from stack.clock import Clock, MonotonicClock
from stack.socket_host import SocketHost, get_default_stack

__all__ = [
    "SocketType",
    "SocketOption",
    "Shutdown",
    "PollEvent",
    "IpAddress",
    "AddressLike",
    "Socket",
    "poll",
    "Poller",
    "address_of",
    "socket_error",
    "check_flag",
    "check_size",
    "check_tos",
]

STUCK_FD_RECHECK = 0.005

log = logging.getLogger(__name__)


class SocketType(enum.Enum):
    DATAGRAM = "datagram"  # UDP
    STREAM = "stream"  # TCP
    RAW = "raw"  # whole ICMP packets


class SocketOption(enum.Enum):
    REUSE_ADDR = "reuse_addr"  # bool: share a port with other REUSE_ADDR sockets
    BROADCAST = "broadcast"  # bool: allow sending to broadcast addresses
    RECEIVE_BUFFER_SIZE = "receive_buffer_size"  # int bytes
    SEND_BUFFER_SIZE = "send_buffer_size"  # int bytes (UDP sends never wait on it)
    TTL = "ttl"  # int 1..255 for outgoing packets
    TOS = "tos"  # int 0..255: the IP header's DSCP/ECN byte (IP_TOS); STREAM keeps the ECN bits 0
    ERROR = "error"  # get only: the pending errno (0 if none), cleared, like SO_ERROR
    # STREAM (TCP) sockets only:
    TCP_NO_DELAY = "tcp_no_delay"  # bool: send small segments at once (no Nagle)
    KEEP_ALIVE = "keep_alive"  # bool: probe an idle connection
    KEEP_IDLE = "keep_idle"  # seconds of idleness before the first probe (TCP_KEEPIDLE)
    KEEP_INTERVAL = "keep_interval"  # seconds between probes (TCP_KEEPINTVL)
    KEEP_COUNT = "keep_count"  # unanswered probes before ETIMEDOUT (TCP_KEEPCNT)
    LINGER = "linger"  # None (off) or seconds >= 0 that close() waits; 0 resets (SO_LINGER)
    CONGESTION = "congestion"  # "cubic" or "newreno" (TCP_CONGESTION)


class Shutdown(enum.Flag):
    READ = 1
    WRITE = 2
    BOTH = 3


class PollEvent(enum.Flag):
    """Readiness flags for :func:`poll` (like POLLIN/POLLOUT/POLLERR/POLLHUP/POLLNVAL)."""

    NONE = 0
    READ = enum.auto()
    WRITE = enum.auto()
    ERROR = enum.auto()
    HANGUP = enum.auto()
    INVALID = enum.auto()


@dataclass(frozen=True, order=True)
class IpAddress:
    """An IPv4 address and port: ``IpAddress("10.0.0.1", 53)``.

    Immutable, hashable, ordered by (address, port); ``str()`` gives
    ``"10.0.0.1:53"`` and :meth:`parse` reads that back.
    """

    ip: IPv4Address
    port: int = 0

    def __post_init__(self) -> None:
        ip = self.ip
        if not isinstance(ip, IPv4Address):
            try:
                ip = IPv4Address(ip)
            except (AddressValueError, ValueError) as exc:
                raise ValueError(f"not an IPv4 address: {self.ip!r}") from exc
            object.__setattr__(self, "ip", ip)
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")

    @classmethod
    def new_v4(cls, a: int, b: int, c: int, d: int, port: int = 0) -> "IpAddress":
        """From four octets and a port: ``IpAddress.new_v4(10, 0, 0, 1, 53)``."""
        octets = (a, b, c, d)
        if not all(isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= 255 for o in octets):
            raise ValueError(f"octets must be ints in 0..255, got {octets}")
        return cls(IPv4Address(bytes(octets)), port)

    @classmethod
    def parse(cls, text: str) -> "IpAddress":
        """Read ``"a.b.c.d:port"`` (or ``"a.b.c.d"`` for port 0)."""
        if not isinstance(text, str):
            raise ValueError(f"expected a string like '10.0.0.1:53', got {text!r}")
        if text.startswith("["):
            raise ValueError(f"IPv6 is not supported yet in MultiOS: {text!r}")
        host, sep, port_text = text.strip().rpartition(":")
        if not sep:
            host, port_text = port_text, "0"
        if not port_text.isdigit():
            raise ValueError(f"bad port in {text!r}")
        return cls(host, int(port_text))

    @classmethod
    def any(cls, port: int = 0) -> "IpAddress":
        """0.0.0.0 (every local address) with ``port``."""
        return cls(IPv4Address(0), port)

    @property
    def is_unspecified(self) -> bool:
        return self.ip == IPv4Address(0)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


AddressLike = Union[IpAddress, str, tuple]


def address_of(value: AddressLike) -> IpAddress:
    if isinstance(value, IpAddress):
        return value
    if isinstance(value, str):
        return IpAddress.parse(value)
    if isinstance(value, tuple) and len(value) == 2:
        return IpAddress(value[0], value[1])
    raise TypeError(f"expected an IpAddress, 'ip:port' or (ip, port), got {value!r}")


def socket_error(code: int, detail: str | None = None) -> OSError:
    # OSError(errno, ...) picks the matching subclass (BlockingIOError, ...).
    return OSError(code, detail or os.strerror(code))


class _BuiltByAStack(type):
    """Calling ``Socket(...)`` itself asks a stack for the socket (:meth:`SocketHost.socket`,
    the one factory); the concrete classes it returns are constructed as usual."""

    def __call__(cls, *args, **kwargs):
        if cls is Socket:
            return _socket_from_a_stack(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def _socket_from_a_stack(
    type: SocketType = SocketType.DATAGRAM, protocol: int | None = None, *, stack: SocketHost | None = None
) -> "Socket":
    host = stack if stack is not None else get_default_stack()
    return host.socket(type, protocol)


class Socket(metaclass=_BuiltByAStack):
    """A socket on a MultiOS stack: ``Socket(type, protocol, stack=None)`` is
    ``stack.socket(type, protocol)`` on the given stack (the default stack
    without ``stack=``). DATAGRAM and RAW sockets are
    :class:`stack.datagram_socket.DatagramSocket`, STREAM sockets
    :class:`stack.stream_socket.StreamSocket`; both are ``Socket``s.

    This base class holds what they share: the stack, the timeout, the
    condition variable on the stack's lock that blocking calls wait on.
    """

    # Does fileno() become writable only when a send would not block? (STREAM: yes.)
    _fd_signals_write = False
    # Does the socket tell a Poller of its changes itself, so it needs no descriptor? (STREAM: yes.)
    _tells_pollers = False

    def __init__(self, stack: SocketHost, type: SocketType, protocol: int) -> None:
        self._stack = stack
        self.type = type
        self.protocol = protocol
        self._timeout: float | None = None
        self._cond = stack.condition()  # on the stack's lock
        self._closed = False
        _gc_closer.start()

    # -- timeouts (blocking calls hold the stack's lock) ----------------------------------
    def set_timeout(self, seconds: float | None) -> None:
        """None blocks forever, 0 makes the socket non-blocking, >0 is a timeout."""
        if seconds is not None:
            seconds = float(seconds)
            if seconds < 0 or seconds != seconds:
                raise ValueError("timeout must be None or a number >= 0")
        self._timeout = seconds

    def get_timeout(self) -> float | None:
        return self._timeout

    def set_nonblocking(self, flag: bool) -> None:
        """Same as ``set_timeout(0)`` (True) or ``set_timeout(None)`` (False)."""
        self._timeout = 0.0 if flag else None

    def _deadline(self) -> float | None:
        """When a blocking call started now runs out of time, on the stack's clock."""
        return None if self._timeout is None else self._stack.now() + self._timeout

    def _expired(self, deadline: float | None) -> bool:
        return deadline is not None and deadline <= self._stack.now()

    def _sleep_locked(self, deadline: float | None) -> None:
        """Wait for a change of this socket, or the deadline (the stack may have us drive it meanwhile)."""
        self._stack.wait_locked(self._cond, deadline)

    def _check_open_locked(self) -> None:
        if self._closed:
            raise socket_error(errno.EBADF, "socket is closed")

    # -- life cycle -------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release what the socket holds; threads blocked in it get EBADF. Idempotent."""
        with self._stack.lock:
            self._close_locked(collected=False)

    def _close_locked(self, collected: bool) -> None:
        """Close (stack lock held). ``collected``: the socket was garbage-collected, so the
        close must not block (no linger) and no Poller watches it (one would hold it)."""
        raise NotImplementedError

    def __del__(self) -> None:
        # As the standard library's sockets: one garbage-collected while open warns and is closed.
        if self.__dict__.get("_closed", True):
            return  # closed, or its construction failed before it held anything
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
        finally:
            # The collector may run on any thread, even one holding the stack's lock (or a
            # NIC's) in the middle of the core's work: never take a lock here, hand it over.
            _gc_closer.close_later(self)


def weak_callback(method):
    """``method`` (bound to a socket) for the core to call back (``on_change``) without keeping
    the socket alive: a socket dropped by its user is collected, and so closed."""
    owner = weakref.ref(method.__self__)
    func = method.__func__

    def call(*args):
        sock = owner()
        if sock is not None:
            func(sock, *args)

    return call


class _GcCloser:
    """The thread that closes garbage-collected sockets, taking their stack's lock as any caller.

    The collector hands it a socket with no lock of Python's: a deque append
    (atomic) and a write to a pipe. The thread is started with the first
    socket (starting one from the collector could wait on the threading
    module's own locks)."""

    def __init__(self) -> None:
        self._pending: collections.deque[Socket] = collections.deque()
        self._start_lock = threading.Lock()
        self._wake_w: int | None = None

    def start(self) -> None:
        if self._wake_w is not None:
            return
        with self._start_lock:
            if self._wake_w is not None:
                return
            wake_r, wake_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(wake_w, False)
            threading.Thread(target=self._run, args=(wake_r,), name="multios-socket-closer", daemon=True).start()
            self._wake_w = wake_w

    def close_later(self, sock: Socket) -> None:
        self._pending.append(sock)  # (the socket lives on here until closed: that is fine)
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # wake-ups already pending

    def _run(self, wake_r: int) -> None:
        while os.read(wake_r, 4096):
            while self._pending:
                sock = self._pending.popleft()
                try:
                    with sock._stack.lock:
                        sock._close_locked(collected=True)
                except Exception:  # one socket's trouble must not end the closing of the others
                    log.exception("closing a garbage-collected socket failed")
                del sock

    def forget_thread(self) -> None:
        """In a forked child: the thread did not come along; the next socket starts one."""
        self._wake_w = None
        self._start_lock = threading.Lock()


_gc_closer = _GcCloser()
os.register_at_fork(after_in_child=_gc_closer.forget_thread)


def check_flag(value) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise socket_error(errno.EINVAL, f"expected a bool, got {value!r}")


def check_tos(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise socket_error(errno.EINVAL, f"TOS must be an int in 0..255, got {value!r}")
    return value


def check_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise socket_error(errno.EINVAL, f"buffer size must be a positive int, got {value!r}")
    return value


def _poll_deadline(clock: Clock, timeout_ms: float | None) -> float | None:
    """When a poll with ``timeout_ms`` milliseconds started now ends on ``clock`` (None: never).

    As poll(2) and Python's ``select.poll``: None or a negative number waits
    forever, 0 looks once."""
    if timeout_ms is None:
        return None
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms != timeout_ms:
        raise TypeError(f"timeout must be None or a number of milliseconds, got {timeout_ms!r}")
    if timeout_ms < 0:
        return None
    return clock.now() + timeout_ms / 1000.0


def poll(
    sockets: Sequence[Socket],
    events: PollEvent | Sequence[PollEvent] = PollEvent.READ,
    timeout: float | None = None,
) -> list[tuple[Socket, PollEvent]]:
    """Wait until one of ``sockets`` is ready; return ``[(socket, events), ...]``.

    ``events`` is one set of :class:`PollEvent` for all sockets or one per
    socket. ERROR, HANGUP and INVALID are reported whether asked for or not.
    ``timeout`` is in milliseconds, as in poll(2) and ``select.poll``: None
    or negative waits forever, 0 checks once; an empty list means it ran out.
    """
    socks = list(sockets)
    wanted = [events] * len(socks) if isinstance(events, PollEvent) else list(events)
    if len(wanted) != len(socks):
        raise ValueError("events must be one PollEvent or one per socket")
    # The timeout runs on the sockets' stack clock (virtual in tests).
    clock: Clock = socks[0]._stack.clock if socks else MonotonicClock()
    deadline = _poll_deadline(clock, timeout)
    if not socks and deadline is None:
        raise ValueError("poll() on no sockets without a timeout would wait forever")
    cap: float | None = None  # set once a readable fd stops being a useful wake-up
    with selectors.DefaultSelector() as sel:
        masks: dict[int, int] = {}
        for sock, w in zip(socks, wanted):
            fd = sock.fileno()
            if fd >= 0:
                mask = selectors.EVENT_READ
                if PollEvent.WRITE in w and sock._fd_signals_write:
                    mask |= selectors.EVENT_WRITE  # a STREAM socket's fd is writable when send would not block
                masks[fd] = masks.get(fd, 0) | mask
        for fd, mask in masks.items():
            sel.register(fd, mask)
        while True:
            ready = [(s, ev) for s, w in zip(socks, wanted) if (ev := s._revents(w))]
            if ready:
                return ready
            if deadline is not None and deadline <= clock.now():
                return []
            remaining = clock.timeout(deadline)
            if cap is not None:
                remaining = cap if remaining is None else min(remaining, cap)
            with clock.sleeping():  # a virtual clock counts this caller as blocked
                fired = sel.select(remaining)
            # A socket with data but READ not asked for keeps its fd readable:
            # stop waiting on it and look at it every few milliseconds instead
            # (it can still get an ERROR), rather than spinning.
            for key, _ in fired:
                sel.unregister(key.fd)
                cap = STUCK_FD_RECHECK


class Poller:
    """Wait on many sockets again and again, like ``select.epoll`` for the stack's sockets.

    :func:`poll` looks at every socket it is given on every call; an event
    loop serving thousands of connections registers each socket once here
    and :meth:`poll` costs O(sockets that became ready). STREAM sockets
    tell the Poller themselves when their readiness changes (under the
    stack's lock; one eventfd wakes the Poller), so they take no descriptor:
    ten thousand connections fit in a process's usual descriptor limit.
    Other sockets' descriptors sit in one kernel ``epoll`` set, and only
    those that fire are asked for their events. Readiness is
    level-triggered, as with :func:`poll`: a socket is reported on every
    call while it is ready.

    Not thread-safe: one thread registers and polls. Unregister a socket
    before closing it. The timeout is in milliseconds, as :func:`poll`'s
    (and epoll_wait(2)'s), and runs on the clock of the first socket
    registered (virtual in tests).
    """

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wanted: dict[Socket, PollEvent] = {}
        self._fd_of: dict[Socket, int] = {}
        self._always: dict[Socket, None] = {}  # ready without their fd saying so (UDP's WRITE): asked every time
        self._recheck: dict[Socket, None] = {}  # asked on the next poll (just registered or modified)
        self._parked: dict[Socket, None] = {}  # fd fired with nothing to report: asked every few ms instead
        self._clock: Clock | None = None
        # Sockets that tell us of their changes (no fd): those changed since the last look (filled
        # under the stack's lock, maybe on its thread), and those ready at the last look (asked
        # again: level-triggered). One eventfd, written once per batch of changes, wakes poll().
        self._told: dict[Socket, None] = {}
        self._changed: dict[Socket, None] = {}
        self._ready_last: dict[Socket, None] = {}
        self._changed_lock = threading.Lock()
        self._wake_fd: int | None = None
        self._wake_pending = False

    def __len__(self) -> int:
        return len(self._wanted)

    def register(self, sock: Socket, events: PollEvent = PollEvent.READ) -> None:
        """Watch ``sock`` for ``events`` (ERROR, HANGUP and INVALID are always reported)."""
        if sock in self._wanted:
            raise KeyError(f"{sock!r} is already registered")
        if sock._tells_pollers:
            self._watch_told(sock, events)
            return
        fd = sock.fileno()
        if fd < 0:
            raise socket_error(errno.EBADF, "cannot register a closed socket")
        if self._clock is None:
            self._clock = sock._stack.clock
        self._fd_of[sock] = fd
        self._wanted[sock] = events
        self._arm(sock, events)

    def modify(self, sock: Socket, events: PollEvent) -> None:
        """Watch a registered socket for other ``events``."""
        if sock not in self._wanted:
            raise KeyError(f"{sock!r} is not registered")
        self._wanted[sock] = events
        if sock in self._told:
            self._recheck[sock] = None
            return
        self._disarm(sock)
        self._arm(sock, events)

    def unregister(self, sock: Socket) -> None:
        """Stop watching ``sock`` (closed or not); a socket not registered is ignored."""
        if self._wanted.pop(sock, None) is None:
            return
        if sock in self._told:
            del self._told[sock]
            sock._remove_poller(self)
            self._recheck.pop(sock, None)
            self._ready_last.pop(sock, None)
            return
        self._disarm(sock)
        del self._fd_of[sock]

    def close(self) -> None:
        for sock in self._told:
            sock._remove_poller(self)
        self._told.clear()
        self._sel.close()
        if self._wake_fd is not None:
            os.close(self._wake_fd)
            self._wake_fd = None
        self._wanted.clear()
        self._fd_of.clear()

    def _watch_told(self, sock: Socket, events: PollEvent) -> None:
        """Register a socket that tells us of its changes (a STREAM socket): no descriptor."""
        if sock._closed:
            raise socket_error(errno.EBADF, "cannot register a closed socket")
        if self._clock is None:
            self._clock = sock._stack.clock
        if self._wake_fd is None:
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._sel.register(self._wake_fd, selectors.EVENT_READ, None)
        self._wanted[sock] = events
        self._told[sock] = None
        self._recheck[sock] = None
        sock._add_poller(self)

    def _socket_changed(self, sock: Socket) -> None:
        """``sock``'s readiness changed (called under its stack's lock, from any thread)."""
        with self._changed_lock:
            self._changed[sock] = None
            if self._wake_pending or self._wake_fd is None:
                return
            self._wake_pending = True
            fd = self._wake_fd
        os.eventfd_write(fd, 1)

    def _take_changed(self) -> dict[Socket, None]:
        """The told sockets to look at: those changed since the last look and those ready then."""
        asked, self._ready_last = self._ready_last, {}
        if self._wake_pending:
            try:
                os.eventfd_read(self._wake_fd)  # first, so a change from now on writes it again
            except BlockingIOError:
                pass
            with self._changed_lock:
                changed, self._changed = self._changed, {}
                self._wake_pending = False
            asked.update(changed)
        return asked

    def _arm(self, sock: Socket, events: PollEvent) -> None:
        mask = selectors.EVENT_READ if PollEvent.READ in events or not sock._fd_signals_write else 0
        if PollEvent.WRITE in events:
            if sock._fd_signals_write:
                mask |= selectors.EVENT_WRITE
            else:
                self._always[sock] = None  # a DATAGRAM socket: its fd only ever says "readable"
        # A STREAM socket asked for WRITE only still wakes on errors (writable) and hang-ups.
        self._sel.register(self._fd_of[sock], mask or selectors.EVENT_WRITE, sock)
        self._recheck[sock] = None

    def _disarm(self, sock: Socket) -> None:
        self._always.pop(sock, None)
        self._recheck.pop(sock, None)
        if sock in self._parked:
            del self._parked[sock]  # parked: its fd is not in the selector
        else:
            try:
                self._sel.unregister(self._fd_of[sock])
            except (KeyError, ValueError):
                pass

    def poll(self, timeout: float | None = None) -> list[tuple[Socket, PollEvent]]:
        """Wait until a registered socket is ready; ``[(socket, events), ...]``, or ``[]`` when
        ``timeout`` milliseconds (None or negative: forever, 0: look once) run out."""
        clock: Clock = self._clock or MonotonicClock()
        deadline = _poll_deadline(clock, timeout)
        look_now = True  # the first round only looks; later ones wait
        while True:
            fresh = bool(self._recheck)
            asked = self._take_changed()
            asked.update(self._recheck)
            self._recheck.clear()
            asked.update(self._always)
            asked.update(self._parked)
            wait = 0.0 if look_now or fresh else clock.timeout(deadline)
            if asked and wait != 0.0:
                # Sockets asked without their fd (UDP's WRITE, parked ones): look again soon, do not spin.
                wait = STUCK_FD_RECHECK if wait is None else min(wait, STUCK_FD_RECHECK)
            look_now = False
            with clock.sleeping():  # a virtual clock counts this caller as blocked
                fired = self._sel.select(wait)
            for key, _ in fired:
                if key.data is not None:  # (None: the eventfd of the told sockets)
                    asked[key.data] = None
            # The sockets whose change woke us are looked at now, not after one more wait
            # (that wait was STUCK_FD_RECHECK: 5 ms on every wake-up of a service's loop).
            asked.update(self._take_changed())
            ready = self._ready(asked, fired)
            if ready:
                return ready
            if deadline is not None and deadline <= clock.now():
                return []

    def _ready(self, asked: dict[Socket, None], fired) -> list[tuple[Socket, PollEvent]]:
        fired_socks = {key.data for key, _ in fired}
        ready = []
        for sock in asked:
            wanted = self._wanted.get(sock)
            if wanted is None:
                continue  # (told of a change, then unregistered)
            ev = sock._revents(wanted)
            if ev:
                ready.append((sock, ev))
                if sock in self._told:
                    self._ready_last[sock] = None
                if sock in self._parked:
                    del self._parked[sock]
                    self._arm(sock, wanted)  # it answers again: back to waiting on its fd
            elif sock in fired_socks:
                # Its fd fired but it has nothing to say (readable, READ not asked for):
                # look at it every few milliseconds rather than spinning on the fd.
                self._sel.unregister(self._fd_of[sock])
                self._parked[sock] = None
        return ready
