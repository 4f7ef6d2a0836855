"""Run a test on both data paths: the C kernels and the Python reference.

    from support.datapaths import datapath  # noqa: F401  (the fixture)
    pytestmark = pytest.mark.usefixtures("datapath")

Code that has both paths asks `nicdev.virtio.kernels.use_c()` when it builds
its rings; the fixture selects the path for the test as MNET_DATAPATH does
for a process (the "c" run is skipped when the kernels are not loaded).
"""
import pytest

from nicdev.virtio import kernels


@pytest.fixture(params=["c", "python"])
def datapath(request, monkeypatch):
    if request.param == "c" and not kernels.use_c():
        pytest.skip("MNET_DATAPATH=python: the C kernels are not loaded")
    monkeypatch.setattr(kernels, "_DATAPATH", request.param)
    return request.param
