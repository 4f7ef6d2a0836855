"""The far end of QEMU's socket netdevs, for guests that keep QEMU's own NIC emulation.

QEMU's `-netdev stream` and `-netdev dgram` carry bare Ethernet frames (no
virtio header):

- stream: a byte stream, each frame prefixed by its length as a 4-byte
  big-endian integer. `StreamPort` listens on a unix socket; QEMU connects
  with `-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH`.
  One peer at a time; when it leaves, the port waits for the next one.
- dgram: one frame per datagram. `DgramPort` binds `local` and sends to
  `remote`, over UDP or unix datagram sockets; QEMU's side is
  `-netdev dgram,id=n0,local.type=inet,local.host=H,local.port=P,remote.type=inet,...`
  with the two addresses swapped.

Neither carries a virtio header, so these ports take no offload metadata:
the switch hands them finished frames (segmented, checksums completed), so
`transmit`'s `meta` is always None, and they deliver finished frames.

Bad input from a peer never raises: a stream whose length prefix is 0 or
larger than any frame closes that connection (logged, counted); a bad
datagram is dropped and counted.
"""
from __future__ import annotations

import collections
import errno
import ipaddress
import itertools
import logging
import os
import socket
import stat
import struct

from nicdev.virtio.offload import FrameMeta

from .errors import PortError
from .fd_burst import DgramReader, DgramWriter
from .ethernet import MAX_FRAME_LEN
from .port import Port

log = logging.getLogger(__name__)

__all__ = ["StreamPort", "DgramPort", "StreamDecoder", "encode_stream_frame", "parse_inet_address",
           "DEFAULT_MAX_PENDING"]

_LEN = struct.Struct(">I")
_SUN_PATH_MAX = 107                     # sockaddr_un.sun_path minus its terminating NUL
DEFAULT_MAX_PENDING = 1 << 20           # bytes queued for a slow stream peer before we drop
_RECV_SIZE = 256 * 1024
_BURST = 64                             # datagrams per readable event
_RETRY_DELAY = 0.001                    # the loop has no writable events: retry a blocked send soon
_SOCKBUF = 1 << 20


# -- stream framing (sans-IO) ----------------------------------------------
def encode_stream_frame(frame: bytes) -> bytes:
    """One frame as QEMU's stream netdev expects it: 4-byte big-endian length, then the bytes."""
    return _LEN.pack(len(frame)) + frame


class StreamDecoder:
    """Splits a length-prefixed byte stream into frames, across arbitrary read boundaries.

    `feed()` returns the complete frames so far. A length of 0 or above
    `max_frame` cannot be resynchronised: `error` is set, the frames before
    it are still returned, and everything after it is ignored.
    """

    def __init__(self, max_frame: int = MAX_FRAME_LEN) -> None:
        self.max_frame = max_frame
        self.error: str | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if self.error:
            return []
        buf = self._buf
        buf += data
        frames = []
        off = 0
        end = len(buf)
        while end - off >= 4:
            (n,) = _LEN.unpack_from(buf, off)
            if n == 0 or n > self.max_frame:
                self.error = f"bad frame length {n} (allowed 1..{self.max_frame})"
                break
            if end - off - 4 < n:
                break
            frames.append(bytes(buf[off + 4:off + 4 + n]))
            off += 4 + n
        del buf[:off]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf)


# -- unix socket paths -------------------------------------------------------
def _check_unix_path(port_name: str, path: str) -> str:
    if not path:
        raise PortError(f"port {port_name!r}: empty socket path")
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise PortError(f"port {port_name!r}: socket path longer than {_SUN_PATH_MAX} bytes: {path}")
    return path


def _claim_unix_path(port_name: str, path: str, sock_type: int) -> None:
    """Remove a stale socket left at `path` by a dead process; refuse a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise PortError(f"port {port_name!r}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, sock_type | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)                 # nobody there: a leftover from an earlier run
        return
    except OSError as exc:
        raise PortError(f"port {port_name!r}: cannot check {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise PortError(f"port {port_name!r}: {path} is in use by another program")


def _bind_unix(port_name: str, sock: socket.socket, path: str) -> tuple[int, int]:
    try:
        sock.bind(path)
        st = os.stat(path)
    except OSError as exc:
        raise PortError(f"port {port_name!r}: cannot bind {path}: {exc.strerror}") from None
    return st.st_dev, st.st_ino


def _unlink_if_ours(path: str, ident: tuple[int, int] | None) -> None:
    # Only remove the socket file we made, not one a later process put there.
    if ident is None:
        return
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


class _Pending:
    """One frame record queued for a stream peer; `view` is what is still unsent."""

    __slots__ = ("view", "frame_len")

    def __init__(self, view: memoryview, frame_len: int) -> None:
        self.view = view
        self.frame_len = frame_len


class StreamPort(Port):
    """Listens on unix socket `path` for QEMU's `-netdev stream` (one peer at a time)."""

    kind = "stream"
    takes_bursts = True

    def __init__(self, name: str, path: str, *, max_pending: int = DEFAULT_MAX_PENDING,
                 sndbuf: int = _SOCKBUF) -> None:
        super().__init__(name)
        self.sndbuf = sndbuf            # kernel send buffer asked for each peer connection
        self.path = _check_unix_path(name, path)
        if max_pending < 4 + MAX_FRAME_LEN:
            raise PortError(f"stream port {name!r}: max_pending must hold at least one frame "
                            f"({4 + MAX_FRAME_LEN} bytes)")
        self.max_pending = max_pending
        self.connections = 0            # peers accepted so far
        self.partial_writes = 0         # sends the kernel took only part of (a slow peer)
        self.last_disconnect: str | None = None
        self._loop = None
        self._listener: socket.socket | None = None
        self._ident: tuple[int, int] | None = None
        self._conn: socket.socket | None = None
        self._decoder = StreamDecoder()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_bytes = 0
        self._retry = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the peer that the kernel has not taken yet."""
        return self._pending_bytes

    # -- listening ----------------------------------------------------------
    def start(self, loop) -> None:
        _claim_unix_path(self.name, self.path, socket.SOCK_STREAM)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self._ident = _bind_unix(self.name, sock, self.path)
            sock.listen(4)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._loop = loop
        loop.add_reader(sock.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if self._conn is not None:
            # One peer at a time: a second QEMU sees EOF at once instead of
            # sending into a socket nobody reads.
            self.counters.count_error("second peer refused")
            log.warning("stream port %s: refused a second peer on %s (one is connected)", self.name, self.path)
            conn.close()
            return
        conn.setblocking(False)
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKBUF)
        except OSError:
            pass
        self._conn = conn
        self._decoder = StreamDecoder()
        self.connections += 1
        self._loop.add_reader(conn.fileno(), self._on_readable)
        log.info("stream port %s: peer connected on %s", self.name, self.path)

    # -- receiving ----------------------------------------------------------
    def _on_readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            data = conn.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop_peer(f"receive failed: {exc.strerror}")
            return
        if not data:
            if self._decoder.buffered:
                self.counters.rx_dropped += 1
                self.counters.count_error("truncated frame at disconnect")
            self._drop_peer("peer closed the connection")
            return
        frames = self._decoder.feed(data)
        if self.wants_bursts:
            if frames:
                self.deliver_burst([(frame, None) for frame in frames])
                if self._conn is not conn:
                    return
        else:
            for frame in frames:
                self.deliver(frame)
                if self._conn is not conn:     # a sink may have closed us meanwhile
                    return
        if self._decoder.error:
            self.counters.rx_dropped += 1
            self.counters.count_error("bad frame length")
            log.warning("stream port %s: %s from the peer; closing that connection", self.name, self._decoder.error)
            self._drop_peer(self._decoder.error)

    # -- sending ------------------------------------------------------------
    def transmit(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        conn = self._conn
        if conn is None:
            self.counters.tx_dropped += 1
            return False
        n = len(frame)
        if n == 0 or n > MAX_FRAME_LEN:
            self.counters.tx_dropped += 1
            self.counters.count_error("unsendable frame length")
            return False
        record = _LEN.pack(n) + frame
        if self._pending:
            return self._queue(memoryview(record), n)
        try:
            sent = conn.send(record)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.counters.tx_dropped += 1
            self._drop_peer(f"send failed: {exc.strerror}")
            return False
        if sent == len(record):
            self.counters.tx_frames += 1
            self.counters.tx_bytes += n
            return True
        # A partial write: the rest must go before any other frame, or the
        # peer loses the framing. Queued even over the limit for that reason.
        if sent:
            self.partial_writes += 1
        self._pending.append(_Pending(memoryview(record)[sent:], n))
        self._pending_bytes += len(record) - sent
        self._schedule_flush()
        return True

    def transmit_burst(self, items) -> int:
        """Frames to the peer in one send() (what the kernel does not take
        is queued as `transmit` queues it); returns the frames sent or queued."""
        conn = self._conn
        if conn is None:
            self.counters.tx_dropped += len(items)
            return 0
        records = []
        for frame, _ in items:
            n = len(frame)
            if n == 0 or n > MAX_FRAME_LEN:
                self.counters.tx_dropped += 1
                self.counters.count_error("unsendable frame length")
                continue
            records.append((_LEN.pack(n) + frame, n))
        if not records:
            return 0
        if self._pending:
            return sum(self._queue(memoryview(record), n) for record, n in records)
        try:
            sent = conn.send(b"".join([record for record, _ in records]))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.counters.tx_dropped += len(records)
            self._drop_peer(f"send failed: {exc.strerror}")
            return 0
        return self._account_burst(records, sent)

    def _account_burst(self, records: list, sent: int) -> int:
        """Count the records the kernel took whole; queue the rest as `transmit` would."""
        done = 0
        start = 0
        for record, n in records:
            end = start + len(record)
            if end <= sent:
                self.counters.tx_frames += 1
                self.counters.tx_bytes += n
                done += 1
            elif start <= sent:
                # The record the kernel stopped in: the rest must go before any
                # other frame, or the peer loses the framing (queued over the limit too).
                if sent > start:
                    self.partial_writes += 1
                self._pending.append(_Pending(memoryview(record)[sent - start:], n))
                self._pending_bytes += end - sent
                done += 1
            else:
                done += self._queue(memoryview(record), n)
            start = end
        if self._pending:
            self._schedule_flush()
        return done

    def _queue(self, view: memoryview, n: int) -> bool:
        if self._pending_bytes + len(view) > self.max_pending:
            self.counters.tx_dropped += 1       # the peer is not keeping up
            return False
        self._pending.append(_Pending(view, n))
        self._pending_bytes += len(view)
        return True

    def _schedule_flush(self) -> None:
        if self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(_RETRY_DELAY, self._flush)

    def _flush(self) -> None:
        self._retry = None
        conn = self._conn
        pending = self._pending
        while conn is not None and pending:
            bufs = [p.view for p in itertools.islice(pending, 64)]
            try:
                sent = conn.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._drop_peer(f"send failed: {exc.strerror}")
                return
            self._pending_bytes -= sent
            while sent:
                head = pending[0]
                if sent >= len(head.view):
                    sent -= len(head.view)
                    pending.popleft()
                    self.counters.tx_frames += 1
                    self.counters.tx_bytes += head.frame_len
                else:
                    head.view = head.view[sent:]
                    sent = 0
                    self.partial_writes += 1
        if pending:
            self._schedule_flush()

    # -- peers coming and going ----------------------------------------------
    def _drop_peer(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(conn.fileno())
        conn.close()
        if self._pending:
            self.counters.tx_dropped += len(self._pending)
            self._pending.clear()
        self._pending_bytes = 0
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._decoder = StreamDecoder()
        self.last_disconnect = reason
        log.info("stream port %s: peer gone (%s); waiting for the next one", self.name, reason)

    def disconnect(self) -> None:
        """Hang up on the current peer (if any) and wait for the next one."""
        self._drop_peer("disconnected by us")

    def close(self) -> None:
        self._drop_peer("port closed")
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._loop is not None:
                self._loop.remove_reader(listener.fileno())
            listener.close()
            _unlink_if_ours(self.path, self._ident)
            self._ident = None

    @property
    def status(self) -> str:
        if self._listener is None:
            return "closed" if self._loop else "not started"
        if self._conn is not None:
            return f"peer connected on {self.path}"
        if self.last_disconnect:
            return f"listening on {self.path}, no peer (last: {self.last_disconnect})"
        return f"listening on {self.path}, no peer yet"


# -- datagrams ---------------------------------------------------------------
def parse_inet_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:5000' or '[::1]:5000' -> (host, port); ValueError with a reason otherwise."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (give a numeric address such as 127.0.0.1)") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port {port!r} in {text!r}: expected 1..65535")
    return str(addr), int(port)


def _normalise(port_name: str, addr, what: str):
    if isinstance(addr, str):
        return _check_unix_path(port_name, addr), socket.AF_UNIX
    if isinstance(addr, tuple) and len(addr) == 2:
        try:
            host = ipaddress.ip_address(addr[0])
        except ValueError:
            raise PortError(f"dgram port {port_name!r}: {what} host {addr[0]!r} is not an IP address") from None
        if not isinstance(addr[1], int) or not 1 <= addr[1] <= 65535:
            raise PortError(f"dgram port {port_name!r}: {what} port {addr[1]!r} is not 1..65535")
        family = socket.AF_INET if host.version == 4 else socket.AF_INET6
        return (str(host), addr[1]), family
    raise PortError(f"dgram port {port_name!r}: {what} must be (host, port) or a unix socket path, not {addr!r}")


class DgramPort(Port):
    """One frame per datagram between `local` (bound here) and `remote` (QEMU's `-netdev dgram`).

    Each address is a `(host, port)` tuple for UDP or a path for unix datagram
    sockets; both must be of the same kind. Datagrams from anyone but
    `remote` are dropped and counted.
    """

    kind = "dgram"
    takes_bursts = True

    def __init__(self, name: str, local, remote) -> None:
        super().__init__(name)
        self.local, fam_l = _normalise(name, local, "local")
        self.remote, fam_r = _normalise(name, remote, "remote")
        if fam_l != fam_r:
            raise PortError(f"dgram port {name!r}: local and remote must both be UDP addresses of the same "
                            f"IP version, or both unix socket paths")
        if self.local == self.remote:
            raise PortError(f"dgram port {name!r}: local and remote are the same address")
        self.family = fam_l
        self._sock: socket.socket | None = None
        self._loop = None
        self._ident: tuple[int, int] | None = None
        self.peer_missing = False
        self._reader = DgramReader(MAX_FRAME_LEN + 1, _BURST, self.remote)
        self._writer = DgramWriter(_BURST, self.remote)

    def start(self, loop) -> None:
        if self.family == socket.AF_UNIX:
            _claim_unix_path(self.name, self.local, socket.SOCK_DGRAM)
        sock = socket.socket(self.family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKBUF)
                except OSError:
                    pass
            if self.family == socket.AF_UNIX:
                self._ident = _bind_unix(self.name, sock, self.local)
            else:
                try:
                    sock.bind(self.local)
                except OSError as exc:
                    raise PortError(f"dgram port {self.name!r}: cannot bind {self._fmt(self.local)}: "
                                    f"{exc.strerror}") from None
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = loop
        loop.add_reader(sock.fileno(), self._on_readable)

    def _from_remote(self, sender) -> bool:
        if self.family == socket.AF_UNIX:
            return sender == self.remote
        return sender is not None and (sender[0], sender[1]) == self.remote

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        datagrams, from_remote, err = self._reader.read(sock)
        per_frame = not self.wants_bursts
        items = []
        for data, ok in zip(datagrams, from_remote):
            reason = self._refused(data, ok)
            if reason is not None:
                self.counters.rx_dropped += 1
                self.counters.count_error(reason)
                continue
            self.peer_missing = False
            if per_frame:
                self.deliver(data)
                if self._sock is not sock:     # a sink may have closed us meanwhile
                    return
            else:
                items.append((data, None))
        if items:
            self.deliver_burst(items)
        if err and self._sock is sock:
            # ICMP errors for earlier sends surface here on some kernels: not fatal.
            self.counters.count_error(f"receive failed: {os.strerror(err)}")

    @staticmethod
    def _refused(data: bytes, from_remote: bool) -> str | None:
        if not from_remote:
            return "datagram from unexpected sender"
        if not data:
            return "empty datagram"
        if len(data) > MAX_FRAME_LEN:
            return "oversized datagram"
        return None

    def transmit(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        sock = self._sock
        if sock is None:
            self.counters.tx_dropped += 1
            return False
        try:
            sock.sendto(frame, self.remote)
        except OSError as exc:
            self._send_failed(exc.errno)
            return False
        self.peer_missing = False
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(frame)
        return True

    def transmit_burst(self, items) -> int:
        """Datagrams to the peer with sendmmsg (`nicdev.net.fd_burst`), counted as `transmit` counts them."""
        sock = self._sock
        if sock is None:
            self.counters.tx_dropped += len(items)
            return 0
        frames = [frame for frame, _ in items]
        errs = self._writer.send(sock, frames)
        if errs is None:
            self.peer_missing = False
            self.counters.tx_frames += len(frames)
            self.counters.tx_bytes += sum(map(len, frames))
            return len(frames)
        sent = 0
        for frame, err in zip(frames, errs):
            if err:
                self._send_failed(err)
                continue
            sent += 1
            self.peer_missing = False
            self.counters.tx_frames += 1
            self.counters.tx_bytes += len(frame)
        return sent

    def _send_failed(self, err: int) -> None:
        self.counters.tx_dropped += 1
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            return                                  # the peer's queue is full
        if err in (errno.ENOENT, errno.ECONNREFUSED):
            self.peer_missing = True                # nobody bound to `remote` (yet)
        elif err == errno.EMSGSIZE:
            self.counters.count_error("frame too large for a datagram")
        else:
            self.counters.count_error(f"send failed: {os.strerror(err)}")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
            if self.family == socket.AF_UNIX:
                _unlink_if_ours(self.local, self._ident)
                self._ident = None

    @staticmethod
    def _fmt(addr) -> str:
        if isinstance(addr, str):
            return addr
        host, port = addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def status(self) -> str:
        kind = "unix" if self.family == socket.AF_UNIX else "udp"
        where = f"{kind} {self._fmt(self.local)} <-> {self._fmt(self.remote)}"
        if self._sock is None:
            return f"{where}: closed" if self._loop else f"{where}: not started"
        return f"{where}: no peer at remote" if self.peer_missing else where
