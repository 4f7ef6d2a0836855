"""qemu.launcher with stand-in programs instead of QEMU (fast, no QEMU)."""
import os
import signal
import sys
import time

import pytest

from qemu.errors import QemuError, QemuExitedError, QemuNotFoundError
from qemu.launcher import QemuProcess, find_qemu


def fake(tmp_path, body, name="fake-qemu"):
    """An executable Python script standing in for QEMU."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport os, signal, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_find_qemu_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QemuNotFoundError, match="install qemu-system-x86"):
        find_qemu()


def test_find_qemu_on_path(tmp_path, monkeypatch):
    script = fake(tmp_path, "pass", name="qemu-system-x86_64")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_qemu() == script


def test_start_with_missing_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QemuNotFoundError):
        QemuProcess(["qemu-system-x86_64", "-version"]).start()
    with pytest.raises(QemuNotFoundError, match="not an executable"):
        QemuProcess([str(tmp_path / "nothing")]).start()


def test_early_exit_quotes_stderr(tmp_path):
    script = fake(tmp_path, "sys.stderr.write('qemu-system-x86_64: -netdev foo: bad option\\n')\n"
                            "sys.exit(1)")
    proc = QemuProcess([script], stderr_log=tmp_path / "err")
    proc.start()
    with pytest.raises(QemuExitedError, match="(?s)exit status 1.*bad option") as info:
        proc.wait_for_path(tmp_path / "never", timeout=10)
    assert info.value.returncode == 1
    assert "bad option" in info.value.stderr
    assert not proc.alive


def test_wait_for_path_then_terminate(tmp_path):
    marker = tmp_path / "qmp.sock"
    script = fake(tmp_path, f"open({str(marker)!r}, 'w').close()\ntime.sleep(60)")
    proc = QemuProcess([script])
    proc.start()
    try:
        proc.wait_for_path(marker, timeout=10)
        assert proc.alive
        # Its own process group, so our Ctrl-C does not reach it.
        assert os.getpgid(proc.pid) == proc.pid
        assert proc.terminate(grace=5) == -signal.SIGTERM
        assert not proc.alive
    finally:
        proc.close()


def test_wait_for_path_times_out(tmp_path):
    proc = QemuProcess([fake(tmp_path, "time.sleep(60)")])
    proc.start()
    try:
        with pytest.raises(QemuError, match="did not create"):
            proc.wait_for_path(tmp_path / "never", timeout=0.3)
    finally:
        proc.close()


def test_terminate_escalates_to_sigkill_within_bounds(tmp_path):
    ready = tmp_path / "ready"
    script = fake(tmp_path, "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                            f"open({str(ready)!r}, 'w').close()\ntime.sleep(60)")
    proc = QemuProcess([script])
    proc.start()
    proc.wait_for_path(ready, timeout=10)
    calls = []

    def failing_quit():
        calls.append("quit")
        raise ConnectionError("monitor gone")

    started = time.monotonic()
    assert proc.terminate(failing_quit, grace=0.3) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert calls == ["quit"]
    proc.close()


def test_polite_quit_is_tried_first(tmp_path):
    stop = tmp_path / "stop"
    script = fake(tmp_path, f"while not os.path.exists({str(stop)!r}): time.sleep(0.02)\n"
                            "sys.exit(0)")
    proc = QemuProcess([script])
    proc.start()
    assert proc.terminate(lambda: stop.touch(), grace=10) == 0
    proc.close()


def test_console_tail(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(100)) + b"\xff last")
    proc = QemuProcess(["qemu"], log)
    assert proc.console_tail(3) == ["line 98", "line 99", "\ufffd last"]
    assert QemuProcess(["qemu"], tmp_path / "missing").console_tail() == []
    assert QemuProcess(["qemu"]).console_tail() == []


def test_misuse_is_a_clear_error(tmp_path):
    with pytest.raises(QemuError, match="empty"):
        QemuProcess([])
    proc = QemuProcess([fake(tmp_path, "time.sleep(60)")])
    with pytest.raises(QemuError, match="not been started"):
        proc.check()
    with pytest.raises(QemuError, match="not been started"):
        proc.wait(0)
    assert proc.terminate() is None
    proc.start()
    try:
        with pytest.raises(QemuError, match="already started"):
            proc.start()
    finally:
        proc.close()


def test_close_removes_its_temporary_stderr_file(tmp_path):
    proc = QemuProcess([fake(tmp_path, "sys.stderr.write('bye')")])
    proc.start()
    assert proc.wait(10) == 0
    assert proc.stderr_text() == "bye"
    path = proc.stderr_log
    proc.close()
    assert not path.exists()
    assert "exit status 0" in proc.describe_exit()
