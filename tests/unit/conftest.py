"""A unit test that leaks fails: a file, a kernel socket, a subprocess or a
MultiOS stack socket left open for the garbage collector warns
(ResourceWarning), and here that warning is an error. One dropped in a
finaliser cannot raise where it happens; pytest collects it (its
unraisable-exception hook, run after each test phase) and reports it against
the test that dropped the object, as the error below.
"""
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
LEAKS_FAIL = (
    "error::ResourceWarning",
    "error::pytest.PytestUnraisableExceptionWarning",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if not item.path.is_relative_to(UNIT):     # the hook sees every test of the run
            continue
        for spec in LEAKS_FAIL:
            item.add_marker(pytest.mark.filterwarnings(spec))
