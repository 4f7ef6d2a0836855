"""Running `mnet` as a user would, for the CLI tests: as a subprocess, with
bounded waits on its output. Shared by the CLI, stack CLI and service tests."""
from __future__ import annotations

import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

MNET = [sys.executable, "-m", "mnet.cli.main"]
REPO = str(Path(__file__).resolve().parents[2])
OUTPUT_WAIT = 15.0   # Output's default bound on a wait for a line or the exit


def mnet(*args: str, env: dict | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `mnet ARGS...` to completion; stdout and stderr as text."""
    return subprocess.run([*MNET, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def assert_one_line_error(r: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """The contract for wrong input: non-zero status, nothing on stdout, exactly
    one line on stderr, `mnet COMMAND: ...`, no traceback. Returns the line."""
    assert r.returncode != 0, f"exit status 0 for wrong input; stdout: {r.stdout!r} stderr: {r.stderr!r}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith(f"mnet {command}: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert r.stdout == "", f"unexpected stdout: {r.stdout!r}"
    return lines[0]


class MnetProcess:
    """A long-running `mnet ...` (switch, stack) with its output collected.

    `expect(text, timeout)` waits until `text` appears on stdout;
    `interrupt()` sends SIGINT and returns (status, stdout, stderr)."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen([*MNET, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.out = b""
        self.err = b""

    def _pump(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False once both pipes are closed."""
        fds = [f for f in (self.proc.stdout, self.proc.stderr) if not f.closed]
        if not fds:
            return False
        ready, _, _ = select.select(fds, [], [], timeout)
        for f in ready:
            data = os.read(f.fileno(), 65536)
            if not data:
                f.close()
            elif f is self.proc.stdout:
                self.out += data
            else:
                self.err += data
        return True

    def expect(self, text: str, timeout: float = 15.0, *, stderr: bool = False) -> None:
        """Wait until `text` has appeared on stdout (stderr with `stderr=True`)."""
        def seen() -> bool:
            return text.encode() in (self.err if stderr else self.out)

        deadline = time.monotonic() + timeout
        while not seen():
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.2)) and not seen()):
                raise AssertionError(f"`mnet {' '.join(self.args)}` did not print {text!r} within {timeout:g} s "
                                     f"(exit {self.proc.poll()});\nstdout: {self.out.decode(errors='replace')}\n"
                                     f"stderr: {self.err.decode(errors='replace')}")

    def interrupt(self, timeout: float = 20.0, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        """Send `sig` (SIGINT by default); wait for the exit and all output."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, min(0.2, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"`mnet {' '.join(self.args)}` did not end within {timeout:g} s of SIGINT")
        status = self.proc.wait(max(1.0, deadline - time.monotonic()))
        return status, self.out.decode(errors="replace"), self.err.decode(errors="replace")

    def close(self) -> None:
        """Stop it if it still runs (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if not f.closed:
                f.close()


def path_without(directory, *prefixes: str) -> str:
    """A PATH that finds every program the current PATH finds except those
    whose names start with one of `prefixes`: `directory` is filled with
    symlinks to them. The honest way to run something "on a machine without
    QEMU" on a machine that has it."""
    os.makedirs(directory, exist_ok=True)
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = os.path.join(directory, name)
            target = os.path.join(d, name)
            if name.startswith(prefixes) or os.path.lexists(link) or not os.access(target, os.X_OK):
                continue
            os.symlink(target, link)
    return str(directory)


class Output:
    """Collects a process's stdout lines on a thread, so waits on them can be bounded.

    (select() on a text pipe misses lines already sitting in Python's buffer.)
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, pattern: str, timeout: float = OUTPUT_WAIT) -> list[str]:
        """Lines until one matches `pattern` (bounded); all lines read so far."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break  # EOF: the process ended
            self.seen.append(line)
            if re.search(pattern, line):
                return self.seen
        pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s (exit code {self.proc.poll()}); got:\n"
                    + "".join(self.seen))

    def finish(self, timeout: float = OUTPUT_WAIT) -> tuple[str, str]:
        """Wait for the process to end (bounded); (all stdout, all stderr)."""
        self.proc.wait(timeout)
        self._thread.join(timeout)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen), self.proc.stderr.read()

    def close(self, timeout: float = OUTPUT_WAIT) -> None:
        """Close both pipes once the process has ended and its stdout is read (test clean-up)."""
        self.proc.wait(timeout)
        self._thread.join(timeout)
        self.proc.stdout.close()
        self.proc.stderr.close()


def start_mnet_stack(*args: str) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen([*MNET, "stack", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    return proc, Output(proc)
