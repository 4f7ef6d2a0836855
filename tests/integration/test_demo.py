"""`mnet demo` is the project's main job: it must run end to end."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(guest_image):
    r = subprocess.run([sys.executable, "-m", "mnet.cli.main", "demo"], capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    for expected in ("hello from vm-b over a Python virtio-net device", "3 packets received",
                     "hello MultiOS, from vm-a", "==> demo succeeded"):
        assert expected in out, f"{expected!r} missing from the demo's output:\n{out[-4000:]}"
