"""The back-end's listening socket: one front-end at a time, reconnects welcome.

The server listens on a unix socket (the front-end, e.g. QEMU's
`-chardev socket,path=...`, connects), takes one front-end, feeds its
messages to a `VhostUserBackend` and sends the replies. A second front-end
is refused while one is connected. When the front-end goes away (QEMU quit,
a reconnect, a protocol error) the back-end state is reset and the server
waits for the next one: the port comes back without restarting anything.

Socket path rules: with no path, a private 0700 directory is made under
$XDG_RUNTIME_DIR (or /tmp); the socket itself is mode 0600. A path where
something is already listening is refused (SocketInUseError); a stale socket
file (nobody listening) is replaced; anything else at that path is refused.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import stat
import tempfile
from typing import Callable

from .backend import VhostUserBackend
from .connection import Connection, ConnectionClosed
from .messages import ProtocolError

__all__ = ["VhostUserServer", "SocketPathError", "SocketInUseError"]

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 107     # sun_path is 108 bytes with the terminating NUL


class SocketPathError(Exception):
    """The socket path cannot be used (too long, not a socket, no permission)."""


class SocketInUseError(SocketPathError):
    """Another process is listening on the socket path."""


def _private_socket_path(name: str) -> tuple[str, str]:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = tempfile.gettempdir()
    directory = tempfile.mkdtemp(prefix="mnet-", dir=base)      # mode 0700
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "vhost"
    return directory, os.path.join(directory, f"{safe}.sock")


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)         # stale: left by a process that is gone
        log.info("replaced stale socket %s", path)
        return
    except OSError as e:
        raise SocketPathError(f"cannot check socket {path}: {e.strerror or e}") from None
    finally:
        probe.close()
    raise SocketInUseError(f"socket path in use: {path} (another process is listening on it)")


class VhostUserServer:
    """Listen on a unix socket and serve one vhost-user front-end at a time.

    `on_change()` (optional) is called after connect and disconnect, so a
    port can update its status."""

    def __init__(self, backend: VhostUserBackend, path: str | None = None, *, name: str = "vhost",
                 on_change: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.name = name
        self.on_change = on_change
        self._private_dir: str | None = None
        if path is None:
            self._private_dir, path = _private_socket_path(name)
        self.path = os.path.abspath(path)
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            self._remove_private_dir()
            raise SocketPathError(f"socket path is longer than {_SUN_PATH_MAX} bytes: {self.path}")
        self.loop = None
        self._listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self.conn: Connection | None = None
        self.connections = 0            # front-ends accepted so far
        self.refused = 0                # extra front-ends turned away
        self.last_disconnect: str | None = None
        self.last_error: str | None = None   # the last protocol error, for the status line

    # -- life cycle -----------------------------------------------------------
    def listen(self) -> None:
        """Create the listening socket (raises SocketPathError/SocketInUseError)."""
        try:
            _clear_stale(self.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.bind(self.path)
                os.chmod(self.path, 0o600)
                sock.listen(4)
                sock.setblocking(False)
            except OSError as e:
                sock.close()
                if e.errno == errno.EADDRINUSE:
                    raise SocketInUseError(f"socket path in use: {self.path}") from None
                raise SocketPathError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        except SocketPathError:
            self._remove_private_dir()
            raise
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._listener = sock
        log.info("%s: waiting for a front-end on %s", self.name, self.path)

    def start(self, loop) -> None:
        """Listen (if not yet) and register with the event loop."""
        if self._listener is None:
            self.listen()
        self.loop = loop
        loop.add_reader(self._listener.fileno(), self._on_accept)

    def close(self) -> None:
        """Drop the front-end, stop listening, remove the socket file."""
        if self.conn is not None:
            self._disconnect("back-end shut down")
        if self._listener is not None:
            if self.loop is not None:
                self.loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:   # still ours, not a successor's
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._remove_private_dir()

    def _remove_private_dir(self) -> None:
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    @property
    def connected(self) -> bool:
        return self.conn is not None

    # -- connections ------------------------------------------------------------
    def adopt(self, sock: socket.socket) -> None:
        """Serve an already-connected socket (a socketpair, or an fd inherited
        per the spec's `--fd=FDNUM` convention) as the front-end."""
        if self.conn is not None:
            raise RuntimeError(f"{self.name}: a front-end is already connected")
        self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.conn = Connection(sock)
        self.connections += 1
        if self.loop is not None:
            self.loop.add_reader(sock.fileno(), self._on_readable)
        log.info("%s: front-end connected on %s", self.name, self.path)
        self._changed()

    def _on_accept(self) -> None:
        while self._listener is not None:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("%s: accept failed: %s", self.name, e)
                return
            if self.conn is not None:
                self.refused += 1
                log.warning("%s: refused a second front-end on %s: one is already connected", self.name, self.path)
                sock.close()
                continue
            self._serve(sock)

    def _on_readable(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            while self.conn is conn:
                msg = conn.read_message()
                if msg is None:
                    return
                for reply in self.backend.handle(msg):
                    conn.send(reply)
        except ConnectionClosed as e:
            self._disconnect(e.reason)
        except ProtocolError as e:
            self.last_error = e.reason
            log.error("%s: closing the connection: protocol error: %s", self.name, e.reason)
            self._disconnect(f"protocol error: {e.reason}")
        except Exception as e:  # a bug must cost this connection, not the process
            self.last_error = f"internal error: {e!r}"
            log.exception("%s: closing the connection after an internal error", self.name)
            self._disconnect(self.last_error)

    def _disconnect(self, reason: str) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.loop is not None:
            self.loop.remove_reader(conn.fileno())
        conn.close()
        self.backend.reset(reason)
        self.last_disconnect = reason
        log.info("%s: front-end gone (%s); waiting for the next on %s", self.name, reason, self.path)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
