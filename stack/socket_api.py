"""The public socket API of the MultiOS stack (POSIX-style).

``Socket(SocketType.DATAGRAM)`` is a UDP socket, ``SocketType.RAW`` an ICMP
raw socket (privileged stacks only) and ``SocketType.STREAM`` a TCP socket
(:class:`stack.stream_socket.StreamSocket`, a subclass of :class:`Socket`
that ``Socket(SocketType.STREAM)`` returns). Errors are the standard ``OSError`` subclasses with the
errno a POSIX system would give (``BlockingIOError`` for EAGAIN,
``TimeoutError``, ``ConnectionRefusedError``, ``PermissionError``, or plain
``OSError`` with ``.errno`` set).

Every socket has a real file descriptor that is readable while a receive
call would not block (data, a pending error, or end of input; for STREAM
sockets also a connection to accept) and, for STREAM sockets, writable while
a send would not block, so ``select``, ``selectors`` and ``poll`` work on
it, and :func:`poll` waits on several sockets at once. Sockets are
thread-safe.
"""
from __future__ import annotations

import enum
import errno
import os
import selectors
import threading
import time
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import Sequence, Union

from stack.raw import RawSocketState
from stack.runtime import Stack, get_default_stack
from stack.sockstate import SocketState
from stack.wire import IpProtocol

__all__ = [
    "SocketType",
    "SocketOption",
    "Shutdown",
    "PollEvent",
    "IpAddress",
    "Socket",
    "poll",
]

STUCK_FD_RECHECK = 0.005


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


def _address(value: AddressLike) -> IpAddress:
    if isinstance(value, IpAddress):
        return value
    if isinstance(value, str):
        return IpAddress.parse(value)
    if isinstance(value, tuple) and len(value) == 2:
        return IpAddress(value[0], value[1])
    raise TypeError(f"expected an IpAddress, 'ip:port' or (ip, port), got {value!r}")


def _error(code: int, detail: str | None = None) -> OSError:
    # OSError(errno, ...) picks the matching subclass (BlockingIOError, ...).
    return OSError(code, detail or os.strerror(code))


class Socket:
    """A socket on a MultiOS stack (the default stack unless ``stack=``).

    ``Socket(SocketType.STREAM)`` gives a :class:`stack.stream_socket.StreamSocket`.
    """

    # Does fileno() become writable only when a send would not block? (STREAM: yes.)
    _fd_signals_write = False

    def __new__(cls, type: SocketType = SocketType.DATAGRAM, protocol: int | None = None, *, stack: Stack | None = None):
        if cls is Socket and type is SocketType.STREAM:
            from stack.stream_socket import StreamSocket

            return super().__new__(StreamSocket)
        return super().__new__(cls)

    def __init__(self, type: SocketType = SocketType.DATAGRAM, protocol: int | None = None, *, stack: Stack | None = None) -> None:
        if not isinstance(type, SocketType):
            raise TypeError(f"type must be a SocketType, got {type!r}")
        st = stack if stack is not None else get_default_stack()
        self._stack = st
        self.type = type
        self._timeout: float | None = None
        self._cond = threading.Condition(st._lock)
        self._closed = False
        self._signalled = False
        with st._lock:
            st._register(self)
            try:
                self._state = self._open_state(type, protocol)
            except BaseException:
                st._unregister(self)
                raise
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._state.on_change = self._on_change_locked
        self.protocol = self._state.protocol if isinstance(self._state, RawSocketState) else IpProtocol.UDP

    def _open_state(self, type: SocketType, protocol: int | None) -> SocketState:
        iface = self._stack.iface
        if type is SocketType.DATAGRAM:
            if protocol not in (None, 0, IpProtocol.UDP):
                raise OSError(errno.EPROTONOSUPPORT, f"DATAGRAM sockets are UDP, not protocol {protocol}")
            return iface.udp_open()
        if not self._stack.privileged:
            raise PermissionError(errno.EPERM, "RAW sockets need a privileged stack: Stack(..., privileged=True)")
        return iface.raw_open(IpProtocol.ICMP if protocol in (None, 0) else protocol)

    # -- readiness plumbing (stack lock held) -------------------------------------
    def _on_change_locked(self) -> None:
        self._cond.notify_all()
        self._sync_fd_locked()

    def _sync_fd_locked(self) -> None:
        if self._closed:
            return
        want = self._state.readable
        if want and not self._signalled:
            os.eventfd_write(self._efd, 1)
            self._signalled = True
        elif not want and self._signalled:
            try:
                os.eventfd_read(self._efd)
            except BlockingIOError:
                pass
            self._signalled = False

    def _fail_locked(self, code: int) -> None:
        """The stack died: report ``code`` to whoever uses the socket next."""
        if not self._closed:
            self._state.set_error(code)

    def _check_open_locked(self) -> None:
        if self._closed:
            raise _error(errno.EBADF, "socket is closed")

    def _raise_pending_locked(self) -> None:
        err = self._state.take_error()
        if err is not None:
            self._sync_fd_locked()
            raise _error(err)

    @property
    def _is_raw(self) -> bool:
        return isinstance(self._state, RawSocketState)

    # -- addresses -------------------------------------------------------------------
    def bind(self, address: AddressLike) -> None:
        """Bind to a local address; port 0 picks an ephemeral port."""
        addr = _address(address)
        with self._stack._lock:
            self._check_open_locked()
            if self._is_raw:
                self._stack.iface.raw_bind(self._state, addr.ip)
            else:
                self._stack.iface.udp_bind(self._state, addr.ip, addr.port)

    def connect(self, address: AddressLike) -> None:
        """Fix the peer: ``send``/``recv`` then talk to it only."""
        addr = _address(address)
        with self._stack._lock:
            self._check_open_locked()
            if self._is_raw:
                self._stack.iface.raw_connect(self._state, addr.ip)
            else:
                self._stack.iface.udp_connect(self._state, addr.ip, addr.port)

    def local_address(self) -> IpAddress:
        """The bound address (0.0.0.0:0 before binding)."""
        with self._stack._lock:
            self._check_open_locked()
            local = self._state.local
        return IpAddress(*local) if local is not None else IpAddress.any()

    def peer_address(self) -> IpAddress:
        """The connected peer; ``OSError(ENOTCONN)`` if not connected."""
        with self._stack._lock:
            self._check_open_locked()
            remote = self._state.remote
        if remote is None:
            raise _error(errno.ENOTCONN)
        return IpAddress(*remote)

    # -- data ------------------------------------------------------------------------
    def send(self, data: bytes) -> int:
        """Send one datagram to the connected peer; return its length."""
        return self._send(data, None)

    def send_to(self, data: bytes, address: AddressLike) -> int:
        """Send one datagram to ``address``; return its length."""
        return self._send(data, _address(address))

    def _send(self, data: bytes, addr: IpAddress | None) -> int:
        payload = bytes(data)
        st = self._stack
        with st._lock:
            self._check_open_locked()
            self._raise_pending_locked()
            now = st._now()
            if self._is_raw:
                n = st.iface.raw_send(self._state, payload, addr.ip if addr else None, now)
            else:
                n = st.iface.udp_send(self._state, payload, (addr.ip, addr.port) if addr else None, now)
            st._pump_locked()
            return n

    def recv(self, bufsize: int) -> bytes:
        """Receive one datagram (truncated to ``bufsize`` bytes, the rest is lost)."""
        return self.recv_from(bufsize)[0]

    def recv_from(self, bufsize: int) -> tuple[bytes, IpAddress]:
        """Receive one datagram and its sender's address.

        Blocks per the timeout (``set_timeout``): ``BlockingIOError`` when
        non-blocking and nothing is there, ``TimeoutError`` when the timeout
        runs out. A pending error (say ``ConnectionRefusedError`` after an
        ICMP port unreachable) is raised once, before queued data. After
        ``shutdown(READ)`` an empty queue gives ``b""``.
        """
        if bufsize < 0:
            raise ValueError("negative buffer size in recv")
        st = self._stack
        with st._lock:
            timeout = self._timeout
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                self._check_open_locked()
                self._raise_pending_locked()
                item = self._state.pop()
                if item is not None:
                    self._sync_fd_locked()
                    data, (ip, port) = item
                    return data[:bufsize], IpAddress(ip, port)
                if self._state.read_shutdown:
                    return b"", IpAddress.any()
                if timeout == 0:
                    raise _error(errno.EAGAIN, "no datagram waiting (non-blocking socket)")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _error(errno.ETIMEDOUT, "timed out waiting for a datagram")
                self._cond.wait(remaining)

    # -- modes and options ------------------------------------------------------------
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

    def set_option(self, option: SocketOption, value) -> None:
        """Set a :class:`SocketOption`; bad values raise ``OSError(EINVAL)``."""
        with self._stack._lock:
            self._check_open_locked()
            s = self._state
            if option is SocketOption.REUSE_ADDR:
                s.reuse_addr = _flag(value)
            elif option is SocketOption.BROADCAST:
                s.broadcast = _flag(value)
            elif option is SocketOption.RECEIVE_BUFFER_SIZE:
                s.rcvbuf = _size(value)
            elif option is SocketOption.SEND_BUFFER_SIZE:
                s.sndbuf = _size(value)
            elif option is SocketOption.TTL:
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
                    raise _error(errno.EINVAL, f"TTL must be an int in 1..255, got {value!r}")
                s.ttl = value
            elif option is SocketOption.TOS:
                s.tos = _tos(value)
            else:
                raise _error(errno.ENOPROTOOPT, f"unknown socket option {option!r}")

    def get_option(self, option: SocketOption):
        """The current value of a :class:`SocketOption`."""
        with self._stack._lock:
            self._check_open_locked()
            s = self._state
            values = {
                SocketOption.REUSE_ADDR: s.reuse_addr,
                SocketOption.BROADCAST: s.broadcast,
                SocketOption.RECEIVE_BUFFER_SIZE: s.rcvbuf,
                SocketOption.SEND_BUFFER_SIZE: s.sndbuf,
                SocketOption.TTL: s.ttl,
                SocketOption.TOS: s.tos,
            }
            if option is SocketOption.ERROR:
                err = s.take_error()
                self._sync_fd_locked()
                return err or 0
        if option not in values:
            raise _error(errno.ENOPROTOOPT, f"unknown socket option {option!r}")
        return values[option]

    def tcp_info(self):
        """TCP's snapshot (STREAM sockets only): OSError(ENOPROTOOPT) here, as Linux's
        getsockopt(TCP_INFO) on a UDP or RAW socket."""
        with self._stack._lock:
            self._check_open_locked()
        raise _error(errno.ENOPROTOOPT, f"tcp_info() needs a STREAM socket, this one is {self.type.name}")

    def take_error(self) -> OSError | None:
        """Return and clear the pending asynchronous error (like SO_ERROR)."""
        with self._stack._lock:
            self._check_open_locked()
            err = self._state.take_error()
            self._sync_fd_locked()
        return _error(err) if err is not None else None

    def shutdown(self, how: Shutdown) -> None:
        """Stop receiving (READ: recv returns b""), sending (WRITE: EPIPE) or both."""
        if not isinstance(how, Shutdown) or not how:
            raise ValueError("how must be Shutdown.READ, WRITE or BOTH")
        with self._stack._lock:
            self._check_open_locked()
            if self._state.remote is None:
                raise _error(errno.ENOTCONN, "shutdown needs a connected socket")
            self._state.shutdown(read=Shutdown.READ in how, write=Shutdown.WRITE in how)

    # -- descriptors and closing --------------------------------------------------------
    def fileno(self) -> int:
        """An eventfd readable while ``recv`` would not block (-1 once closed)."""
        return -1 if self._closed else self._efd

    def close(self) -> None:
        """Release the port and the descriptor; blocked callers get EBADF. Idempotent."""
        st = self._stack
        with st._lock:
            if self._closed:
                return
            if self._is_raw:
                st.iface.raw_close(self._state)
            else:
                st.iface.udp_close(self._state)
            self._closed = True
            st._unregister(self)
            self._cond.notify_all()
            os.close(self._efd)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<Socket {self.type.name} closed>"
        local = self._state.local
        remote = self._state.remote
        where = f" {IpAddress(*local)}" if local else ""
        if remote:
            where += f" -> {IpAddress(*remote)}"
        return f"<Socket {self.type.name}{where}>"

    # -- readiness for poll() --------------------------------------------------------------
    def _revents(self, wanted: PollEvent) -> PollEvent:
        with self._stack._lock:
            if self._closed:
                return PollEvent.INVALID
            s = self._state
            got = PollEvent.NONE
            if PollEvent.READ in wanted and (s.queued or s.read_shutdown):
                got |= PollEvent.READ
            if PollEvent.WRITE in wanted and not s.write_shutdown:
                got |= PollEvent.WRITE  # UDP sends never wait
            if s.error is not None:
                got |= PollEvent.ERROR  # always reported, like POLLERR
            if s.read_shutdown and s.write_shutdown:
                got |= PollEvent.HANGUP
            return got


def _flag(value) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise _error(errno.EINVAL, f"expected a bool, got {value!r}")


def _tos(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise _error(errno.EINVAL, f"TOS must be an int in 0..255, got {value!r}")
    return value


def _size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(errno.EINVAL, f"buffer size must be a positive int, got {value!r}")
    return value


def poll(
    sockets: Sequence[Socket],
    events: PollEvent | Sequence[PollEvent] = PollEvent.READ,
    timeout: float | None = None,
) -> list[tuple[Socket, PollEvent]]:
    """Wait until one of ``sockets`` is ready; return ``[(socket, events), ...]``.

    ``events`` is one set of :class:`PollEvent` for all sockets or one per
    socket. ERROR, HANGUP and INVALID are reported whether asked for or not.
    ``timeout`` None waits forever, 0 checks once; an empty list means it
    ran out.
    """
    socks = list(sockets)
    wanted = [events] * len(socks) if isinstance(events, PollEvent) else list(events)
    if len(wanted) != len(socks):
        raise ValueError("events must be one PollEvent or one per socket")
    if not socks and timeout is None:
        raise ValueError("poll() on no sockets without a timeout would wait forever")
    deadline = None if timeout is None else time.monotonic() + timeout
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
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            if cap is not None:
                remaining = cap if remaining is None else min(remaining, cap)
            fired = sel.select(remaining)
            # A socket with data but READ not asked for keeps its fd readable:
            # stop waiting on it and look at it every few milliseconds instead
            # (it can still get an ERROR), rather than spinning.
            for key, _ in fired:
                sel.unregister(key.fd)
                cap = STUCK_FD_RECHECK
