"""A request target to the path it names: origin-form (``/a/b?q``) or absolute-form
(``http://host/a/b``), percent-decoded as UTF-8, with ``.`` and empty segments
dropped. A ``..`` segment (sent as is or encoded as ``%2e%2e``), a NUL, a bad
escape or bytes that are not UTF-8 are refused (HttpError 400): nothing that
could climb out of a served directory ever reaches the file system."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .parser import HttpError

ABSOLUTE = re.compile(r"https?://[^/?#]*", re.IGNORECASE)
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Target:
    segments: tuple[str, ...]   # decoded, no "", "." or ".."
    raw_path: str               # the path as sent, without the query (for redirects)

    @property
    def path(self) -> str:
        """The decoded path, normalised: ``/a/b`` (``/`` for the root)."""
        return "/" + "/".join(self.segments)

    @property
    def is_directory_form(self) -> bool:
        """Whether the path as sent ends in a slash (``/docs/``)."""
        return self.raw_path.endswith("/")


def parse_target(target: str) -> Target:
    absolute = ABSOLUTE.match(target)
    if absolute:
        target = target[absolute.end():] or "/"
    raw_path = target.split("?", 1)[0].split("#", 1)[0]
    if not raw_path.startswith("/"):
        raise HttpError(400, "the request target must be a path starting with /")
    if BAD_ESCAPE.search(raw_path):
        raise HttpError(400, "bad percent-escape in the path")
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not UTF-8") from None
    if "\x00" in decoded:
        raise HttpError(400, "NUL in the path")
    segments = []
    for segment in decoded.split("/"):
        if segment == "..":
            raise HttpError(400, "'..' in the path")
        if segment not in ("", "."):
            segments.append(segment)
    return Target(tuple(segments), raw_path)
