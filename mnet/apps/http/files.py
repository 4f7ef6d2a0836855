"""A directory served read-only: a target names a file under the root or nothing.

The target is already free of ``..`` (paths.parse_target); here the joined
path is resolved (symlinks followed) and must still lie under the resolved
root, so a symlink that leads out of the root is a 404 like a missing file.
A directory gets its index.html, or a generated listing; a directory named
without its trailing slash is redirected to it (so relative links work).
Only regular files are served: a FIFO or a device would hold a worker.
"""
from __future__ import annotations

import html
import os
import stat
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

from .content_types import content_type
from .paths import Target
from .response import FileBody, Response, error_response

INDEX = "index.html"


class DirectorySite:
    """GET (and HEAD) of the files under ``root``."""

    def __init__(self, root) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")

    def describe(self) -> str:
        return f"files under {self.root}"

    def get(self, target: Target) -> Response:
        path = self._inside(self.root.joinpath(*target.segments))
        if path is None:
            return error_response(404, f"{target.path} is not here")
        if path.is_dir():
            if not target.is_directory_form:
                return Response(301, [("Location", target.raw_path + "/")], b"")
            index = self._inside(path / INDEX)
            return self._file(index) if index is not None and index.is_file() else self._listing(path, target)
        return self._file(path)

    def _inside(self, path: Path) -> Path | None:
        """The resolved ``path`` if it exists and lies under the root, else None."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
            return None
        return real if real == self.root or self.root in real.parents else None

    def _file(self, path: Path) -> Response:
        try:
            info = path.stat()
        except OSError:
            return error_response(404, "not here")
        if not stat.S_ISREG(info.st_mode):
            return error_response(404, "not a regular file")
        if not os.access(path, os.R_OK):
            return error_response(403, "not readable")
        headers = [("Content-Type", content_type(path.name)),
                   ("Last-Modified", formatdate(info.st_mtime, usegmt=True))]
        return Response(200, headers, FileBody(path, info.st_size))

    def _listing(self, path: Path, target: Target) -> Response:
        try:
            entries = sorted(path.iterdir(), key=lambda p: p.name)
        except OSError:
            return error_response(403, "the directory cannot be listed")
        title = html.escape(target.path if target.path.endswith("/") else target.path + "/")
        items = []
        for entry in entries:
            slash = "/" if entry.is_dir() else ""
            items.append(f'<li><a href="{quote(entry.name)}{slash}">{html.escape(entry.name)}{slash}</a></li>')
        text = (f"<!doctype html>\n<title>Index of {title}</title>\n<h1>Index of {title}</h1>\n<ul>\n"
                + "\n".join(items) + "\n</ul>\n")
        return Response(200, [("Content-Type", "text/html; charset=utf-8")], text.encode())
