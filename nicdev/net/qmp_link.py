"""Tell a QEMU guest its NIC's link went down or up, through QMP `set_link`.

A vhost-user port cannot change the guest's view of the link itself: the
virtio-net config space (its LINK_UP status bit and the config interrupt)
is QEMU's. QEMU's `set_link` command flips that bit and interrupts the
guest, whose driver then reports a carrier change. `QmpLinkNotifier` is a
port's `link_notifier` for a guest whose QEMU serves a QMP monitor on a
unix socket the switch may use (`mnet vm --qmp PATH`, port key `qmp=PATH`).

QEMU serves one client per monitor, and `mnet vm` keeps its own, so the
switch needs a monitor of its own. The exchange (greeting, capabilities,
one command) is done here on a short-lived thread with a bounded wait, not
with `qemu.control`: this floor may not import `qemu`, and the switch's
event loop must never wait for QEMU. The outcome is kept in `last` (and
logged when it failed).
"""
from __future__ import annotations

import json
import logging
import socket
import threading

log = logging.getLogger(__name__)

__all__ = ["QmpLinkNotifier", "QmpLinkError", "DEFAULT_QMP_DEVICE", "qmp_set_link"]

# The device id `mnet vm` (qemu.cmdline.NicConfig) gives the guest's NIC.
DEFAULT_QMP_DEVICE = "net0-dev"
_TIMEOUT = 5.0
_MAX_LINE = 1 << 20


class QmpLinkError(Exception):
    """QEMU could not be reached or refused the command (one line)."""


def _read_reply(sock_file) -> dict:
    """The next line that is not an event: the greeting or a command's answer."""
    while True:
        line = sock_file.readline(_MAX_LINE)
        if not line:
            raise QmpLinkError("QEMU closed the QMP connection")
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpLinkError("QEMU sent a line that is not JSON") from None
        if isinstance(message, dict) and "event" not in message:
            return message


def _execute(sock, sock_file, command: str, arguments: dict | None = None) -> dict:
    request = {"execute": command}
    if arguments is not None:
        request["arguments"] = arguments
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply = _read_reply(sock_file)
    if "error" in reply:
        error = reply["error"]
        raise QmpLinkError(f"QMP {command} failed: {error.get('class')}: {error.get('desc')}")
    return reply


def qmp_set_link(path: str, device: str, up: bool, timeout: float = _TIMEOUT) -> None:
    """Connect to the QMP monitor at `path`, run `set_link`, disconnect.
    Blocks up to about `timeout` seconds; raises QmpLinkError."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        with sock, sock.makefile("rb") as sock_file:
            sock.connect(path)
            if "QMP" not in _read_reply(sock_file):
                raise QmpLinkError(f"{path} is not a QMP monitor (no greeting)")
            _execute(sock, sock_file, "qmp_capabilities")
            _execute(sock, sock_file, "set_link", {"name": device, "up": bool(up)})
    except TimeoutError:
        raise QmpLinkError(f"QEMU did not answer on {path} within {timeout:g} s "
                           "(is another client on that monitor?)") from None
    except OSError as exc:
        raise QmpLinkError(f"cannot reach QMP at {path}: {exc.strerror or exc}") from None


class QmpLinkNotifier:
    """`notifier(up)`: set the guest's link through QMP, off the caller's thread.

    Requests are done in order on one worker thread at a time; `last` says
    how the latest one went ("pending", "guest link up", or the error)."""

    def __init__(self, path: str, device: str = DEFAULT_QMP_DEVICE) -> None:
        self.path = path
        self.device = device
        self.last = "no link change requested"
        self._lock = threading.Lock()
        self._wanted: list[bool] = []
        self._worker: threading.Thread | None = None

    def __call__(self, up: bool) -> None:
        with self._lock:
            self._wanted.append(bool(up))
            self.last = "pending"
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="mnet-qmp-link", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._worker = None
                    return
                up = self._wanted.pop(0)
            try:
                qmp_set_link(self.path, self.device, up)
                outcome = f"guest link {'up' if up else 'down'} (QMP {self.path})"
            except QmpLinkError as exc:
                log.error("set_link %s on %s: %s", "up" if up else "down", self.device, exc)
                outcome = f"QMP set_link failed: {exc}"
            with self._lock:
                self.last = outcome if not self._wanted else "pending"

    def wait_idle(self, timeout: float) -> bool:
        """For tests and shutdown: wait until no request is left; True if so."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return self._worker is None
