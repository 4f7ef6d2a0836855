"""The ```python blocks of README.md and docs/*.md, and how each is tested.

A block is tested by what the HTML comment on the line just before it says
(docs/stack.md, "Code examples are tested"):

* nothing: a complete program, run by tests/unit/test_doc_examples.py;
* ``<!-- doc-test: integration -->``: a pytest module that needs root,
  QEMU or real peers (the ``mnet`` plugin's fixtures), run by
  tests/integration/test_doc_examples_guests.py;
* ``<!-- doc-test: skip, REASON -->``: not a program (an outline of an
  interface, a patch, a fragment); the reason is required.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = re.compile(r"^<!--\s*doc-test:\s*(?P<kind>[a-z]+)\s*(?:,\s*(?P<why>.*?))?\s*-->$")
KINDS = ("integration", "skip")


@dataclass(frozen=True)
class DocBlock:
    path: str  # relative to the repository
    line: int  # of the opening ```python
    kind: str  # "run", "integration" or "skip"
    reason: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[DocBlock]:
    lines = path.read_text().splitlines()
    rel = str(path.relative_to(ROOT))
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise ValueError(f"{rel}:{i + 1}: a ```python block that never ends")
            kind, reason = _mark(rel, i + 1, lines[i - 1].strip() if i else "")
            found.append(DocBlock(rel, i + 1, kind, reason, "\n".join(lines[i + 1:end]) + "\n"))
            i = end
        i += 1
    return found


def _mark(rel: str, line: int, before: str) -> tuple[str, str]:
    if "doc-test" not in before:
        return "run", ""
    m = MARK.match(before)
    if m is None or m["kind"] not in KINDS:
        raise ValueError(f"{rel}:{line}: unreadable marker {before!r}: "
                         "<!-- doc-test: integration --> or <!-- doc-test: skip, REASON -->")
    if m["kind"] == "skip" and not m["why"]:
        raise ValueError(f"{rel}:{line}: <!-- doc-test: skip, REASON --> needs its reason")
    return m["kind"], m["why"] or ""


def all_blocks() -> list[DocBlock]:
    return [b for path in documents() for b in blocks_of(path)]
