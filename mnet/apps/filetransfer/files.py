"""The file side of a transfer: the sender's SHA-256 of its file, and the
receiver's partial file that becomes the final one only once verified.

A file being received is written to ``DIR/.NAME.SESSION.part`` (the protocol
refuses names starting with a dot, so it never collides with a received
file) and renamed to ``DIR/NAME`` when its SHA-256 matches; on a mismatch or
any failure the partial file is removed, so a name in DIR always holds a
whole, verified file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

READ_SIZE = 1 << 20


def sha256_of(path: str | os.PathLike) -> tuple[int, bytes]:
    """(size, SHA-256) of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(READ_SIZE):
            digest.update(block)
            size += len(block)
    return size, digest.digest()


class IncomingFile:
    """One file being received into ``directory``."""

    def __init__(self, directory: Path, name: str, session: int) -> None:
        self.final = directory / name
        self.partial = directory / f".{name}.{session:08x}.part"
        self._file = open(self.partial, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> Path:
        """Verified: the partial file takes the final name (replacing an older file of that name)."""
        self._file.close()
        os.replace(self.partial, self.final)
        return self.final

    def discard(self) -> None:
        """Not verified or not whole: remove the partial file."""
        self._file.close()
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass
