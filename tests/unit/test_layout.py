"""Project-layout rules that otherwise only break on a fresh clone."""
import ast
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def test_test_modules_have_unique_basenames():
    # tests/unit and tests/integration have no __init__.py (rootdir-relative
    # imports), so two test modules with one basename stop pytest at collection.
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def _imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in `path` names (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _test_python_files() -> list[Path]:
    return sorted(p for p in (ROOT / "tests").rglob("*.py") if "__pycache__" not in p.parts)


def test_no_test_module_imports_another_test_module():
    # Shared pieces live in tests/support (imported as `support`), so a test
    # module is never imported twice under two names or run as a side effect.
    offenders = []
    for path in _test_python_files():
        for name in _imported_modules(path):
            parts = name.split(".")
            if parts[0] == "tests" or any(part.startswith("test_") or part == "conftest" for part in parts):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_helper_modules_live_only_in_the_support_package():
    support = ROOT / "tests" / "support"
    assert (support / "__init__.py").exists()
    stray = [str(p.relative_to(ROOT)) for p in _test_python_files()
             if p.parent != support and not p.name.startswith("test_") and p.name != "conftest.py"]
    assert stray == []
    assert [p.name for p in support.glob("test_*.py")] == []


_NOT_OURS = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".hypothesis"}


def _repository_text_files() -> list[Path]:
    """Every text file of the checkout (walked, so a copy without .git is read too),
    leaving out what tools make: the venv, build output, caches."""
    paths = [p for p in ROOT.rglob("*")
             if p.is_file() and not _NOT_OURS & set(p.relative_to(ROOT).parts)
             and not any(part.endswith(".egg-info") for part in p.parts)]
    return [p for p in paths if b"\0" not in p.read_bytes()[:8192]]


def test_nothing_cites_the_design_document_that_is_not_in_the_repository():
    # Comments and docs cite docs/*.md or state the fact; the name is built so
    # that this file does not match itself.
    missing = "design" + ".md"
    assert not (ROOT / missing).exists()
    citing = [str(p.relative_to(ROOT)) for p in _repository_text_files()
              if missing in p.read_text(errors="replace").lower()]
    assert citing == []
