"""DATAGRAM (UDP) and RAW (ICMP) sockets: the socket API over the core's datagram sockets.

The core keeps each socket as plain data (:class:`stack.sockstate.SocketState`);
this class adds blocking, timeouts and a readiness descriptor (an eventfd
readable while ``recv`` would not block). Every call runs under the stack's
lock; blocking calls wait on a condition variable built on it, which the
state's ``on_change`` notifies.
"""
from __future__ import annotations

import errno
import os

from stack.raw import RawSocketState
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
from stack.sockstate import SocketState
from stack.wire import IpProtocol

__all__ = ["DatagramSocket"]


class DatagramSocket(Socket):
    """A UDP (``SocketType.DATAGRAM``) or ICMP raw (``SocketType.RAW``) socket.

    Made by the stack's factory: ``stack.socket(type)`` or ``Socket(type)``.
    """

    def __init__(self, stack: SocketHost, type: SocketType = SocketType.DATAGRAM, protocol: int | None = None) -> None:
        super().__init__(stack, type, IpProtocol.UDP)
        self._signalled = False
        self._fd_watched = False  # fileno() was asked for: from then on the eventfd follows readiness
        with stack.lock:
            try:
                stack.register(self)
                try:
                    self._state = self._open_state(type, protocol)
                except BaseException:
                    stack.unregister(self)
                    raise
            except BaseException:
                self._closed = True  # (nothing to release when it is collected)
                raise
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._state.on_change = weak_callback(self._on_change_locked)
        if isinstance(self._state, RawSocketState):
            self.protocol = self._state.protocol

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
        if self._closed or not self._fd_watched:
            return  # (nobody can be polling a descriptor never handed out: no system calls)
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

    def stack_failed(self, code: int) -> None:
        """The stack's thread died (its lock held): report ``code`` to whoever uses the socket next."""
        if not self._closed:
            self._state.set_error(code)

    def _raise_pending_locked(self) -> None:
        err = self._state.take_error()
        if err is not None:
            self._sync_fd_locked()
            raise socket_error(err)

    @property
    def _is_raw(self) -> bool:
        return isinstance(self._state, RawSocketState)

    # -- addresses -------------------------------------------------------------------
    def bind(self, address: AddressLike) -> None:
        """Bind to a local address; port 0 picks an ephemeral port."""
        addr = address_of(address)
        with self._stack.lock:
            self._check_open_locked()
            if self._is_raw:
                self._stack.iface.raw_bind(self._state, addr.ip)
            else:
                self._stack.iface.udp_bind(self._state, addr.ip, addr.port)

    def connect(self, address: AddressLike) -> None:
        """Fix the peer: ``send``/``recv`` then talk to it only."""
        addr = address_of(address)
        with self._stack.lock:
            self._check_open_locked()
            if self._is_raw:
                self._stack.iface.raw_connect(self._state, addr.ip)
            else:
                self._stack.iface.udp_connect(self._state, addr.ip, addr.port)

    def local_address(self) -> IpAddress:
        """The bound address (0.0.0.0:0 before binding)."""
        with self._stack.lock:
            self._check_open_locked()
            local = self._state.local
        return IpAddress(*local) if local is not None else IpAddress.any()

    def peer_address(self) -> IpAddress:
        """The connected peer; ``OSError(ENOTCONN)`` if not connected."""
        with self._stack.lock:
            self._check_open_locked()
            remote = self._state.remote
        if remote is None:
            raise socket_error(errno.ENOTCONN)
        return IpAddress(*remote)

    # -- stream-only calls: EOPNOTSUPP, as Linux gives for listen(2)/accept(2) on UDP --------
    def listen(self, backlog: int | None = None) -> None:
        """Not for datagrams: ``OSError(EOPNOTSUPP)`` (``EBADF`` once closed)."""
        self._not_a_stream("listen")

    def accept(self) -> tuple["DatagramSocket", IpAddress]:
        """Not for datagrams: ``OSError(EOPNOTSUPP)`` (``EBADF`` once closed)."""
        self._not_a_stream("accept")

    def _not_a_stream(self, call: str):
        with self._stack.lock:
            self._check_open_locked()
        raise socket_error(errno.EOPNOTSUPP, f"{call}() needs a STREAM socket, this one is {self.type.name}")

    # -- data ------------------------------------------------------------------------
    def send(self, data: bytes) -> int:
        """Send one datagram to the connected peer; return its length."""
        return self._send(data, None)

    def send_to(self, data: bytes, address: AddressLike) -> int:
        """Send one datagram to ``address``; return its length."""
        return self._send(data, address_of(address))

    def sendall(self, data: bytes) -> None:
        """Send one datagram to the connected peer, whole (as Python's ``sendall`` on UDP)."""
        self._send(data, None)

    def _send(self, data: bytes, addr: IpAddress | None) -> int:
        payload = bytes(data)
        st = self._stack
        with st.lock:
            self._check_open_locked()
            self._raise_pending_locked()
            now = st.now()
            if self._is_raw:
                n = st.iface.raw_send(self._state, payload, addr.ip if addr else None, now)
            else:
                n = st.iface.udp_send(self._state, payload, (addr.ip, addr.port) if addr else None, now)
            st.pump()
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
        with st.lock:
            timeout = self._timeout
            deadline = self._deadline()
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
                    raise socket_error(errno.EAGAIN, "no datagram waiting (non-blocking socket)")
                if self._expired(deadline):
                    raise socket_error(errno.ETIMEDOUT, "timed out waiting for a datagram")
                self._sleep_locked(deadline)

    # -- modes and options ------------------------------------------------------------
    def set_option(self, option: SocketOption, value) -> None:
        """Set a :class:`SocketOption`; bad values raise ``OSError(EINVAL)``."""
        with self._stack.lock:
            self._check_open_locked()
            s = self._state
            if option is SocketOption.REUSE_ADDR:
                s.reuse_addr = check_flag(value)
            elif option is SocketOption.BROADCAST:
                s.broadcast = check_flag(value)
            elif option is SocketOption.RECEIVE_BUFFER_SIZE:
                s.rcvbuf = check_size(value)
            elif option is SocketOption.SEND_BUFFER_SIZE:
                s.sndbuf = check_size(value)
            elif option is SocketOption.TTL:
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
                    raise socket_error(errno.EINVAL, f"TTL must be an int in 1..255, got {value!r}")
                s.ttl = value
            elif option is SocketOption.TOS:
                s.tos = check_tos(value)
            else:
                raise socket_error(errno.ENOPROTOOPT, f"unknown socket option {option!r}")

    def get_option(self, option: SocketOption):
        """The current value of a :class:`SocketOption`."""
        with self._stack.lock:
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
            raise socket_error(errno.ENOPROTOOPT, f"unknown socket option {option!r}")
        return values[option]

    def tcp_info(self):
        """TCP's snapshot (STREAM sockets only): OSError(ENOPROTOOPT) here, as Linux's
        getsockopt(TCP_INFO) on a UDP or RAW socket."""
        with self._stack.lock:
            self._check_open_locked()
        raise socket_error(errno.ENOPROTOOPT, f"tcp_info() needs a STREAM socket, this one is {self.type.name}")

    def take_error(self) -> OSError | None:
        """Return and clear the pending asynchronous error (like SO_ERROR)."""
        with self._stack.lock:
            self._check_open_locked()
            err = self._state.take_error()
            self._sync_fd_locked()
        return socket_error(err) if err is not None else None

    def shutdown(self, how: Shutdown) -> None:
        """Stop receiving (READ: recv returns b""), sending (WRITE: EPIPE) or both."""
        if not isinstance(how, Shutdown) or not how:
            raise ValueError("how must be Shutdown.READ, WRITE or BOTH")
        with self._stack.lock:
            self._check_open_locked()
            if self._state.remote is None:
                raise socket_error(errno.ENOTCONN, "shutdown needs a connected socket")
            self._state.shutdown(read=Shutdown.READ in how, write=Shutdown.WRITE in how)

    # -- descriptors and closing --------------------------------------------------------
    def fileno(self) -> int:
        """An eventfd readable while ``recv`` would not block (-1 once closed).

        It follows readiness from the first call on, so a socket used only with
        blocking calls costs no system calls to signal it."""
        if not self._fd_watched:
            with self._stack.lock:
                self._fd_watched = True
                self._sync_fd_locked()
        return -1 if self._closed else self._efd

    def _close_locked(self, collected: bool) -> None:
        """Release the port and the descriptor; blocked callers get EBADF (``close()``). Idempotent."""
        if self._closed:
            return
        st = self._stack
        if self._is_raw:
            st.iface.raw_close(self._state)
        else:
            st.iface.udp_close(self._state)
        self._closed = True
        st.unregister(self)
        self._cond.notify_all()
        os.close(self._efd)

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
        with self._stack.lock:
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
