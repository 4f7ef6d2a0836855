"""Exceptions raised by the qemu/ modules.

Everything derives from `QemuError`, so a caller can catch one type. The
subclasses say whose fault it is: a bad configuration (ours, before QEMU ever
runs), a missing binary, QEMU dying, or the monitor refusing or not answering.
"""
from __future__ import annotations

__all__ = [
    "QemuError",
    "QemuConfigError",
    "QemuNotFoundError",
    "QemuExitedError",
    "QmpError",
    "QmpConnectError",
    "QmpCommandError",
    "QmpTimeoutError",
]


class QemuError(Exception):
    """Base class of every error from the qemu/ package."""


class QemuConfigError(QemuError, ValueError):
    """The VM configuration is invalid (caught before QEMU is started)."""


class QemuNotFoundError(QemuError, FileNotFoundError):
    """The qemu-system-x86_64 binary is not installed."""


class QemuExitedError(QemuError):
    """QEMU exited when it should be running; carries its stderr text."""

    def __init__(self, message: str, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class QmpError(QemuError):
    """Base class of errors talking QMP to a running QEMU."""


class QmpConnectError(QmpError):
    """The QMP socket could not be connected to (QEMU gone or not up yet)."""


class QmpCommandError(QmpError):
    """QEMU answered a QMP command with an error."""

    def __init__(self, command: str, error_class: str, description: str) -> None:
        super().__init__(f"QMP {command} failed: {error_class}: {description}")
        self.command = command
        self.error_class = error_class
        self.description = description


class QmpTimeoutError(QmpError, TimeoutError):
    """A QMP command or an awaited event did not come within the time limit."""
