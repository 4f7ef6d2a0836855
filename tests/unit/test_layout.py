"""Project-layout rules that otherwise only break on a fresh clone."""
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_test_modules_have_unique_basenames():
    # tests/ has no __init__.py files (rootdir-relative imports), so two test
    # modules with one basename stop pytest at collection.
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_qemu_stays_a_namespace_package():
    # An __init__.py would hide the installed qemu.qmp.
    assert not (ROOT / "qemu" / "__init__.py").exists()
