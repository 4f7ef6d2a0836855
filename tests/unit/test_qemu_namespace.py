"""qemu/ is a PEP 420 namespace package shared with the installed qemu.qmp."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_qemu_qmp_and_our_modules_import_in_one_process():
    # A fresh interpreter, so no earlier import in this test session helps.
    code = ("import qemu.qmp, qemu.cmdline, qemu.launcher, qemu.control, qemu.errors;"
            "from qemu import cmdline;"
            "from qemu.qmp import QMPClient;"
            "print(len(qemu.__path__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 2      # site-packages/qemu and our qemu/


def test_no_init_file_in_our_qemu_directory():
    assert (REPO / "qemu").is_dir()
    assert not (REPO / "qemu" / "__init__.py").exists()
