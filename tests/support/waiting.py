"""The tests' one way to wait for something another thread or process does."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")

WAIT = 5.0  # default bound: generous for anything that should take milliseconds


def wait_for(condition: Callable[[], T], what: str, timeout: float = WAIT, interval: float = 0.005) -> T:
    """Poll `condition()` until it is true and return its value; fail the test,
    naming `what`, if that takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
