"""What the tour found: one check per client and service, PASS or FAIL with a figure.

A check that raises is a FAIL with the error's one line; the tour goes on,
so one broken service does not hide how the others did.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


def step(text: str) -> None:
    """A progress line (the guest boots slowly under TCG: say what is going on)."""
    print(f"==> {text}", flush=True)


def detail(text: str) -> None:
    for line in text.rstrip().splitlines() or [""]:
        print(f"    {line}", flush=True)


class CheckFailed(Exception):
    """A check saw the wrong answer: the message says what it got."""


@dataclass
class Check:
    name: str          # e.g. "tcp echo"
    client: str        # e.g. "host: nc"
    passed: bool
    figure: str        # e.g. "1000000 bytes back in 0.84 s", or why it failed

    def line(self, width: int, client_width: int) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<{width}}  {self.client:<{client_width}}  {self.figure}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, client: str, probe: Callable[[], str]) -> Check:
        """Run `probe` (it returns the figure, or raises CheckFailed/OSError/...) and record it."""
        step(f"{name}: {client}")
        started = time.monotonic()
        try:
            figure = probe()
            passed = True
        except Exception as exc:   # any failure of a check is that check's FAIL, not the tour's end
            figure = f"{type(exc).__name__}: {exc}".splitlines()[0] if not isinstance(exc, CheckFailed) else str(exc)
            passed = False
        figure = figure or f"{time.monotonic() - started:.2f} s"
        result = Check(name, client, passed, figure)
        detail(f"{'PASS' if passed else 'FAIL'}: {figure}")
        self.checks.append(result)
        return result

    def record(self, name: str, client: str, passed: bool, figure: str) -> None:
        """A check whose outcome is known already (one that could not start: passed=False)."""
        self.checks.append(Check(name, client, passed, figure))
        detail(f"{'PASS' if passed else 'FAIL'}: {figure}")

    @property
    def failed(self) -> int:
        return sum(not c.passed for c in self.checks)

    def render(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        client_width = max((len(c.client) for c in self.checks), default=0)
        lines = [c.line(width, client_width) for c in self.checks]
        passed = len(self.checks) - self.failed
        lines.append(f"{passed} of {len(self.checks)} checks passed")
        return "\n".join(lines)
