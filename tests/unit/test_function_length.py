"""No function in the network stack (``stack/``) runs over 80 lines.

A long function there is a sign of state without an owner (the TCP
connection's segment arrival was one function of 165 lines); the limit
keeps each step of a protocol short enough to read against its RFC.
"""
from __future__ import annotations

import ast
from pathlib import Path

STACK = Path(__file__).resolve().parents[2] / "stack"
MAX_LINES = 80


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function in ``source`` longer than ``limit``.

    A function's lines run from its ``def`` to its last line (decorators not
    counted; a nested function counts within its parent and on its own).
    """
    found = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                lines = child.end_lineno - child.lineno + 1
                if lines > limit:
                    found.append((name, lines))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return found


def test_the_measure_finds_a_long_function_in_a_class():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    source = f"class A:\n    def short(self):\n        return 1\n\n    def long(self):\n{body}\n"
    assert long_functions(source) == [("A.long", MAX_LINES + 1)]
    assert long_functions(source, limit=MAX_LINES + 1) == []


def test_the_measure_finds_nested_functions():
    inner = "\n".join(f"        y{i} = {i}" for i in range(MAX_LINES))
    source = f"def outer():\n    def inner():\n{inner}\n    return inner\n"
    assert [name for name, _ in long_functions(source)] == ["outer", "outer.inner"]


def test_no_function_in_the_stack_is_over_80_lines():
    offenders = []
    for path in sorted(STACK.rglob("*.py")):
        for name, lines in long_functions(path.read_text()):
            offenders.append(f"{path.relative_to(STACK.parent)}: {name} ({lines} lines)")
    assert offenders == [], "functions over 80 lines:\n" + "\n".join(offenders)
