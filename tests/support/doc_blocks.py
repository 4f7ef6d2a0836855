"""The ```python blocks of README.md and docs/*.md, and how each is tested.

A block is tested by what the HTML comment on the line just before it says
(docs/stack.md, "Code examples are tested"):

* nothing: a complete program, run by tests/unit/test_doc_examples.py;
* ``<!-- doc-test: integration -->``: a pytest module that needs root,
  QEMU or real peers (the ``mnet`` plugin's fixtures), run by
  tests/integration/test_doc_examples_guests.py;
* ``<!-- doc-test: integration, setup=NAME -->``: a complete program that
  needs root or QEMU and, before it starts, the set-up NAME of SETUPS
  (the same integration test puts it in place, runs the program, removes it);
* ``<!-- doc-test: skip, REASON -->``: a block that truly cannot run in CI
  (an outline of an interface is better written as a program using it);
  the reason is required.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = re.compile(r"^<!--\s*doc-test:\s*(?P<kind>[a-z]+)\s*(?:,\s*(?P<why>.*?))?\s*-->$")
KINDS = ("integration", "skip")
SETUP = re.compile(r"setup=(?P<name>[a-z-]+)")

# What an integration program finds in place when it starts (the names its marker may use).
SETUPS = {
    "none": "nothing beyond root and QEMU: the program starts what it needs",
    "lab": "`mnet switch --control /run/mnet/switch-4242.sock` with a vhost-user port `vm` listening "
           "at /run/mnet/vm0.sock and a TAP port `host` into the network namespace `lab`, "
           "where the kernel has 10.0.0.1/24",
    "trace": "ring.trace in the program's directory: the ring trace of a Linux guest `vm0` "
             "pinging a MultiOS stack, recorded by the `mnet_trace` fixture as in docs/tracing.md's test",
}


@dataclass(frozen=True)
class DocBlock:
    path: str  # relative to the repository
    line: int  # of the opening ```python
    kind: str  # "run", "integration" or "skip"
    reason: str
    code: str
    setup: str = ""  # integration programs: a name of SETUPS ("" for a pytest module)

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
            setup = _setup(rel, i + 1, reason) if kind == "integration" else ""
            found.append(DocBlock(rel, i + 1, kind, reason, "\n".join(lines[i + 1:end]) + "\n", setup))
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


def _setup(rel: str, line: int, text: str) -> str:
    if not text:
        return ""
    m = SETUP.fullmatch(text)
    if m is None or m["name"] not in SETUPS:
        raise ValueError(f"{rel}:{line}: unknown integration set-up {text!r}: "
                         f"setup=NAME with NAME one of {', '.join(SETUPS)}")
    return m["name"]


def all_blocks() -> list[DocBlock]:
    return [b for path in documents() for b in blocks_of(path)]
