"""A running stack's control socket: the switch's control server on a thread of its own.

`StackControlServer(stack, path)` listens on a Unix socket with
`nicdev.net.control_server.ControlServer` (the same framing, limits,
permissions and stale-socket handling as a switch's) and answers with
`mnet.apps.monitor.control.StackControlHandler`. Its event loop runs on one
thread beside the stack's: a request takes the stack's lock only for the
moment a snapshot takes. The default path is ``stack-PID.sock`` in the
switches' default directory (``$XDG_RUNTIME_DIR/mnet``, else ``/run/mnet``
for root and ``/tmp/mnet-UID`` for others).
"""
from __future__ import annotations

import os
import threading

from nicdev.net.control_client import find_listening
from nicdev.net.control_server import ControlServer, default_control_dir
from nicdev.net.loop import EventLoop

from .control import StackControlHandler

__all__ = ["StackControlServer", "default_stack_control_path", "find_stacks"]

_PATTERN = "stack-*.sock"


def default_stack_control_path(pid: int | None = None) -> str:
    """The control socket of the `mnet stack` process `pid` (default: this one)."""
    return os.path.join(default_control_dir(), f"stack-{os.getpid() if pid is None else pid}.sock")


def find_stacks(directory: str | None = None) -> list[str]:
    """The stack control sockets in `directory` (default: the default one) a stack listens on."""
    return find_listening(_PATTERN, directory)


class StackControlServer:
    """`StackControlServer(stack, path=None).start()`; `close()`. See the module doc."""

    def __init__(self, stack, path: str | None = None) -> None:
        self.loop = EventLoop()
        self.server = ControlServer(StackControlHandler(stack.snapshot),
                                    path if path is not None else default_stack_control_path(), peer="stack")
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return self.server.path

    def start(self) -> "StackControlServer":
        """Listen (ControlPathError, one line, if the path cannot be used) and serve on a thread."""
        try:
            self.server.start(self.loop)
        except BaseException:
            self.loop.close()
            raise
        self._thread = threading.Thread(target=self.loop.run, name="mnet-stack-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, remove the socket. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.loop.stop()
        thread.join(10)
        self.server.close()
        self.loop.close()

    def __enter__(self) -> "StackControlServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
