"""The ```python blocks of README.md and docs/*.md marked ``<!-- doc-test: integration -->``:
pytest modules that use the ``mnet`` plugin's fixtures (QEMU guests, DPDK...), each run by
pytest as a user would run it, in an empty directory (the convention: tests/support/doc_blocks.py)."""
import subprocess
import sys

import pytest

from support.doc_blocks import DocBlock, all_blocks

pytestmark = pytest.mark.integration

INTEGRATION = [b for b in all_blocks() if b.kind == "integration"]
RUN_TIMEOUT = 600.0  # seconds; a bound (a guest boots in 6-15 s under TCG), not a measurement


@pytest.mark.parametrize("block", INTEGRATION, ids=[b.id for b in INTEGRATION])
def test_the_example_passes(block: DocBlock, tmp_path):
    assert "def test_" in block.code, f"{block.id}: an integration block is a pytest module"
    (tmp_path / "test_doc_example.py").write_text(block.code)
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                               "test_doc_example.py"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {RUN_TIMEOUT:.0f} s")
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
