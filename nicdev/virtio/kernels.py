"""The C burst kernels (`nicdev.virtio._kernels`, built by kernels_build.py)
and the choice of data path.

`MNET_DATAPATH` picks the data path for the whole process: `c` (the default:
the compiled kernels) or `python` (the readable reference in this package,
which the kernels are tested against). Code that has both asks `use_c()`.

`MNET_KERNELS_DIR` loads the kernels from another build directory instead of
the installed one: the AddressSanitizer test points it at an instrumented
build.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

__all__ = ["KernelsUnavailable", "DATAPATHS", "selected", "use_c", "ffi", "lib", "mem_table"]

DATAPATHS = ("c", "python")
_MODULE = "nicdev.virtio._kernels"


class KernelsUnavailable(ImportError):
    """The C data path was asked for (or is the default) but cannot be loaded."""


def _selected_from_env() -> str:
    value = os.environ.get("MNET_DATAPATH", "c").strip().lower() or "c"
    if value not in DATAPATHS:
        raise KernelsUnavailable(f"MNET_DATAPATH={value!r}: expected one of {', '.join(DATAPATHS)}")
    return value


def _load_from(directory: str):
    found = glob.glob(os.path.join(directory, *_MODULE.split(".")[:-1], "_kernels*.so"))
    if not found:
        raise KernelsUnavailable(f"MNET_KERNELS_DIR={directory}: no built kernels under it")
    spec = importlib.util.spec_from_file_location(_MODULE, found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_MODULE] = module
    return module


def _load():
    directory = os.environ.get("MNET_KERNELS_DIR")
    if directory:
        return _load_from(directory)
    try:
        from nicdev.virtio import _kernels
    except ImportError as e:
        raise KernelsUnavailable(
            f"the C kernels are not built ({e}): run `make setup` (or `pip install -e .` with gcc and the "
            "Python headers installed), or set MNET_DATAPATH=python for the pure-Python data path"
        ) from None
    return _kernels


_DATAPATH = _selected_from_env()
if _DATAPATH == "c":
    _module = _load()
    ffi, lib = _module.ffi, _module.lib
else:
    ffi = lib = None


def selected() -> str:
    """The data path this process runs: "c" or "python"."""
    return _DATAPATH


def use_c() -> bool:
    """True when the C kernels run the data path."""
    return _DATAPATH == "c"


class _RegionTable:
    """A GuestMemory's regions as a C `struct mnet_mem`, kept alive with it.

    Holds a buffer export of each region until `release()` (GuestMemory.release
    calls it first: a region's mmap cannot close while C holds its buffer)."""

    __slots__ = ("regions", "mem", "_array", "_buffers")

    def __init__(self, regions: list) -> None:
        self.regions = regions
        self.mem = None
        self._buffers = []
        for r in regions:
            try:
                self._buffers.append(ffi.from_buffer(r.view, require_writable=True))
            except BufferError:
                self.release()
                raise ValueError(f"guest memory region at {r.gpa:#x} is read-only: a device writes guest memory") from None
        self._array = ffi.new("struct mnet_region[]", max(1, len(regions)))
        for slot, region, buf in zip(self._array, regions, self._buffers):
            slot.gpa = region.gpa
            slot.size = region.size
            slot.host = ffi.cast("uint8_t *", buf)
        self.mem = ffi.new("struct mnet_mem *", {"count": len(regions), "regions": self._array})

    def release(self) -> None:
        for buf in self._buffers:
            ffi.release(buf)
        self._buffers = []
        if self.mem is not None:
            self.mem.count = 0      # a stale pointer to it now reaches no memory


def mem_table(mem):
    """The `struct mnet_mem *` for a GuestMemory (C data path only), made once
    per set of regions and cached on the GuestMemory."""
    table = mem.__dict__.get("_c_table")
    if table is None or table.regions is not mem.regions:
        if table is not None:
            table.release()
        table = _RegionTable(mem.regions)
        mem.__dict__["_c_table"] = table
    return table.mem
