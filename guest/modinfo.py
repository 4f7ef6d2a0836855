"""Kernel modules: read their .modinfo section and work out a load order.

A module's ELF section `.modinfo` is a run of NUL-terminated "key=value"
strings (name, vermagic, depends, alias, license, parm, ...). `depends=` names
the modules whose symbols it uses, so following it recursively from the few
modules we want gives everything to insmod, dependencies first. Modules the
kernel has built in (listed in modules.builtin) need no loading and are
skipped.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from guest.errors import GuestBuildError

#: Module file endings we understand; Debian 12 ships plain .ko.
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(filename: str | Path) -> str:
    """The kernel's name for a module file: no suffix, '-' spelled '_'."""
    base = Path(filename).name
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    else:
        raise GuestBuildError(f"{filename}: not a kernel module file (expected one of {', '.join(MODULE_SUFFIXES)})")
    return base.replace("-", "_")


def _zstd_decompress(raw: bytes, path: Path) -> bytes:
    try:
        import zstandard  # optional: only kernels built with MODULE_COMPRESS_ZSTD need it
    except ImportError:
        zstandard = None
    if zstandard is not None:
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    tool = shutil.which("zstd")
    if tool is None:
        raise GuestBuildError(f"{path}: zstd-compressed module, but neither the zstandard package nor a zstd program is available")
    done = subprocess.run([tool, "-dcq"], input=raw, capture_output=True, check=False)
    if done.returncode != 0:
        raise GuestBuildError(f"{path}: zstd could not decompress it: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def read_module_bytes(path: str | Path) -> bytes:
    """The module's ELF bytes, decompressed if its name says it is compressed."""
    path = Path(path)
    raw = path.read_bytes()
    name = path.name
    try:
        if name.endswith(".ko.xz"):
            return lzma.decompress(raw)
        if name.endswith(".ko.gz"):
            return gzip.decompress(raw)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise GuestBuildError(f"{path}: cannot decompress: {exc}") from exc
    if name.endswith(".ko.zst"):
        return _zstd_decompress(raw, path)
    return raw


def parse_modinfo(section: bytes) -> dict:
    """Turn the bytes of a .modinfo section into a dict.

    Keys: "name" and "vermagic" (str, "" if absent), "depends" and "alias"
    (lists; depends is split on commas), and "fields": every key with the
    list of its values in order, for anything else (license, parm, ...).
    """
    fields: dict[str, list[str]] = {}
    for chunk in section.split(b"\0"):
        if not chunk:
            continue  # padding between entries
        text = chunk.decode("utf-8", errors="replace")
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise GuestBuildError(f"malformed .modinfo entry {text!r} (expected key=value)")
        fields.setdefault(key, []).append(value)
    depends: list[str] = []
    for value in fields.get("depends", []):
        depends.extend(d.strip() for d in value.split(",") if d.strip())
    return {
        "name": fields.get("name", [""])[0],
        "vermagic": fields.get("vermagic", [""])[0],
        "depends": depends,
        "alias": list(fields.get("alias", [])),
        "fields": fields,
    }


def read_modinfo(path: str | Path) -> dict:
    """Read the .modinfo of a .ko / .ko.xz / .ko.zst / .ko.gz file (see parse_modinfo)."""
    data = read_module_bytes(path)
    try:
        elf = ELFFile(io.BytesIO(data))
        section = elf.get_section_by_name(".modinfo")
        if section is None:
            raise GuestBuildError(f"{path}: no .modinfo section, not a kernel module")
        raw = section.data()
    except ELFError as exc:
        raise GuestBuildError(f"{path}: not a valid ELF file: {exc}") from exc
    info = parse_modinfo(raw)
    if not info["name"]:
        info["name"] = module_name(path)
    return info


def read_builtin(modules_dir: str | Path) -> set[str]:
    """Names of the modules compiled into the kernel (modules.builtin)."""
    listing = Path(modules_dir) / "modules.builtin"
    if not listing.exists():
        return set()
    return {module_name(line.strip()) for line in listing.read_text().splitlines() if line.strip()}


def index_modules(modules_dir: str | Path) -> dict[str, Path]:
    """Map each module name under modules_dir to its file.

    As with depmod, a module under updates/ wins over one elsewhere.
    """
    root = Path(modules_dir)
    if not root.is_dir():
        raise GuestBuildError(f"kernel modules directory {root} does not exist")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            if not filename.endswith(MODULE_SUFFIXES):
                continue
            path = Path(dirpath) / filename
            name = module_name(filename)
            preferred = path.relative_to(root).parts[0] == "updates"
            if name not in found or preferred:
                found[name] = path
    return found


@dataclass(frozen=True)
class KernelModule:
    """One module to load: insmod them in the order resolve_modules returns."""

    name: str
    path: Path
    depends: tuple[str, ...] = field(default=())
    vermagic: str = ""


def resolve_modules(modules_dir: str | Path, wanted: list[str] | tuple[str, ...],
                    kernel_version: str | None = None) -> list[KernelModule]:
    """The modules needed for `wanted`, each after everything it depends on.

    Built-in modules are left out. Raises GuestBuildError for a module that
    is neither a file nor built in, for a dependency cycle, or for a vermagic
    that does not match `kernel_version` (or the other modules).
    """
    available = index_modules(modules_dir)
    builtin = read_builtin(modules_dir)
    order: list[KernelModule] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in done or name in builtin:
            return
        if name in chain:
            raise GuestBuildError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        path = available.get(name)
        if path is None:
            needed_by = f" (needed by {chain[-1]})" if chain else ""
            raise GuestBuildError(f"kernel module {name}{needed_by} not found under {modules_dir} and not built in")
        info = read_modinfo(path)
        for dep in info["depends"]:
            visit(dep, chain + (name,))
        done.add(name)
        order.append(KernelModule(name, path, tuple(info["depends"]), info["vermagic"]))

    for name in wanted:
        visit(name, ())

    vermagics = {m.vermagic.split(" ")[0] for m in order}
    if len(vermagics) > 1:
        raise GuestBuildError(f"modules built for different kernels: {sorted(vermagics)}")
    if kernel_version is not None and vermagics and vermagics != {kernel_version}:
        raise GuestBuildError(f"modules are for kernel {vermagics.pop()}, not {kernel_version}")
    return order
