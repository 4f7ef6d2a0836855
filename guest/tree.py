"""The file tree of the guest's initramfs, built up in memory, written as cpio.

Paths are absolute paths inside the image. Parent directories are created on
demand, and a parent that is a symlink inside the image is followed (so a file
added under /lib lands in /usr/lib when the image has /lib -> usr/lib, as on
merged-/usr Debian). Adding the same thing twice is fine; adding a different
thing at a path already taken is a GuestBuildError.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from guest.cpio import CpioWriter
from guest.errors import GuestBuildError

_MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


@dataclass(frozen=True)
class File:
    """A regular file: its bytes are given (data) or read at write time (source)."""

    mode: int
    data: bytes | None = None
    source: Path | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return Path(self.source).read_bytes()


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Device:
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int = 0o600


Entry = Union[Dir, File, Symlink, Device]


def _norm(path: str) -> str:
    if not path.startswith("/"):
        raise GuestBuildError(f"image paths must be absolute: {path!r}")
    normalized = posixpath.normpath(path)
    # normpath keeps a leading "//"; POSIX allows it, we don't need it.
    return "/" + normalized.lstrip("/")


def _link_destination(link_path: str, target: str) -> str:
    base = target if target.startswith("/") else posixpath.join(posixpath.dirname(link_path), target)
    return _norm(base)


class ImageTree:
    """Directories, files, symlinks and device nodes of a guest image."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __contains__(self, path: str) -> bool:
        return _norm(path) in self._entries

    def get(self, path: str) -> Entry | None:
        """The entry stored at exactly this path (symlinks are not followed)."""
        return self._entries.get(_norm(path))

    def paths(self) -> list[str]:
        """All paths, parents before children."""
        return sorted(self._entries, key=lambda p: p.split("/"))

    def resolve(self, path: str) -> str:
        """Where `path` really lives in the image: every symlinked parent followed."""
        return self._resolve_parent(_norm(path), create=False)

    def add_dir(self, path: str, mode: int = 0o755) -> str:
        """Make sure a directory exists at `path` (a symlink to one is accepted)."""
        where = self._resolve_parent(_norm(path), create=True)
        for _ in range(_MAX_SYMLINK_HOPS):
            if where == "/":
                return where
            existing = self._entries.get(where)
            if existing is None:
                self._entries[where] = Dir(mode)
                return where
            if isinstance(existing, Dir):
                return where
            if isinstance(existing, Symlink):
                where = self._resolve_parent(_link_destination(where, existing.target), create=True)
                continue
            raise GuestBuildError(f"cannot make directory {path}: a {type(existing).__name__.lower()} is there")
        raise GuestBuildError(f"too many symlinks while making directory {path}")

    def add_file(self, path: str, data: bytes | None = None, source: Path | str | None = None,
                 mode: int | None = None) -> str:
        """Add a regular file from bytes or from a host file (read when written)."""
        if (data is None) == (source is None):
            raise GuestBuildError(f"{path}: give either data or source")
        if source is not None:
            source = Path(source)
            if not source.is_file():
                raise GuestBuildError(f"{path}: source {source} is not a regular file")
            if mode is None:
                mode = stat.S_IMODE(source.stat().st_mode)
        entry = File(mode=0o644 if mode is None else mode, data=data, source=source)
        return self._put(path, entry)

    def add_symlink(self, path: str, target: str) -> str:
        """Add a symlink (the target is stored as given, relative or absolute)."""
        if not target:
            raise GuestBuildError(f"{path}: empty symlink target")
        return self._put(path, Symlink(target))

    def add_device(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> str:
        """Add a device node ("c" or "b")."""
        if kind not in ("c", "b"):
            raise GuestBuildError(f"{path}: device kind must be 'c' or 'b', not {kind!r}")
        return self._put(path, Device(kind, major, minor, mode))

    def add_host_path(self, host_path: str | Path, host_root: str | Path = "/") -> str:
        """Copy a host file into the image at the same path, symlinks included.

        Each symlink met on the way (the file's own, or a directory's such as
        /lib -> usr/lib) is recreated in the image, then followed; the real
        file is copied where the chain ends. `host_root` lets tests use a fake
        root directory. Returns the image path of the real file.
        """
        root = Path(host_root)
        path = _norm(str(host_path))
        for _ in range(_MAX_SYMLINK_HOPS):
            parts = [p for p in path.split("/") if p]
            if not parts:
                raise GuestBuildError(f"cannot copy the root directory {host_path}")
            current = "/"
            redirected = False
            for index, part in enumerate(parts):
                here = posixpath.join(current, part)
                on_host = root / here.lstrip("/")
                if on_host.is_symlink():
                    target = os.readlink(on_host)
                    self.add_symlink(here, target)
                    path = _norm(posixpath.join(_link_destination(here, target), *parts[index + 1:]))
                    redirected = True
                    break
                if index < len(parts) - 1:
                    if not on_host.is_dir():
                        raise GuestBuildError(f"{host_path}: {here} is not a directory on the host")
                    self.add_dir(here)
                elif on_host.is_file():
                    self.add_file(here, source=on_host)
                elif not on_host.exists():
                    raise GuestBuildError(f"{host_path}: {here} does not exist on the host")
                else:
                    raise GuestBuildError(f"{host_path}: {here} is not a regular file")
                current = here
            if not redirected:
                return path
        raise GuestBuildError(f"{host_path}: too many levels of symbolic links")

    def write_cpio(self, writer: CpioWriter) -> None:
        """Write every entry, parents first, to a cpio archive."""
        for path in self.paths():
            entry = self._entries[path]
            if isinstance(entry, Dir):
                writer.add_dir(path, entry.mode)
            elif isinstance(entry, File):
                writer.add_file(path, entry.read(), entry.mode)
            elif isinstance(entry, Symlink):
                writer.add_symlink(path, entry.target)
            else:
                writer.add_device(path, entry.kind, entry.major, entry.minor, entry.mode)

    def _put(self, path: str, entry: Entry) -> str:
        where = self._resolve_parent(_norm(path), create=True)
        if where == "/":
            raise GuestBuildError("cannot replace the image's root directory")
        existing = self._entries.get(where)
        if existing is not None and existing != entry:
            raise GuestBuildError(f"{path}: already holds {existing}, cannot put {entry}")
        self._entries[where] = entry
        return where

    def _resolve_parent(self, path: str, create: bool) -> str:
        """Follow symlinks in every component but the last; optionally create dirs."""
        for _ in range(_MAX_SYMLINK_HOPS):
            parts = [p for p in path.split("/") if p]
            current = "/"
            redirected = False
            for index, part in enumerate(parts[:-1]):
                here = posixpath.join(current, part)
                existing = self._entries.get(here)
                if isinstance(existing, Symlink):
                    path = _norm(posixpath.join(_link_destination(here, existing.target), *parts[index + 1:]))
                    redirected = True
                    break
                if existing is None:
                    if create:
                        self._entries[here] = Dir()
                elif not isinstance(existing, Dir):
                    raise GuestBuildError(f"{path}: parent {here} is not a directory in the image")
                current = here
            if not redirected:
                return path
        raise GuestBuildError(f"{path}: too many levels of symbolic links in the image")
