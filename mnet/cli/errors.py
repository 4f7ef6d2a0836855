"""Errors the CLI turns into one clear line instead of a traceback."""
from __future__ import annotations

import importlib


class CliError(Exception):
    """A user mistake or a missing prerequisite, said in one line."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# The project's own exception classes, by module: a failure in one of these is
# the user's environment or input, not a bug, so no traceback.
_ERROR_CLASSES = [
    ("nicdev.net.portspec", "PortSpecError"),
    ("nicdev.net.errors", "PortError"),
    ("nicdev.vhost_user.server", "SocketPathError"),       # SocketInUseError is one
    ("nicdev.vhost_user.frontend", "BackendError"),        # BackendUnavailable, IncompatibleBackend
    ("guest.errors", "GuestBuildError"),
    ("guest.errors", "GuestTimeout"),
    ("guest.errors", "GuestChannelError"),
    ("qemu.errors", "QemuError"),
    ("nicdev.virtio.trace", "TraceFormatError"),           # names file:line
]


def known_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name, cls_name in _ERROR_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError):
            continue
        found.append(cls)
    return tuple(found)
