"""The C kernels' build and loader (nicdev.virtio.kernels), and the C
Internet checksum held to the Python reference."""
import mmap
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nicdev.virtio import checksum, kernels
from nicdev.virtio.memory import GuestMemory, MemoryRegion

pytestmark = pytest.mark.skipif(not kernels.use_c(), reason="MNET_DATAPATH=python: the C kernels are not loaded")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_default_data_path_is_c():
    # `make test` runs with MNET_DATAPATH unset: the compiled kernels must load.
    result = _python("from nicdev.virtio import kernels; print(kernels.selected(), kernels.lib is not None)",
                     MNET_DATAPATH="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["c", "True"]


def test_python_data_path_loads_no_kernels():
    result = _python("from nicdev.virtio import kernels, checksum; print(kernels.selected(), kernels.lib, "
                     "sorted(checksum.IMPLEMENTATIONS))", MNET_DATAPATH="python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "None", "['python']"]


def test_unknown_data_path_is_a_clear_error():
    result = _python("import nicdev.virtio.kernels", MNET_DATAPATH="fast")
    assert result.returncode != 0
    assert "MNET_DATAPATH='fast': expected one of c, python" in result.stderr


def test_cli_reports_unknown_data_path_in_one_line():
    result = subprocess.run([sys.executable, "-m", "mnet.cli.main", "switch", "--help"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "MNET_DATAPATH": "fast"})
    assert result.returncode == 1
    assert result.stderr.strip() == "mnet: MNET_DATAPATH='fast': expected one of c, python"


def test_missing_kernels_dir_is_a_clear_error(tmp_path):
    result = _python("import nicdev.virtio.kernels", MNET_KERNELS_DIR=str(tmp_path))
    assert result.returncode != 0
    assert f"MNET_KERNELS_DIR={tmp_path}: no built kernels under it" in result.stderr


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_c_checksum_matches_python(data, initial):
    c, python = checksum.IMPLEMENTATIONS["c"], checksum.IMPLEMENTATIONS["python"]
    assert c(data, initial) == python(data, initial)
    assert c(bytearray(data), initial) == python(data, initial)
    assert c(memoryview(data)[1:], initial) == python(data[1:], initial)


@pytest.mark.parametrize("data", [b"", bytes(4), bytes(65536), b"\xff" * 65536, b"\xff\xff", b"\x01",
                                  b"\xff\xfe\x00\x01", bytes(range(256)) * 257])
def test_c_checksum_edge_cases(data):
    assert checksum.IMPLEMENTATIONS["c"](data, 3) == checksum.IMPLEMENTATIONS["python"](data, 3)


def test_c_data_path_is_the_one_used():
    assert checksum.ones_complement_sum is checksum.IMPLEMENTATIONS["c"]


def test_region_table_follows_guest_memory_and_lets_go_of_mmaps():
    backing = mmap.mmap(-1, 8192)
    extra = bytearray(4096)
    mem = GuestMemory([MemoryRegion(0x10000, 8192, backing), MemoryRegion(0x12000, 4096, extra)])
    table = kernels.mem_table(mem)
    assert kernels.mem_table(mem) == table      # made once per set of regions
    assert table.count == 2
    assert [(table.regions[i].gpa, table.regions[i].size) for i in range(2)] == [(0x10000, 8192), (0x12000, 4096)]
    backing[5] = 0xAB
    assert kernels.ffi.cast("uint8_t *", table.regions[0].host)[5] == 0xAB
    mem.release()
    backing.close()     # would raise BufferError if the table still held the mmap
    assert kernels.mem_table(mem).count == 0


def test_read_only_region_is_refused_for_the_c_path():
    mem = GuestMemory([MemoryRegion(0, 4096, bytes(4096))])
    with pytest.raises(ValueError, match="region at 0x0 is read-only"):
        kernels.mem_table(mem)
