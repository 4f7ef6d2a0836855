"""A unit test that leaks fails: a file, a kernel socket, a subprocess or a
MultiOS stack socket left open for the garbage collector warns
(ResourceWarning), and here that warning is an error. One dropped in a
finaliser cannot raise where it happens; pytest collects it (its
unraisable-exception hook, run after each test phase) and reports it against
the test that dropped the object, as the error below.

The stack's sockets are let off in the older socket test files listed in
LEAVE_SOCKETS_TO_STOP: their tests still leave their sockets to
`Stack.stop()` (which closes them), and there they only warn.
"""
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
LEAKS_FAIL = (
    "error::ResourceWarning",
    "error::pytest.PytestUnraisableExceptionWarning",
)
# Applied after LEAKS_FAIL, so it wins: a stack socket's warning ("unclosed <Socket STREAM ...>").
STACK_SOCKETS_WARN = "default:unclosed <Socket (STREAM|DATAGRAM|RAW)\\b:ResourceWarning"
LEAVE_SOCKETS_TO_STOP = {
    "test_socket_tcp.py",
    "test_socket_tcp_ready.py",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if not item.path.is_relative_to(UNIT):     # the hook sees every test of the run
            continue
        for spec in LEAKS_FAIL:
            item.add_marker(pytest.mark.filterwarnings(spec))
        if item.path.name in LEAVE_SOCKETS_TO_STOP:
            item.add_marker(pytest.mark.filterwarnings(STACK_SOCKETS_WARN))
