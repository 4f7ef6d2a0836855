"""Shared pieces for integration tests: the guest image and a booted lab.

Booting a guest under TCG costs seconds, so guests are shared between the
tests of a module where that is safe (each test leaves the guests as it
found them).
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def guest_image(mnet_guest_image):
    # The project's own tests use the same fixture the `mnet` pytest plugin gives users.
    return mnet_guest_image


@pytest.fixture(scope="session", autouse=True)
def _require_root_for_integration(request):
    # CI runs as root; say so clearly instead of failing deep inside pyroute2.
    if os.geteuid() != 0 and any(item.get_closest_marker("integration") for item in request.session.items):
        pytest.exit("integration tests need root (TAP devices, network namespaces); run as root or "
                    "select unit tests with -m 'not integration'", returncode=2)


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind(request):
    # Autouse and module-scoped: set up before the module's other fixtures, so
    # torn down after them, when everything the module made should be gone.
    from support.leaks import Snapshot

    before = Snapshot()
    yield
    left = before.settle()
    if left:
        before.clean_up()
        pytest.fail(f"{request.module.__name__} left behind (now removed where possible):\n  "
                    + "\n  ".join(left), pytrace=False)
