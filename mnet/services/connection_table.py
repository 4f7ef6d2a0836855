"""The stack's TCP table as `mnet stack` prints it."""
from __future__ import annotations


def connection_table(stack) -> str:
    """The TCP table as `mnet stack` prints it (listeners, then connections)."""
    return "connections:\n" + "\n".join("  " + line for line in stack.connection_table().splitlines())
