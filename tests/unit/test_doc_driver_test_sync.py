"""docs/tracing.md shows a complete driver integration test; CI runs that
very text as tests/integration/test_doc_driver_test.py. This keeps the two
the same, so the page never shows a test that does not run."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented_test() -> str:
    text = (ROOT / "docs" / "tracing.md").read_text()
    start = text.index("A complete driver test")
    block = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert block is not None, "docs/tracing.md: no python block after 'A complete driver test'"
    return block.group(1)


def test_the_documented_driver_test_is_the_one_ci_runs():
    assert documented_test() == (ROOT / "tests" / "integration" / "test_doc_driver_test.py").read_text()


def test_the_documented_driver_test_is_under_40_lines():
    assert len(documented_test().splitlines()) < 40
