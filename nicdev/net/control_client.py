"""The Python side of a running switch's control socket (`nicdev.net.control`).

`ControlClient(path)` connects on first use and has one method per op; each
returns the reply's fields as a dict and raises `ControlRequestError` with
the switch's one-line error when the switch refused the request, or
`ControlConnectError` when no switch answers at `path`. `find_switches()`
lists the control sockets in the default directory that a switch answers on.
The same framing serves other processes' control sockets (`mnet stack
--control`): `peer` names what answers in the messages, `find_listening`
finds them by file name.
"""
from __future__ import annotations

import glob
import json
import os
import socket

from .control_server import default_control_dir

__all__ = ["ControlClient", "ControlError", "ControlConnectError", "ControlRequestError", "find_switches",
           "find_listening"]

_MAX_REPLY = 64 << 20


class ControlError(Exception):
    """Base of the control client's errors; the message is one line."""


class ControlConnectError(ControlError):
    """No switch answers at the path (or it went away)."""


class ControlRequestError(ControlError):
    """The switch refused the request; the message is the switch's error."""


class ControlClient:
    """`ControlClient(path, timeout=10.0)`: requests to the switch listening on `path`
    (`peer`: what listens there, as the errors name it)."""

    def __init__(self, path: str, timeout: float = 10.0, *, peer: str = "switch") -> None:
        self.path = path
        self.timeout = timeout
        self.peer = peer
        self._sock: socket.socket | None = None
        self._file = None

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise ControlConnectError(f"no {self.peer} listening at {self.path} (no such socket)") from None
        except ConnectionRefusedError:
            sock.close()
            raise ControlConnectError(f"no {self.peer} listening at {self.path} (a stale socket?)") from None
        except OSError as exc:
            sock.close()
            raise ControlConnectError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        self._sock = sock
        self._file = sock.makefile("rb")

    def request(self, op: str, **args) -> dict:
        """Send `{"op": op, **args}`, return the reply without its "ok"."""
        if self._sock is None:
            self._connect()
        try:
            self._sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            line = self._file.readline(_MAX_REPLY)
        except TimeoutError:
            self.close()
            raise ControlConnectError(f"the {self.peer} at {self.path} did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise ControlConnectError(f"connection to {self.path} lost: {exc.strerror or exc}") from None
        if not line.endswith(b"\n"):
            self.close()
            raise ControlConnectError(f"the {self.peer} at {self.path} closed the connection")
        reply = json.loads(line)
        if not reply.pop("ok", False):
            raise ControlRequestError(reply.get("error", f"the {self.peer} refused the request"))
        return reply

    # -- one method per op ---------------------------------------------------------------
    def ports(self) -> list[dict]:
        """[{name, kind, status, link, impairment, fault, qmp}] for every port."""
        return self.request("ports")["ports"]

    def counters(self) -> dict:
        """{"switch": {...}, "ports": {name: {...}}}."""
        return self.request("counters")

    def impair(self, port: str, spec: str | None) -> dict:
        """Impair `port` as `spec` says ("loss=5%,delay=10ms"); None clears."""
        return self.request("impair", port=port, spec=spec)

    def link(self, port: str, up: bool) -> dict:
        return self.request("link", port=port, up=up)

    def trace(self, port: str | None, on: bool) -> dict:
        """Start or stop tracing `port` (None: every port) into the live buffer."""
        return self.request("trace", port=port, on=on)

    def trace_read(self, since: int = 0, max: int | None = None) -> dict:
        """{"records": [...], "next": N, "lost": L}: pass `next` as `since` next time."""
        args = {"since": since}
        if max is not None:
            args["max"] = max
        return self.request("trace_read", **args)

    def fault(self, port: str, mode: str | None) -> dict:
        return self.request("fault", port=port, mode=mode)


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def find_switches(directory: str | None = None) -> list[str]:
    """The control sockets in `directory` (default: the default one) a switch listens on."""
    return find_listening("switch-*.sock", directory)


def find_listening(pattern: str, directory: str | None = None) -> list[str]:
    """The sockets named like `pattern` (a glob) in `directory` (default: the
    default one) that someone listens on."""
    directory = directory or default_control_dir()
    paths = sorted(glob.glob(os.path.join(glob.escape(directory), pattern)))
    return [p for p in paths if _answers(p)]
