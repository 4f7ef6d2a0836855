"""The two I/O edges the protocol runs on: a UDP socket of a MultiOS stack, and
one of the host kernel (Python's ``socket`` module). Both offer the same few
calls, so the run loops (``transfer``) do not know which one they drive.

A datagram the network refuses to take (a full queue, no ARP answer yet) is
counted in ``send_errors`` and otherwise treated as lost: the protocol
resends what matters.
"""
from __future__ import annotations

import errno
import socket

Peer = tuple[str, int]
RECEIVE_BUFFER = 4 << 20  # room for several windows while the loop is busy writing or hashing
# Errors of one datagram that the retransmissions cover.
TRANSIENT = (errno.ENOBUFS, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOMEM)


# Linux's SO_RCVBUFFORCE/SO_SNDBUFFORCE (not in Python's socket module): root may pass rmem_max/wmem_max.
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32


def _set_buffer(sock: socket.socket, forced: int, option: int) -> None:
    """A buffer of RECEIVE_BUFFER bytes: forced past the system's cap when allowed (root),
    else as much as the cap (rmem_max, 208 KiB by default: about 90 full datagrams) lets."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)


class NothingListens(Exception):
    """The peer's host answered ICMP port unreachable: no receiver on that port."""


class _Endpoint:
    """What both edges share: the errors of a send or a receive, mapped the same way.
    Subclasses give ``_send_raw(data, peer)`` and ``_receive_raw() -> (data, peer)``."""

    send_errors: int
    _peer: Peer | None

    def send(self, data: bytes, peer: Peer) -> None:
        try:
            self._send_raw(data, peer)
        except ConnectionRefusedError:
            raise NothingListens(f"nothing listens on {peer[0]}:{peer[1]} (port unreachable)") from None
        except OSError as exc:
            if exc.errno not in TRANSIENT:
                raise
            self.send_errors += 1

    def receive(self, timeout: float) -> tuple[bytes, Peer] | None:
        """The next datagram and its sender; None if none came within ``timeout`` seconds (0: do not wait)."""
        self._set_timeout(timeout if timeout > 0 else 0)
        try:
            return self._receive_raw()
        except (BlockingIOError, TimeoutError):
            return None
        except ConnectionRefusedError:
            peer = self._peer or ("?", 0)
            raise NothingListens(f"nothing listens on {peer[0]}:{peer[1]} (port unreachable)") from None
        except OSError as exc:
            if exc.errno not in TRANSIENT:
                raise
            self.send_errors += 1  # an earlier datagram's ICMP error or ARP failure: it was lost
            return None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class KernelEndpoint(_Endpoint):
    """A UDP socket of the host kernel."""

    def __init__(self, bind: Peer = ("0.0.0.0", 0)) -> None:
        self.send_errors = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for forced, option in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
                _set_buffer(self._sock, forced, option)
            self._sock.bind(bind)
        except BaseException:
            self._sock.close()
            raise
        self._peer: Peer | None = None

    @property
    def local(self) -> Peer:
        return self._sock.getsockname()

    def connect(self, peer: Peer) -> None:
        """Talk to ``peer`` only (and hear its host's ICMP port unreachable)."""
        self._sock.connect(peer)
        self._peer = peer

    def _send_raw(self, data: bytes, peer: Peer) -> None:
        if self._peer is not None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, peer)

    def _set_timeout(self, timeout: float) -> None:
        self._sock.settimeout(timeout)

    def _receive_raw(self) -> tuple[bytes, Peer]:
        data, source = self._sock.recvfrom(65535)
        return data, (source[0], source[1])


class StackEndpoint(_Endpoint):
    """A DATAGRAM socket of a MultiOS stack."""

    def __init__(self, stack, port: int = 0) -> None:
        from stack import IpAddress, SocketOption, SocketType

        self._ip_address = IpAddress
        self.send_errors = 0
        self._sock = stack.socket(SocketType.DATAGRAM)
        try:
            self._sock.set_option(SocketOption.RECEIVE_BUFFER_SIZE, RECEIVE_BUFFER)
            self._sock.bind(IpAddress.any(port))
        except BaseException:
            self._sock.close()
            raise
        self._peer: Peer | None = None

    @property
    def local(self) -> Peer:
        address = self._sock.local_address()
        return str(address.ip), address.port

    def connect(self, peer: Peer) -> None:
        self._sock.connect(self._ip_address(*peer))
        self._peer = peer

    def _send_raw(self, data: bytes, peer: Peer) -> None:
        if self._peer is not None:
            self._sock.send(data)
        else:
            self._sock.send_to(data, self._ip_address(*peer))

    def _set_timeout(self, timeout: float) -> None:
        self._sock.set_timeout(timeout)

    def _receive_raw(self) -> tuple[bytes, Peer]:
        data, source = self._sock.recv_from(65535)
        return data, (str(source.ip), source.port)
