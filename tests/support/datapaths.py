"""Run a test on both data paths: the C kernels and the Python reference.

Two ways, for two kinds of code:

- the `datapath` fixture, for code that asks `nicdev.virtio.kernels.use_c()`
  when it builds its rings: it selects the path for the test as
  MNET_DATAPATH does for a process;

      from support.datapaths import datapath  # noqa: F401  (the fixture)
      pytestmark = pytest.mark.usefixtures("datapath")

- `DATAPATHS`, a parameter list for code that takes the path as an argument
  (`datapath="c"` or `"python"`).

The "c" runs are skipped when MNET_DATAPATH=python left the kernels unloaded.
"""
import pytest

from nicdev.virtio import kernels


@pytest.fixture(params=["c", "python"])
def datapath(request, monkeypatch):
    if request.param == "c" and not kernels.use_c():
        pytest.skip("MNET_DATAPATH=python: the C kernels are not loaded")
    monkeypatch.setattr(kernels, "_DATAPATH", request.param)
    return request.param


DATAPATHS = [
    pytest.param("python", id="python"),
    pytest.param("c", id="c", marks=pytest.mark.skipif(not kernels.use_c(), reason="the C kernels are not loaded")),
]
