"""Writer for the cpio "newc" format, the format of a Linux initramfs.

Every member is a 110-byte ASCII header ("070701" then thirteen 8-digit hex
fields), the NUL-terminated name padded to a multiple of 4 bytes, then the
data padded the same way. The archive ends with a member called
"TRAILER!!!". The kernel unpacks it into its root file system before it runs
/init (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst).

Output is deterministic (fixed mtime, inode numbers in order of addition), so
the same recipe gives the same bytes and the same cache key.
"""

from __future__ import annotations

import gzip
import stat
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_MAX_FIELD = 0xFFFFFFFF


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _check_field(label: str, value: int) -> int:
    if not 0 <= value <= _MAX_FIELD:
        raise ValueError(f"cpio {label} {value} does not fit in 32 bits")
    return value


def _member_name(name: str) -> bytes:
    # The kernel accepts "/dev/console" and "dev/console" alike; relative names
    # are the convention (and what `cpio -t` prints back).
    stripped = name.lstrip("/")
    if not stripped and name != "/":
        raise ValueError("cpio member name is empty")
    stripped = stripped or "."
    encoded = stripped.encode("utf-8")
    if b"\0" in encoded:
        raise ValueError(f"cpio member name contains a NUL byte: {name!r}")
    return encoded


class CpioWriter:
    """Append members to a newc archive written to a binary file object.

    Call close() (or use the writer as a context manager) to add the trailer;
    the file object itself is left open.
    """

    def __init__(self, fileobj: BinaryIO, mtime: int = 0) -> None:
        self._out = fileobj
        self._mtime = _check_field("mtime", mtime)
        self._next_ino = 1
        self._closed = False
        self._names: set[bytes] = set()

    def __enter__(self) -> "CpioWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """Add a directory (parents must be added first for the kernel to create it)."""
        self._member(name, stat.S_IFDIR | (mode & 0o7777), uid, gid, b"", nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Add a regular file with the given contents."""
        self._member(name, stat.S_IFREG | (mode & 0o7777), uid, gid, bytes(data))

    def add_symlink(self, name: str, target: str, uid: int = 0, gid: int = 0) -> None:
        """Add a symbolic link; the link target is stored as the member's data."""
        if not target or "\0" in target:
            raise ValueError(f"bad symlink target for {name!r}: {target!r}")
        self._member(name, stat.S_IFLNK | 0o777, uid, gid, target.encode("utf-8"))

    def add_device(
        self, name: str, kind: str, major: int, minor: int,
        mode: int = 0o600, uid: int = 0, gid: int = 0,
    ) -> None:
        """Add a device node; kind is "c" (character) or "b" (block)."""
        if kind == "c":
            type_bits = stat.S_IFCHR
        elif kind == "b":
            type_bits = stat.S_IFBLK
        else:
            raise ValueError(f"device kind must be 'c' or 'b', not {kind!r}")
        self._member(name, type_bits | (mode & 0o7777), uid, gid, b"", rdev=(major, minor))

    def close(self) -> None:
        """Write the TRAILER!!! member. Further additions are refused."""
        if self._closed:
            return
        self._write(TRAILER.encode(), 0, 0, 0, b"", ino=0, nlink=1, mtime=0)
        self._closed = True

    def _member(
        self, name: str, mode: int, uid: int, gid: int, data: bytes,
        nlink: int = 1, rdev: tuple[int, int] = (0, 0),
    ) -> None:
        if self._closed:
            raise ValueError("cpio archive already closed")
        encoded = _member_name(name)
        if encoded.decode() == TRAILER:
            raise ValueError(f"{TRAILER} is reserved for the end of the archive")
        if encoded in self._names:
            raise ValueError(f"duplicate cpio member {encoded.decode()!r}")
        self._names.add(encoded)
        ino = self._next_ino
        self._next_ino += 1
        self._write(encoded, mode, uid, gid, data, ino=ino, nlink=nlink, mtime=self._mtime, rdev=rdev)

    def _write(
        self, name: bytes, mode: int, uid: int, gid: int, data: bytes,
        ino: int, nlink: int, mtime: int, rdev: tuple[int, int] = (0, 0),
    ) -> None:
        fields = (
            ("ino", ino), ("mode", mode), ("uid", uid), ("gid", gid),
            ("nlink", nlink), ("mtime", mtime), ("filesize", len(data)),
            ("devmajor", 0), ("devminor", 0),
            ("rdevmajor", rdev[0]), ("rdevminor", rdev[1]),
            ("namesize", len(name) + 1), ("check", 0),
        )
        header = MAGIC + b"".join(b"%08X" % _check_field(label, value) for label, value in fields)
        named = header + name + b"\0"
        self._out.write(named + _pad4(len(named)))
        self._out.write(data + _pad4(len(data)))


def gzip_compress(raw: bytes, level: int = 6) -> bytes:
    """gzip with a zero timestamp, so equal archives compress to equal bytes."""
    return gzip.compress(raw, compresslevel=level, mtime=0)
