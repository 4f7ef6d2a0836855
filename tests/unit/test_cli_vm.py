"""`mnet vm`'s own logic, in process: option checks, the default MAC, the
back-end probe and the exit status of an interactive console (QEMU replaced
by stand-in programs)."""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import types

import pytest

from mnet.cli import vm_cmd
from mnet.cli.errors import CliError
from qemu.launcher import QemuProcess


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    vm_cmd.add_arguments(p)
    return p.parse_args(list(argv))


def test_options_give_interface_and_nic():
    iface, nic = vm_cmd.check_options(parse("--nic", "stream:/tmp/q.sock", "--ip", "10.1.2.3/16",
                                            "--gateway", "10.1.0.1", "--mac", "52:54:00:AB:CD:EF"))
    assert str(iface) == "10.1.2.3/16"
    assert (nic.kind, nic.path, nic.mac) == ("stream", "/tmp/q.sock", "52:54:00:ab:cd:ef")


def test_default_mac_differs_per_socket_and_is_stable():
    def mac(*argv):
        return vm_cmd.check_options(parse("--ip", "10.0.0.1/24", *argv))[1].mac

    a = mac("--nic", "vhost-user:/tmp/a.sock")
    b = mac("--nic", "vhost-user:/tmp/b.sock")
    assert a != b, "two VMs with the default name on two ports must not share a MAC"
    assert a == mac("--nic", "vhost-user:/tmp/a.sock")
    assert a != mac("--nic", "vhost-user:/tmp/a.sock", "--name", "other")
    first = int(a.split(":")[0], 16)
    assert a.startswith("52:54:00:") and not first & 1


@pytest.mark.parametrize("argv, message", [
    (["--nic", "dgram:/x", "--ip", "10.0.0.1/24"], "bad --nic"),
    (["--nic", "vhost-user:/x", "--ip", "10.0.0.1/33"], "bad --ip"),
    (["--nic", "vhost-user:/x", "--ip", "10.0.0.1/24", "--gateway", "10.0.0.0.1"], "bad --gateway"),
    (["--nic", "vhost-user:/x", "--ip", "10.0.0.1/24", "--mac", "52:54:00:00:00"], "bad --mac"),
    (["--nic", "vhost-user:/x", "--ip", "10.0.0.1/24", "--initrd", "/x"], "go together"),
    (["--nic", "vhost-user:/x", "--ip", "10.0.0.1/24", "--memory", "70000"], "bad --memory"),
    (["--nic", "vhost-user:/x", "--ip", "10.0.0.1/24", "--boot-timeout", "-5"], "must be positive"),
])
def test_bad_options(argv, message):
    with pytest.raises(CliError, match=message):
        vm_cmd.check_options(parse(*argv))


def _listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    return s


def test_probe_accepts_a_backend_that_waits_for_the_front_end(tmp_path):
    # vhost-user and stream back-ends wait for the front-end to speak first.
    with _listener(tmp_path / "ok.sock") as s:
        vm_cmd.check_backend(vm_cmd.parse_nic(f"vhost-user:{tmp_path / 'ok.sock'}"))
        conn, _ = s.accept()      # the probe really connected
        assert conn.recv(1) == b""  # and left without a word
        conn.close()


def test_probe_reports_a_backend_that_hangs_up(tmp_path):
    # What our switch's ports do to a second front-end.
    with _listener(tmp_path / "busy.sock") as s:
        def refuse():
            conn, _ = s.accept()
            conn.close()
        t = threading.Thread(target=refuse)
        t.start()
        with pytest.raises(CliError, match="hung up at once"):
            vm_cmd.check_backend(vm_cmd.parse_nic(f"stream:{tmp_path / 'busy.sock'}"))
        t.join(5)


def _console(tmp_path, body):
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!{sys.executable}\nimport os, signal, sys\n{body}\n")
    script.chmod(0o755)
    proc = QemuProcess([str(script)], stderr_log=tmp_path / "stderr")
    proc.start()
    return types.SimpleNamespace(process=proc)


def test_console_status_after_normal_exit(tmp_path, capsys):
    assert vm_cmd.wait_console(_console(tmp_path, "sys.exit(0)")) == 0
    assert capsys.readouterr().err == ""


def test_console_status_after_qemu_failure_quotes_qemu(tmp_path, capsys):
    vm = _console(tmp_path, "sys.stderr.write('qemu-system-x86_64: could not load kernel\\n'); sys.exit(1)")
    assert vm_cmd.wait_console(vm) == 1
    err = capsys.readouterr().err
    assert "exit status 1" in err and "could not load kernel" in err


def test_console_status_after_a_signal_is_128_plus_n(tmp_path, capsys):
    vm = _console(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    assert vm_cmd.wait_console(vm) == 128 + 9
    assert "killed by signal 9" in capsys.readouterr().err
