"""Every ```python block of README.md and docs/*.md runs, as a new user would run it:
a fresh interpreter in an empty directory (the marking convention: tests/support/doc_blocks.py)."""
import subprocess
import sys

import pytest

from support.doc_blocks import SETUPS, DocBlock, all_blocks, blocks_of

BLOCKS = all_blocks()
PROGRAMS = [b for b in BLOCKS if b.kind == "run"]
RUN_TIMEOUT = 120.0  # seconds; a bound, not a measurement


@pytest.mark.parametrize("block", PROGRAMS, ids=[b.id for b in PROGRAMS])
def test_the_example_runs(block: DocBlock, tmp_path):
    program = tmp_path / "example.py"
    program.write_text(block.code)
    try:
        done = subprocess.run([sys.executable, "-X", "dev", str(program)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {RUN_TIMEOUT:.0f} s")
    assert done.returncode == 0, f"{block.id} failed:\n{done.stderr[-3000:]}"
    assert "ResourceWarning" not in done.stderr, f"{block.id} leaves something unclosed:\n{done.stderr[-3000:]}"


INTEGRATION = [b for b in BLOCKS if b.kind == "integration" and not b.setup]
WITH_SETUP = [b for b in BLOCKS if b.kind == "integration" and b.setup]


@pytest.mark.parametrize("block", INTEGRATION, ids=[b.id for b in INTEGRATION])
def test_an_integration_example_is_a_pytest_module_that_compiles(block: DocBlock):
    # (It runs in tests/integration/test_doc_examples_guests.py; here, what needs no root.)
    compile(block.code, block.id, "exec")
    assert "def test_" in block.code, f"{block.id}: an integration block is a pytest module"


@pytest.mark.parametrize("block", WITH_SETUP, ids=[b.id for b in WITH_SETUP])
def test_an_integration_program_compiles_and_names_its_setup(block: DocBlock):
    compile(block.code, block.id, "exec")
    assert block.setup in SETUPS
    assert "def test_" not in block.code, f"{block.id}: a program with a set-up is run by python, not pytest"


def test_most_blocks_run_and_every_skip_says_why():
    skipped = [b for b in BLOCKS if b.kind == "skip"]
    assert all(b.reason for b in skipped)
    assert len(PROGRAMS) >= 6, [b.id for b in PROGRAMS]


def test_a_bad_marker_is_refused(tmp_path, monkeypatch):
    import support.doc_blocks as doc_blocks

    monkeypatch.setattr(doc_blocks, "ROOT", tmp_path)
    for marker in ("<!-- doc-test: skip -->", "<!-- doc-test: sometimes -->"):
        doc = tmp_path / "x.md"
        doc.write_text(f"text\n{marker}\n```python\nprint(1)\n```\n")
        with pytest.raises(ValueError, match="x.md:3"):
            blocks_of(doc)
    doc.write_text("<!-- doc-test: skip, an outline -->\n```python\nclass A: ...\n```\n")
    (block,) = blocks_of(doc)
    assert (block.kind, block.reason, block.line) == ("skip", "an outline", 2)
    for marker in ("<!-- doc-test: integration, setup=elsewhere -->", "<!-- doc-test: integration, needs a lab -->"):
        doc.write_text(f"{marker}\n```python\nprint(1)\n```\n")
        with pytest.raises(ValueError, match="x.md:2: unknown integration set-up"):
            blocks_of(doc)
    doc.write_text("<!-- doc-test: integration, setup=lab -->\n```python\nprint(1)\n```\n")
    (block,) = blocks_of(doc)
    assert (block.kind, block.setup) == ("integration", "lab")
