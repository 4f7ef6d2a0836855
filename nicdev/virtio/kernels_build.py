"""Builds the C burst kernels into one extension, `nicdev.virtio._kernels`
(cffi, API mode).

Every `csrc/*.c` is compiled; every `csrc/*.h` is included where cffi
generates its wrappers; every `csrc/*.cdef` (kernels.cdef first: the shared
structs) is the interface Python sees. So a new kernel is a new .c, .h and
.cdef (the .h for C, the .cdef for cffi, which cannot read headers) and no
edit here. Warnings are errors: the kernels read
memory a guest controls, and a warning there is a bug until shown otherwise.

setup.py names `ffibuilder` (so `pip install` compiles it); the
AddressSanitizer test calls `build(out_dir, sanitize=True)` for a second,
instrumented copy.
"""
from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

MODULE = "nicdev.virtio._kernels"
CSRC = Path(__file__).resolve().parent / "csrc"
CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
SANITIZE_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]


def _cdef_files() -> list[Path]:
    files = sorted(CSRC.glob("*.cdef"))
    first = CSRC / "kernels.cdef"
    return [first] + [f for f in files if f != first]


def _headers() -> list[Path]:
    first = CSRC / "kernels.h"
    return [first] + [h for h in sorted(CSRC.glob("*.h")) if h != first]


def make_builder(sanitize: bool = False) -> FFI:
    builder = FFI()
    builder.cdef("\n".join(f.read_text() for f in _cdef_files()))
    compile_args = CFLAGS + (SANITIZE_FLAGS if sanitize else [])
    # Sources are named relative to the project root when setuptools builds
    # (it runs from there), absolute otherwise.
    sources = [os.path.relpath(p) if not sanitize else str(p) for p in sorted(CSRC.glob("*.c"))]
    builder.set_source(
        MODULE,
        "".join(f'#include "{h.name}"\n' for h in _headers()),
        sources=sources,
        include_dirs=[str(CSRC)],
        extra_compile_args=compile_args,
        extra_link_args=["-fsanitize=address"] if sanitize else [],
    )
    return builder


def build(out_dir: str | os.PathLike, sanitize: bool = False) -> Path:
    """Compile the kernels under `out_dir`; returns the extension's path."""
    return Path(make_builder(sanitize).compile(tmpdir=str(out_dir), verbose=False))


ffibuilder = make_builder()

if __name__ == "__main__":
    print(build(Path(__file__).resolve().parents[2]))
