"""The control socket of a running switch: a Unix stream socket on the switch's event loop.

`ControlServer(handler, path)` listens on `path` (by default
`default_control_path()`), accepts any number of clients (up to
`MAX_CLIENTS` at once) and answers each request line with the line
`handler.handle(line)` returns (`nicdev.net.control.ControlHandler`).
Everything is non-blocking and runs on the loop's thread, so a client can
delay nothing but its own replies:

- a request longer than `MAX_REQUEST` gets an error reply, and the rest of
  that line is skipped;
- a client that leaves a request unfinished for `PARTIAL_TIMEOUT` seconds
  gets an error reply and is disconnected (a half-open client);
- replies a client does not read are kept up to `MAX_PENDING` bytes and
  retried from a timer; a client that takes none of it for
  `WRITE_TIMEOUT` seconds, or lets more pile up, is disconnected.

Only the switch's owner can reach the socket: it is made mode 0600 inside
a directory that must be the owner's alone (mode 0700; made so when it does
not exist). The default directory is `$XDG_RUNTIME_DIR/mnet`, or, without
XDG_RUNTIME_DIR, `/run/mnet` for root and `/tmp/mnet-UID` for others; the
socket is `switch-PID.sock` there, so several switches can run at once.
The socket is removed on close.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat

from .control import MAX_REQUEST, error_reply
from .errors import PortError

log = logging.getLogger(__name__)

__all__ = ["ControlServer", "ControlPathError", "default_control_dir", "default_control_path",
           "MAX_CLIENTS", "PARTIAL_TIMEOUT", "WRITE_TIMEOUT", "MAX_PENDING"]

MAX_CLIENTS = 64
PARTIAL_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_PENDING = 4 << 20
_RETRY_WRITE = 0.02
_READ_CHUNK = 65536
_READS_PER_TURN = 4          # then the other descriptors get their turn
_SUN_PATH_MAX = 107


class ControlPathError(PortError):
    """The control socket's path cannot be used (one line)."""


def default_control_dir() -> str:
    """Where switches put their control sockets by default (see the module doc)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "mnet")
    uid = os.geteuid()
    return "/run/mnet" if uid == 0 else f"/tmp/mnet-{uid}"


def default_control_path(pid: int | None = None) -> str:
    """The control socket of the switch process `pid` (default: this one)."""
    return os.path.join(default_control_dir(), f"switch-{os.getpid() if pid is None else pid}.sock")


def _private_dir(path: str) -> bool:
    """Make sure `path` is a directory only we can enter; True if we made it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return _private_dir(path)
        os.chmod(path, 0o700)       # whatever the umask says
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise ControlPathError(f"control directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise ControlPathError(f"control directory {path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o077:
        raise ControlPathError(f"control directory {path} is open to others (mode {stat.S_IMODE(st.st_mode):o}): "
                               "use a private directory (chmod 700)")
    return False


def _claim(path: str, peer: str = "switch") -> None:
    """Remove a stale socket at `path`; refuse a live one or any other file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlPathError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)         # nobody listens: left by a switch that was killed
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise ControlPathError(f"a {peer} is already listening on {path}: give another --control PATH")


class _Client:
    __slots__ = ("sock", "fd", "inbuf", "outbuf", "skipping", "partial_timer", "write_timer", "stalled_since",
                 "eof")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.skipping = False       # inside an oversized line, already answered
        self.partial_timer = None
        self.write_timer = None
        self.stalled_since: float | None = None
        self.eof = False


class ControlServer:
    """`ControlServer(handler, path=None)`; `start(loop)`, `close()`. See the module doc.
    `peer` names what listens (for the error when someone else already does)."""

    def __init__(self, handler, path: str | None = None, *, peer: str = "switch") -> None:
        self.handler = handler
        self.peer = peer
        self.path = os.path.abspath(path if path is not None else default_control_path())
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ControlPathError(f"control socket path longer than {_SUN_PATH_MAX} bytes: {self.path}")
        self.loop = None
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._made_dir = False
        self._clients: dict[int, _Client] = {}
        self.dropped_clients = 0        # disconnected by us (half-open, slow, too many)

    # -- life cycle -------------------------------------------------------------------
    def start(self, loop) -> None:
        directory = os.path.dirname(self.path)
        try:
            self._made_dir = _private_dir(directory)
            _claim(self.path, self.peer)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            try:
                sock.bind(self.path)
                os.chmod(self.path, 0o600)
                sock.listen(MAX_CLIENTS)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise ControlPathError(f"cannot listen on {self.path}: {exc.strerror or exc}") from None
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._sock = sock
        self.loop = loop
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Disconnect every client, stop listening, remove the socket (and the
        directory, if this server made it and it is empty). Safe to call twice."""
        for client in list(self._clients.values()):
            self._drop(client)
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self.loop is not None:
            self.loop.remove_reader(sock.fileno())
        sock.close()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        if self._made_dir:
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- accepting and reading ------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:      # EMFILE and the like: try again next turn
                log.warning("control socket: accept failed: %s", exc)
                return
            conn.setblocking(False)
            if len(self._clients) >= MAX_CLIENTS:
                try:
                    conn.send(error_reply(f"too many control clients (at most {MAX_CLIENTS})"))
                except OSError:
                    pass
                conn.close()
                self.dropped_clients += 1
                continue
            client = _Client(conn)
            self._clients[client.fd] = client
            self.loop.add_reader(client.fd, lambda c=client: self._readable(c))

    def _readable(self, client: _Client) -> None:
        for _ in range(_READS_PER_TURN):
            try:
                data = client.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client, counted=False)
                return
            if not data:
                client.eof = True
                self.loop.remove_reader(client.fd)
                break
            client.inbuf += data
            self._serve_lines(client)
            if not self._alive(client):
                return
        if client.eof:
            self._cancel_partial(client)
            if not client.outbuf:
                self._drop(client, counted=False)
        elif client.inbuf and client.partial_timer is None:
            client.partial_timer = self.loop.call_later(PARTIAL_TIMEOUT, lambda: self._half_open(client))

    def _serve_lines(self, client: _Client) -> None:
        buf = client.inbuf
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if client.skipping:
                client.skipping = False
            else:
                self._reply(client, self.handler.handle(bytes(buf[start:end])))
                if not self._alive(client):
                    return
            start = end + 1
        del buf[:start]
        if start:
            self._cancel_partial(client)
        if len(buf) > MAX_REQUEST:
            if not client.skipping:
                self._reply(client, error_reply(f"request longer than {MAX_REQUEST} bytes"))
            client.skipping = True
            buf.clear()

    def _half_open(self, client: _Client) -> None:
        client.partial_timer = None
        if self._alive(client):
            self._reply(client, error_reply(f"request not finished within {PARTIAL_TIMEOUT:g} s"))
            self._drop(client)

    def _cancel_partial(self, client: _Client) -> None:
        if client.partial_timer is not None:
            client.partial_timer.cancel()
            client.partial_timer = None

    # -- writing ---------------------------------------------------------------------------
    def _reply(self, client: _Client, line: bytes) -> None:
        if not self._alive(client):
            return
        client.outbuf += line
        if len(client.outbuf) > MAX_PENDING:
            log.warning("control socket: dropping a client that does not read its replies")
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        sent_any = False
        while client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:                 # the client went away
                self._drop(client, counted=False)
                return
            del client.outbuf[:sent]
            sent_any = True
        now = self.loop.now()
        if not client.outbuf:
            client.stalled_since = None
            if client.eof:
                self._drop(client, counted=False)
            return
        if sent_any or client.stalled_since is None:
            client.stalled_since = now
        elif now - client.stalled_since > WRITE_TIMEOUT:
            log.warning("control socket: dropping a client that took no reply for %g s", WRITE_TIMEOUT)
            self._drop(client)
            return
        if client.write_timer is None:
            client.write_timer = self.loop.call_later(_RETRY_WRITE, lambda: self._retry_write(client))

    def _retry_write(self, client: _Client) -> None:
        client.write_timer = None
        if self._alive(client):
            self._flush(client)

    def _alive(self, client: _Client) -> bool:
        # By identity: a new client may have been given a closed one's fd.
        return self._clients.get(client.fd) is client

    def _drop(self, client: _Client, counted: bool = True) -> None:
        if not self._alive(client):
            return
        del self._clients[client.fd]
        if counted:
            self.dropped_clients += 1
        self._cancel_partial(client)
        if client.write_timer is not None:
            client.write_timer.cancel()
            client.write_timer = None
        if not client.eof and self.loop is not None:
            self.loop.remove_reader(client.fd)
        try:
            client.sock.close()
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
