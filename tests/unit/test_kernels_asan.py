"""The C kernels under AddressSanitizer: a second build with
-fsanitize=address runs the kernels' tests (hostile rings and property tests
included) in a child process, so any read or write outside a buffer aborts
that process instead of passing unseen."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nicdev.virtio import kernels, kernels_build

ROOT = Path(__file__).resolve().parents[2]

# The test files that exercise the kernels; each runs against the ASan build.
ASAN_TEST_FILES = [
    "tests/unit/test_kernels.py",
    "tests/unit/test_driver_burst.py",
    "tests/unit/test_stack_virtio_datapaths.py",
    "tests/unit/test_fd_burst.py",
]

pytestmark = pytest.mark.skipif(not kernels.use_c(), reason="MNET_DATAPATH=python: the C kernels are not loaded")


def _libasan() -> str:
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.fail(f"gcc does not know libasan.so ({path!r}): install gcc's AddressSanitizer runtime (libasan)")
    return path


@pytest.fixture(scope="module")
def asan_env(tmp_path_factory):
    out = tmp_path_factory.mktemp("asan-kernels")
    kernels_build.build(out, sanitize=True)
    return {**os.environ, "MNET_KERNELS_DIR": str(out), "LD_PRELOAD": _libasan(), "MNET_DATAPATH": "c",
            # CPython's own allocations are not ours to judge (it frees at exit lazily).
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86"}


def _run(env, *args, timeout=900):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_asan_build_is_loaded_and_catches_an_overflow(asan_env):
    # The canary: the checksum kernel told to read past a 16-byte buffer must
    # be stopped by ASan, or the runs below would prove nothing.
    probe = _run(asan_env, "-c",
                 "from nicdev.virtio import kernels as k\n"
                 "assert k.lib.mnet_kernels_sanitized() == 1, 'not the ASan build'\n"
                 "print('sanitized', flush=True)\n"
                 "k.lib.mnet_ones_complement_sum(k.ffi.new('char[]', 16), 64, 0)\n", timeout=120)
    assert "sanitized" in probe.stdout, probe.stderr[-3000:]
    assert probe.returncode == 86, probe.stderr[-3000:]
    assert "heap-buffer-overflow" in probe.stderr


@pytest.mark.parametrize("test_file", ASAN_TEST_FILES)
def test_kernel_tests_pass_under_asan(asan_env, test_file):
    result = _run(asan_env, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", test_file)
    assert result.returncode == 0, f"{test_file} under ASan:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert " passed" in result.stdout
