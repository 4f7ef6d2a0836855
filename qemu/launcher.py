"""Start and stop one QEMU process.

`QemuProcess` owns the process: it puts QEMU in its own process group (so a
Ctrl-C meant for us does not kill the guest half-way and a stop reaches
everything QEMU started), sends QEMU's stderr to a file, and turns an early
exit into a `QemuExitedError` that quotes what QEMU said. Stopping is
bounded: a polite quit (through a callback, normally QMP ``quit``), then
SIGTERM, then SIGKILL.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Callable

from qemu.errors import QemuError, QemuExitedError, QemuNotFoundError

__all__ = ["QemuProcess", "find_qemu"]

QEMU_BINARY = "qemu-system-x86_64"


def find_qemu(binary: str = QEMU_BINARY) -> str:
    """Return the absolute path of the QEMU binary or raise QemuNotFoundError."""
    found = shutil.which(binary)
    if found is None:
        raise QemuNotFoundError(f"{binary} not found; install qemu-system-x86 "
                                "(apt-get install qemu-system-x86)")
    return found


def _tail_lines(path: Path | None, n: int) -> list[str]:
    if path is None or n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            # Read at most the last 64 KiB: a console log can be large.
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return list(deque(text.splitlines(), maxlen=n))


class QemuProcess:
    """One QEMU process started from a ready argv (see qemu.cmdline).

    console_log: the file the guest console is written to, for
    `console_tail()`. stderr_log: where QEMU's stdout/stderr go (a temporary
    file by default, removed by `close()`). interactive: QEMU uses our
    terminal (console='stdio'), so it stays in our process group and
    inherits stdin/stdout, and the terminal settings are restored afterwards.
    """

    def __init__(self, argv: list[str], console_log: str | os.PathLike | None = None,
                 *, stderr_log: str | os.PathLike | None = None,
                 interactive: bool = False) -> None:
        if not argv:
            raise QemuError("empty QEMU command line")
        self.argv = list(argv)
        self.console_log = Path(console_log) if console_log is not None else None
        self._own_stderr_log = stderr_log is None
        self.stderr_log = Path(stderr_log) if stderr_log is not None else None
        self.interactive = interactive
        self._proc: subprocess.Popen | None = None
        self._termios = None
        self._atexit: Callable[[], object] | None = None

    # -- starting ------------------------------------------------------------

    def start(self) -> None:
        """Start QEMU. Raises QemuNotFoundError if the binary is missing."""
        if self._proc is not None:
            raise QemuError("this QEMU process was already started")
        binary = self.argv[0]
        if os.sep not in binary:
            self.argv[0] = find_qemu(binary)
        elif not os.access(binary, os.X_OK):
            raise QemuNotFoundError(f"{binary} is not an executable file")
        if self.stderr_log is None:
            fd, name = tempfile.mkstemp(prefix="qemu-", suffix=".stderr")
            os.close(fd)
            self.stderr_log = Path(name)
        with open(self.stderr_log, "wb") as err:
            if self.interactive:
                self._save_terminal()
                self._proc = subprocess.Popen(self.argv, stderr=err, close_fds=True)
            else:
                self._proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                    close_fds=True, start_new_session=True)
        # QEMU is in a session of its own and would outlive us: if the program
        # exits without stopping it (an exception, sys.exit), stop it then.
        ref = weakref.ref(self)
        self._atexit = lambda: (ref() is not None and ref().terminate(grace=2.0))
        atexit.register(self._atexit)

    # -- state ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """True while the started QEMU has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stderr_text(self) -> str:
        """Everything QEMU has written to stderr so far."""
        if self.stderr_log is None:
            return ""
        try:
            return self.stderr_log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def console_tail(self, n: int = 20) -> list[str]:
        """The last `n` lines of the guest console log (empty if none)."""
        return _tail_lines(self.console_log, n)

    def describe_exit(self) -> str:
        """A one-paragraph account of why QEMU is gone, for error messages."""
        rc = self.returncode
        if rc is None:
            return "QEMU is still running"
        how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        text = [f"QEMU exited ({how})"]
        stderr = self.stderr_text().strip()
        if stderr:
            text.append("QEMU said: " + stderr[-2000:])
        tail = self.console_tail(10)
        if tail:
            text.append("last console lines:\n  " + "\n  ".join(tail))
        return "\n".join(text)

    def check(self) -> None:
        """Raise QemuExitedError (with QEMU's stderr) if QEMU is not running."""
        if self._proc is None:
            raise QemuError("QEMU has not been started")
        if self._proc.poll() is not None:
            raise QemuExitedError(self.describe_exit(), self._proc.returncode,
                                  self.stderr_text())

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` s for QEMU to exit; its exit code, or None if
        it is still running."""
        if self._proc is None:
            raise QemuError("QEMU has not been started")
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_for_path(self, path: str | os.PathLike, timeout: float) -> None:
        """Wait until QEMU has created `path` (e.g. its QMP socket).

        Raises QemuExitedError if QEMU exits first and QemuError on timeout.
        This is how an early failure (bad option, missing vhost-user socket)
        is turned into an error that quotes QEMU.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if os.path.exists(path):
                return
            if time.monotonic() >= deadline:
                raise QemuError(f"QEMU did not create {os.fspath(path)} within "
                                f"{timeout:g} s")
            if self.wait(0.05) is not None:
                self.check()

    # -- stopping ------------------------------------------------------------

    def terminate(self, request_quit: Callable[[], object] | None = None,
                  grace: float = 5.0) -> int | None:
        """Stop QEMU within about 2 * `grace` + 2 seconds; return its exit code.

        `request_quit` is tried first (e.g. QmpControl.quit); its errors are ignored
        because QEMU may already be going. Then SIGTERM, then SIGKILL.
        """
        if self._proc is None:
            return None
        try:
            if self._proc.poll() is None and request_quit is not None:
                try:
                    request_quit()
                except Exception:  # noqa: BLE001 - any failure means "try harder"
                    pass
                self.wait(grace)
            for sig, limit in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
                if self._proc.poll() is not None:
                    break
                self._signal(sig)
                self.wait(limit)
            return self._proc.poll()
        finally:
            self._restore_terminal()
            if self._proc.poll() is not None and self._atexit is not None:
                atexit.unregister(self._atexit)
                self._atexit = None

    def close(self) -> None:
        """Terminate QEMU if needed and remove the temporary stderr file."""
        self.terminate()
        if self._own_stderr_log and self.stderr_log is not None:
            try:
                self.stderr_log.unlink()
            except FileNotFoundError:
                pass

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        try:
            if self.interactive:
                self._proc.send_signal(sig)
            else:
                os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    # QEMU puts a stdio console into raw mode; if it is killed it cannot put
    # the terminal back, so we do.
    def _save_terminal(self) -> None:
        try:
            import termios
            if sys.stdin.isatty():
                self._termios = termios.tcgetattr(sys.stdin.fileno())
        except (ImportError, OSError, ValueError):
            self._termios = None

    def _restore_terminal(self) -> None:
        if self._termios is None:
            return
        try:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._termios)
        except (ImportError, OSError, ValueError):
            pass

    def __enter__(self) -> "QemuProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else (
            "running" if self.alive else f"exited {self.returncode}")
        return f"<QemuProcess pid={self.pid} {state}>"
