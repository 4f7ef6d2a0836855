"""guest.init: the boot scripts parse under busybox sh and carry the markers."""

import subprocess

import pytest

from guest import init as guest_init


@pytest.mark.parametrize("name", ["INIT_SCRIPT", "CHANNEL_SCRIPT", "CONSOLE_SCRIPT"])
def test_scripts_parse_under_busybox_sh(name, tmp_path):
    script = tmp_path / "script"
    script.write_text(getattr(guest_init, name))
    done = subprocess.run(["busybox", "sh", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_guest_files():
    files = guest_init.guest_files(["/lib/modules/x/a.ko", "/lib/modules/x/b.ko"], ["/opt/lib"])
    assert set(files) == {"/init", "/etc/inittab", "/etc/profile", "/etc/mnet/console",
                          "/etc/mnet/channel", "/etc/mnet/modules"}
    assert files["/etc/mnet/modules"] == ("/lib/modules/x/a.ko\n/lib/modules/x/b.ko\n", 0o644)
    assert files["/init"][1] == 0o755 and files["/etc/mnet/channel"][1] == 0o755
    assert "export LD_LIBRARY_PATH=/opt/lib" in files["/etc/profile"][0]
    assert "LD_LIBRARY_PATH" not in guest_init.profile([])


def test_inittab_runs_channel_and_console():
    lines = [l for l in guest_init.INITTAB.splitlines() if l and not l.startswith("#")]
    assert "::respawn:/etc/mnet/channel" in lines
    assert "::respawn:/etc/mnet/console" in lines


def test_init_reads_the_documented_kernel_parameters_and_prints_markers():
    for parameter in ("mnet.ip=", "mnet.gw=", "mnet.hostname=", "mnet.wait="):
        assert parameter in guest_init.INIT_SCRIPT
    assert 'say "eth0 $MNET_IP up' in guest_init.INIT_SCRIPT
    assert guest_init.BOOT_DONE_MARKER == "mnet-guest: boot done"
    assert 'say "boot done' in guest_init.INIT_SCRIPT
    assert guest_init.CHANNEL_READY_MARKER == "mnet-guest: command channel on ttyS1 ready"
    assert guest_init.MODULE_LIST in guest_init.INIT_SCRIPT
