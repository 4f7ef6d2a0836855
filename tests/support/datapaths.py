"""Both data paths as a pytest parameter: the Python reference and the C
kernels (skipped when MNET_DATAPATH=python left the kernels unloaded)."""
import pytest

from nicdev.virtio import kernels

DATAPATHS = [
    pytest.param("python", id="python"),
    pytest.param("c", id="c", marks=pytest.mark.skipif(not kernels.use_c(), reason="the C kernels are not loaded")),
]
