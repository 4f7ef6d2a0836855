"""STREAM (TCP) sockets: the socket API over the TCP engine.

``stack.socket(SocketType.STREAM)`` (and so ``Socket(SocketType.STREAM)``)
returns a :class:`StreamSocket`. It holds, at
different times, nothing, a port reservation (``bind``), a
:class:`~stack.tcp.listener.TcpListener` (``listen``) or a
:class:`~stack.tcp.connection.TcpConnection` (``connect``/``accept``); the
engine lives in the interface's :class:`~stack.tcp.glue.TcpLayer`, reached
through the interface's ``tcp_*`` socket calls, and every
call here runs under the stack's one lock, so a socket may be used from
several threads at once. Blocking calls wait on a condition variable built
on that lock; the engine's ``on_change`` callback wakes them when the
socket's readiness changes.

Readiness (``fileno()`` through :class:`~stack.readyfd.ReadyFd`, and
:func:`stack.poll`):

* readable: data waits, end of stream, a pending error, or (listener) a
  connection to accept;
* writable: connected with room in the send buffer, a pending error, a
  failed connection attempt, or the write side shut down (a send then fails
  at once instead of blocking);
* HANGUP (``stack.poll``; POLLHUP on the descriptor): the connection is over
  in both directions, or it was reset / timed out;
* ERROR (``stack.poll`` only): an error is pending (``take_error()``).

Errors follow Linux: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH and ECONNRESET come
from the engine; ENOTCONN, EISCONN, EALREADY, EINPROGRESS, EPIPE
(BrokenPipeError), EINVAL and EADDRINUSE from the socket calls here.
"""
from __future__ import annotations

import dataclasses
import errno
from ipaddress import IPv4Address

from stack.readyfd import ReadyFd
from stack.socket_api import (
    AddressLike,
    IpAddress,
    PollEvent,
    Shutdown,
    Socket,
    SocketOption,
    SocketType,
    address_of,
    check_flag,
    check_size,
    check_tos,
    socket_error,
    weak_callback,
)
from stack.socket_host import SocketHost
from stack.tcp.config import TcpConfig
from stack.tcp.congestion import ALGORITHMS
from stack.tcp.connection import TcpConnection, TcpInfo
from stack.tcp.listener import ListenerInfo, TcpListener
from stack.tcp.state import TcpState
from stack.wire import IpProtocol

__all__ = ["StreamSocket", "DEFAULT_BACKLOG"]

DEFAULT_BACKLOG = 128  # what Python's socket.listen() uses when given no backlog
ANY = IPv4Address(0)
CLOSED = TcpState.CLOSED
SYN_SENT = TcpState.SYN_SENT


def _seconds(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise socket_error(errno.EINVAL, f"expected a number of seconds > 0, got {value!r}")
    return float(value)


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise socket_error(errno.EINVAL, f"expected an int >= 1, got {value!r}")
    return value


def _ttl(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise socket_error(errno.EINVAL, f"TTL must be an int in 1..255, got {value!r}")
    return value


def _stream_tos(value) -> int:
    # Like Linux's IP_TOS on a TCP socket: the ECN bits belong to TCP (which
    # does no ECN here), so only the DSCP part is taken.
    return check_tos(value) & ~0x03


def _congestion(value) -> str:
    if not isinstance(value, str) or value.lower() not in ALGORITHMS:
        raise socket_error(errno.EINVAL, f"congestion control must be one of {sorted(ALGORITHMS)}, got {value!r}")
    return value.lower()


def _linger(value) -> float | None:
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise socket_error(errno.EINVAL, f"LINGER is None (off) or seconds >= 0, got {value!r}")
    return float(value)


# Options that are TcpConfig fields: option -> (field, validator).
_CONFIG_OPTIONS = {
    SocketOption.TCP_NO_DELAY: ("nodelay", check_flag),
    SocketOption.RECEIVE_BUFFER_SIZE: ("rcvbuf", check_size),
    SocketOption.SEND_BUFFER_SIZE: ("sndbuf", check_size),
    SocketOption.KEEP_ALIVE: ("keepalive", check_flag),
    SocketOption.KEEP_IDLE: ("keepalive_idle", _seconds),
    SocketOption.KEEP_INTERVAL: ("keepalive_interval", _seconds),
    SocketOption.KEEP_COUNT: ("keepalive_count", _count),
    SocketOption.TTL: ("ttl", _ttl),
    SocketOption.TOS: ("tos", _stream_tos),
    SocketOption.CONGESTION: ("congestion", _congestion),
}


class StreamSocket(Socket):
    """A TCP socket (see the module docstring for readiness and errors)."""

    _fd_signals_write = True

    def __init__(self, stack: SocketHost, protocol: int | None = None) -> None:
        if protocol not in (None, 0, IpProtocol.TCP):
            raise OSError(errno.EPROTONOSUPPORT, f"STREAM sockets are TCP, not protocol {protocol}")
        self._setup(stack)
        with stack.lock:
            try:
                stack.register(self)
            except BaseException:
                self._closed = True  # (nothing to release when it is collected)
                raise

    def _setup(self, st: SocketHost) -> None:
        Socket.__init__(self, st, SocketType.STREAM, IpProtocol.TCP)
        self._conn: TcpConnection | None = None
        self._listener: TcpListener | None = None
        self._bound: tuple[IPv4Address, int] | None = None  # a bind() not yet used by listen/connect
        self._error: int | None = None  # the stack's own trouble (ENETDOWN), reported once
        self._connect_reported = False  # connect() (or accept()) has told the caller it is connected
        self._shut_rd = False
        self._shut_wr = False
        self._reuse_addr = False
        self._linger: float | None = None
        self._changes: dict[str, object] = {}  # TcpConfig fields set through options
        self._ready: tuple[bool, bool, bool] | None = None  # last (readable, writable, hangup) signalled
        # Made by the first fileno() call, which then follows readiness; a socket used only with
        # blocking calls or a Poller costs no descriptor and no system calls to signal it.
        self._fd: ReadyFd | None = None
        self._pollers: dict = {}  # the stack.socket_api.Poller objects told of every change of readiness

    @classmethod
    def _accepted(cls, parent: "StreamSocket", conn: TcpConnection) -> "StreamSocket":
        """The socket accept() returns: the parent's options, blocking, connected."""
        st = parent._stack
        sock = object.__new__(cls)
        sock._setup(st)
        try:
            st.register(sock)
        except BaseException:
            sock._closed = True  # (nothing to release when it is collected; the caller still has conn)
            raise
        sock._reuse_addr = parent._reuse_addr
        sock._linger = parent._linger
        sock._changes = dict(parent._changes)
        sock._conn = conn
        sock._connect_reported = True
        conn.on_change = weak_callback(sock._on_change_locked)
        sock._sync_fd_locked()
        return sock

    # -- readiness plumbing (stack lock held) ---------------------------------------------
    def _readiness_locked(self) -> tuple[bool, bool, bool, bool]:
        """(readable, writable, hangup, error) as defined in the module docstring."""
        err = self._error is not None
        c = self._conn
        if c is not None:
            err = err or c.error is not None
            hangup = c.state is CLOSED or (self._shut_wr and c.eof)
            return (c.readable or self._shut_rd or err, c.writable or self._shut_wr or err, hangup, err)
        if self._listener is not None:
            return (self._listener.readable or err, err, False, err)
        return (err, err, False, err)

    def _on_change_locked(self) -> None:
        # Called by the engine for every segment that changed something: wake
        # waiters and touch the descriptor only when readiness really changed.
        readable, writable, hangup, _ = self._readiness_locked()
        if (readable, writable, hangup) != self._ready:
            self._cond.notify_all()
            self._sync_fd_locked()

    def _sync_fd_locked(self) -> None:
        if self._closed:
            return
        readable, writable, hangup, _ = self._readiness_locked()
        ready = (readable, writable, hangup)
        if ready != self._ready:
            self._ready = ready
            for poller in self._pollers:
                poller._socket_changed(self)
        if self._fd is None:
            return  # (nobody can be polling a descriptor never handed out: no system calls)
        c = self._conn
        if hangup and c is not None and c.connected:
            self._fd.hang_up()  # final: the connection can never come back
        else:
            # A failed attempt is not made final, because connect() may try again.
            self._fd.set(readable, writable)

    def stack_failed(self, code: int) -> None:
        """The stack's thread died (its lock held): report ``code`` to whoever uses the socket next."""
        if not self._closed:
            self._error = code
            self._cond.notify_all()
            self._sync_fd_locked()

    def _raise_socket_error_locked(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            self._sync_fd_locked()
            raise socket_error(err)

    def _take_conn_error_locked(self, c: TcpConnection) -> None:
        err = c.take_error()
        if err is not None:
            self._sync_fd_locked()
            raise socket_error(err)

    def _wait_locked(self, deadline: float | None, what: str) -> None:
        """Wait for a change; ``BlockingIOError`` / ``TimeoutError`` per the timeout."""
        if self._timeout == 0:
            raise socket_error(errno.EAGAIN, f"{what} would block (non-blocking socket)")
        if self._expired(deadline):
            raise socket_error(errno.ETIMEDOUT, f"timed out: {what}")
        self._sync_fd_locked()  # so the engine's next change of readiness wakes us
        self._sleep_locked(deadline)

    def _config(self) -> TcpConfig | None:
        """This socket's TcpConfig, or None for the interface's default."""
        if not self._changes:
            return None
        return dataclasses.replace(self._stack.iface.tcp_config, **self._changes)

    def _pump_quietly_locked(self) -> None:
        try:
            self._stack.pump()
        except OSError:
            pass  # the stack died; the socket still closes cleanly

    # -- addresses ---------------------------------------------------------------------------
    def bind(self, address: AddressLike) -> None:
        """Reserve a local address; port 0 picks an ephemeral port (RFC 6056)."""
        addr = address_of(address)
        with self._stack.lock:
            self._check_open_locked()
            if self._bound is not None or self._conn is not None or self._listener is not None:
                raise socket_error(errno.EINVAL, "socket is already bound")
            port = self._stack.iface.tcp_bind(addr.ip, addr.port, self._reuse_addr)
            self._bound = (addr.ip, port)

    def local_address(self) -> IpAddress:
        """The local address (0.0.0.0:0 before bind/listen/connect)."""
        with self._stack.lock:
            self._check_open_locked()
            if self._conn is not None:
                return IpAddress(*self._conn.local)
            if self._listener is not None:
                return IpAddress(*self._listener.local)
            return IpAddress(*self._bound) if self._bound is not None else IpAddress.any()

    def peer_address(self) -> IpAddress:
        """The peer of a connected socket; ``OSError(ENOTCONN)`` otherwise."""
        with self._stack.lock:
            self._check_open_locked()
            c = self._conn
            if c is None or not c.connected or c.state is CLOSED:
                raise socket_error(errno.ENOTCONN)
            return IpAddress(*c.remote)

    # -- passive open ---------------------------------------------------------------------------
    def listen(self, backlog: int = DEFAULT_BACKLOG) -> None:
        """Accept connections; ``backlog`` bounds the accept queue (see stack.tcp.listener).

        An unbound socket gets an ephemeral port first, as on Linux. A second
        call changes the backlog.
        """
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError(f"backlog must be an int, got {backlog!r}")
        st = self._stack
        with st.lock:
            self._check_open_locked()
            if self._conn is not None:
                raise socket_error(errno.EINVAL, "a connected socket cannot listen")
            if self._listener is not None:
                self._listener.listen(backlog)
                return
            if self._bound is None:
                self._bound = (ANY, st.iface.tcp_bind(ANY, 0, self._reuse_addr))
            lst = st.iface.tcp_listen(*self._bound, backlog, config=self._config())
            self._bound = None
            self._listener = lst
            lst.on_change = weak_callback(self._on_change_locked)
            self._sync_fd_locked()

    def accept(self) -> tuple["StreamSocket", IpAddress]:
        """The next connection: ``(socket, peer address)``.

        Blocks per the timeout (BlockingIOError when non-blocking and none is
        waiting, TimeoutError when the time runs out). The new socket is
        blocking and has this socket's options.
        """
        st = self._stack
        with st.lock:
            deadline = self._deadline()
            while True:
                self._check_open_locked()
                self._raise_socket_error_locked()
                lst = self._listener
                if lst is None or lst.closed:
                    raise socket_error(errno.EINVAL, "socket is not listening")
                conn = st.iface.tcp_accept(lst)
                if conn is not None:
                    child = StreamSocket._accepted(self, conn)
                    self._sync_fd_locked()
                    return child, IpAddress(*conn.remote)
                self._wait_locked(deadline, "accept")

    # -- active open ------------------------------------------------------------------------------
    def connect(self, address: AddressLike) -> None:
        """Open a connection to ``address``.

        Blocking: returns once connected, or raises ConnectionRefusedError,
        TimeoutError (ETIMEDOUT: no answer; or this socket's timeout ran out,
        the attempt then goes on), OSError(EHOSTUNREACH)... Non-blocking:
        raises BlockingIOError(EINPROGRESS); the socket becomes writable when
        the attempt ends, and ``take_error()`` says how. A second call gives
        EALREADY while connecting, and EISCONN once connected.
        """
        addr = address_of(address)
        st = self._stack
        with st.lock:
            self._check_open_locked()
            self._raise_socket_error_locked()
            if self._listener is not None:
                raise socket_error(errno.EISCONN, "a listening socket cannot connect")
            c = self._conn
            if c is not None and c.state is CLOSED and not c.connected:
                # The last attempt failed: report it once, then allow a new one (as Linux).
                err = c.take_error()
                self._drop_connection_locked()
                if err is not None:
                    raise socket_error(err)
                c = None
            if c is not None:
                if c.connected:
                    if self._connect_reported:
                        raise socket_error(errno.EISCONN, "socket is already connected")
                    self._connect_reported = True
                    return
                if self._timeout == 0:
                    raise socket_error(errno.EALREADY, "a connection attempt is in progress")
            else:
                c = st.iface.tcp_connect(addr.ip, addr.port, st.now(), local=self._bound, config=self._config())
                self._bound = None
                self._conn = c
                self._connect_reported = False
                c.on_change = weak_callback(self._on_change_locked)
                st.pump()
                self._sync_fd_locked()
                if self._timeout == 0:
                    raise socket_error(errno.EINPROGRESS, f"connecting to {addr}")
            deadline = self._deadline()
            while True:
                self._check_open_locked()
                self._raise_socket_error_locked()
                if c.connected:
                    self._connect_reported = True
                    return
                if c.state is CLOSED:
                    err = c.take_error() or errno.ECONNABORTED
                    self._drop_connection_locked()
                    raise socket_error(err, f"connect to {addr}: {errno.errorcode.get(err, err)}")
                if self._expired(deadline):
                    raise socket_error(errno.ETIMEDOUT, f"timed out connecting to {addr} (the attempt goes on)")
                self._sync_fd_locked()
                self._sleep_locked(deadline)

    def _drop_connection_locked(self) -> None:
        """Forget a failed attempt (the engine forgets it too once CLOSED)."""
        if self._conn is not None:
            self._conn.on_change = None
        self._conn = None
        self._shut_rd = self._shut_wr = False
        self._sync_fd_locked()

    # -- data ------------------------------------------------------------------------------------
    def _connection_locked(self) -> TcpConnection:
        if self._conn is None:
            raise socket_error(errno.ENOTCONN, "socket is not connected")
        return self._conn

    def send(self, data) -> int:
        """Queue bytes for the peer; return how many were taken.

        Blocking: waits for room until everything is queued (with a timeout,
        returns what was queued before it ran out, or TimeoutError if
        nothing was). Non-blocking: takes what fits, BlockingIOError if
        nothing does. BrokenPipeError after shutdown(WRITE) or once the
        connection is gone; ConnectionResetError if the peer reset it.
        """
        return self._send(memoryview(data).cast("B"), partial_ok=True)

    def sendall(self, data) -> None:
        """Send every byte; the timeout bounds the whole call, as in Python's socket.

        On a non-blocking socket, BlockingIOError once the buffer is full
        (what was queued before stays queued).
        """
        self._send(memoryview(data).cast("B"), partial_ok=False)

    def _send(self, view: memoryview, partial_ok: bool) -> int:
        total = len(view)
        st = self._stack
        with st.lock:
            deadline = self._deadline()
            sent = 0
            while True:
                self._check_open_locked()
                self._raise_socket_error_locked()
                c = self._connection_locked()
                if self._shut_wr:
                    raise socket_error(errno.EPIPE, "socket is shut down for writing")
                if c.state is not SYN_SENT:  # as Linux: a send waits for the handshake
                    try:
                        n = c.send(view[sent:]) if sent < total else 0
                    except OSError:
                        self._sync_fd_locked()
                        if sent and partial_ok:
                            return sent
                        raise
                    if n:
                        sent += n
                        st.pump()
                    if sent == total:
                        self._sync_fd_locked()
                        return sent
                out_of_time = self._timeout == 0 or self._expired(deadline)
                if out_of_time and sent and partial_ok:
                    self._sync_fd_locked()
                    return sent
                self._wait_locked(deadline, f"send (queued {sent} of {total} bytes)")

    def send_to(self, data, address: AddressLike) -> int:
        """Not for TCP: EISCONN on a connected socket, ENOTCONN otherwise (as BSD)."""
        address_of(address)
        with self._stack.lock:
            self._check_open_locked()
            connected = self._conn is not None and self._conn.connected
        raise socket_error(errno.EISCONN if connected else errno.ENOTCONN, "STREAM sockets send with send()")

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` received bytes; ``b""`` at end of stream.

        Blocks per the timeout. A pending error (ConnectionResetError,
        TimeoutError for ETIMEDOUT...) is raised after the data that came
        before it has been read.
        """
        if bufsize < 0:
            raise ValueError("negative buffer size in recv")
        st = self._stack
        with st.lock:
            deadline = self._deadline()
            while True:
                self._check_open_locked()
                self._raise_socket_error_locked()
                c = self._connection_locked()
                if self._shut_rd:
                    return b""
                data = c.recv(bufsize)
                if data:
                    if c.poll_at() == 0.0:
                        st.pump()  # the window opened: the update goes out now
                    self._sync_fd_locked()
                    return data
                if bufsize == 0:
                    return b""
                self._take_conn_error_locked(c)
                if c.eof:
                    return b""
                self._wait_locked(deadline, "recv")

    def recv_from(self, bufsize: int) -> tuple[bytes, IpAddress]:
        """``recv`` plus the peer's address."""
        data = self.recv(bufsize)
        with self._stack.lock:
            c = self._conn
            peer = IpAddress(*c.remote) if c is not None else IpAddress.any()
        return data, peer

    # -- options ----------------------------------------------------------------------------------
    def set_option(self, option: SocketOption, value) -> None:
        """Set a :class:`SocketOption` (TCP ones apply to the live connection at once)."""
        st = self._stack
        with st.lock:
            self._check_open_locked()
            if option is SocketOption.REUSE_ADDR:
                self._reuse_addr = check_flag(value)
                return
            if option is SocketOption.LINGER:
                self._linger = _linger(value)
                return
            if option not in _CONFIG_OPTIONS:
                raise socket_error(errno.ENOPROTOOPT, f"{option!r} is not an option of STREAM sockets")
            field, check = _CONFIG_OPTIONS[option]
            value = check(value)
            try:
                dataclasses.replace(st.iface.tcp_config, **{field: value})
            except ValueError as exc:
                raise socket_error(errno.EINVAL, str(exc)) from None
            self._changes[field] = value
            if self._conn is not None:
                self._conn.configure(**{field: value})
                self._pump_quietly_locked()
                self._sync_fd_locked()
            elif self._listener is not None:
                self._listener.config = dataclasses.replace(self._listener.config, **{field: value})

    def get_option(self, option: SocketOption):
        """The current value of a :class:`SocketOption` (ERROR clears the pending error)."""
        with self._stack.lock:
            self._check_open_locked()
            if option is SocketOption.REUSE_ADDR:
                return self._reuse_addr
            if option is SocketOption.LINGER:
                return self._linger
            if option is SocketOption.ERROR:
                err = self._take_any_error_locked()
                return err or 0
            if option not in _CONFIG_OPTIONS:
                raise socket_error(errno.ENOPROTOOPT, f"{option!r} is not an option of STREAM sockets")
            field = _CONFIG_OPTIONS[option][0]
            if field in self._changes:
                return self._changes[field]
            return getattr(self._stack.iface.tcp_config, field)

    def _take_any_error_locked(self) -> int | None:
        err, self._error = self._error, None
        if err is None and self._conn is not None:
            err = self._conn.take_error()
        self._sync_fd_locked()
        return err

    def take_error(self) -> OSError | None:
        """Return and clear the pending error (SO_ERROR); how a non-blocking connect ended."""
        with self._stack.lock:
            self._check_open_locked()
            err = self._take_any_error_locked()
        return socket_error(err) if err is not None else None

    # -- ending ----------------------------------------------------------------------------------
    def shutdown(self, how: Shutdown) -> None:
        """WRITE sends a FIN after the queued data (the peer's recv gets b""); READ makes
        recv return b"" (data that arrives later is dropped). On a listener, READ stops
        listening and wakes accept() with EINVAL."""
        if not isinstance(how, Shutdown) or not how:
            raise ValueError("how must be Shutdown.READ, WRITE or BOTH")
        st = self._stack
        with st.lock:
            self._check_open_locked()
            lst = self._listener
            if lst is not None and not lst.closed:
                if Shutdown.READ in how:
                    st.iface.tcp_close_listener(lst)
                    self._cond.notify_all()
                    self._pump_quietly_locked()
                    self._sync_fd_locked()
                return
            c = self._conn
            if c is None or (c.state is CLOSED and not c.connected):
                raise socket_error(errno.ENOTCONN, "shutdown needs a connected socket")
            if Shutdown.WRITE in how and not self._shut_wr:
                self._shut_wr = True
                c.shutdown_write()
            if Shutdown.READ in how and not self._shut_rd:
                self._shut_rd = True
                c.shutdown_read()
            self._cond.notify_all()
            self._pump_quietly_locked()
            self._sync_fd_locked()

    def close(self) -> None:
        """Close the socket. Idempotent; threads blocked in it get EBADF.

        LINGER off (default): a graceful close (FIN after the queued data)
        goes on in the background. LINGER 0: the connection is reset (RST)
        and queued data is dropped. LINGER N: like the default, but close
        waits up to N seconds for everything to be sent and acknowledged.
        Unread received data turns a close into a reset, as on Linux.
        """
        with self._stack.lock:
            self._close_locked(collected=False)

    def _close_locked(self, collected: bool) -> None:
        if self._closed:
            return
        st = self._stack
        self._closed = True
        c, lst = self._conn, self._listener
        wait_for = None
        if lst is not None:
            lst.on_change = None
            if not lst.closed:
                st.iface.tcp_close_listener(lst)
        elif c is None and self._bound is not None:
            st.iface.tcp_unbind(*self._bound)
        if c is not None:
            c.on_change = None
            if self._linger == 0:
                c.abort()
            else:
                c.close()
                if self._linger is not None and c.state is not CLOSED and not collected:
                    wait_for = self._linger
        st.unregister(self)
        self._cond.notify_all()
        if self._fd is not None:
            self._fd.close()
        for poller in self._pollers:
            poller._socket_changed(self)  # it finds the socket closed (INVALID)
        self._pump_quietly_locked()
        if wait_for is not None:
            self._linger_locked(c, wait_for)

    def _linger_locked(self, c: TcpConnection, seconds: float) -> None:
        """SO_LINGER: wait until all is acknowledged, the connection ends, or time runs out."""
        st = self._stack
        c.on_change = self._cond.notify_all
        deadline = st.now() + seconds
        try:
            while not (c.all_acked or c.state is CLOSED) and st.running:
                if self._expired(deadline):
                    return
                self._sleep_locked(deadline)
        finally:
            c.on_change = None

    # -- visibility ------------------------------------------------------------------------------
    def tcp_info(self) -> TcpInfo | ListenerInfo:
        """A snapshot, taken under the stack's lock (like Linux's TCP_INFO).

        A socket with a connection (connecting, connected, or closed by the
        peer or an error) gets a :class:`~stack.tcp.connection.TcpInfo`:
        state, addresses, queues, cwnd, srtt, retransmits... and the engine's
        per-connection ``counters``. A listening socket gets a
        :class:`~stack.tcp.listener.ListenerInfo`: accept and SYN queues,
        backlog and the listener's ``counters`` (SYN cookies, drops...). Both
        have ``state`` and ``local``. ``OSError(ENOTCONN)`` for a socket with
        neither (fresh, only bound, or a failed connect already reported),
        EBADF once closed.
        """
        with self._stack.lock:
            self._check_open_locked()
            if self._listener is not None:
                return self._listener.info()
            return self._connection_locked().info()

    def fileno(self) -> int:
        """A descriptor that select/selectors/poll see readable, writable or hung up (-1 once closed).

        It is made by the first call (OSError EMFILE when the process is out of
        descriptors) and follows readiness from then on, so a socket used only
        with blocking calls or a :class:`~stack.socket_api.Poller` costs none."""
        with self._stack.lock:
            if self._closed:
                return -1
            if self._fd is None:
                self._fd = ReadyFd()
                self._ready = None  # signal the current readiness on the new descriptor
                self._sync_fd_locked()
            return self._fd.fileno()

    # -- the Poller's side (stack.socket_api.Poller) -------------------------------------------
    _tells_pollers = True  # a Poller watches this socket without a descriptor

    def _add_poller(self, poller) -> None:
        with self._stack.lock:
            self._pollers[poller] = None

    def _remove_poller(self, poller) -> None:
        with self._stack.lock:
            self._pollers.pop(poller, None)

    def __repr__(self) -> str:
        if self._closed:
            return "<Socket STREAM closed>"
        c = self._conn
        if c is not None:
            return (f"<Socket STREAM {IpAddress(*c.local)} -> {IpAddress(*c.remote)} {c.state}>")
        if self._listener is not None:
            return f"<Socket STREAM {IpAddress(*self._listener.local)} LISTEN>"
        return f"<Socket STREAM{' ' + str(IpAddress(*self._bound)) if self._bound else ''}>"

    def _revents(self, wanted: PollEvent) -> PollEvent:
        with self._stack.lock:
            if self._closed:
                return PollEvent.INVALID
            readable, writable, hangup, err = self._readiness_locked()
            got = PollEvent.NONE
            if PollEvent.READ in wanted and readable:
                got |= PollEvent.READ
            if PollEvent.WRITE in wanted and writable:
                got |= PollEvent.WRITE
            if err:
                got |= PollEvent.ERROR
            if hangup:
                got |= PollEvent.HANGUP
            return got
