"""Content-Type by file extension: a fixed table, so every machine serves the same
types (Python's ``mimetypes`` reads the system's mime.types and differs between hosts)."""
from __future__ import annotations

from pathlib import PurePath

DEFAULT = "application/octet-stream"
TYPES = {
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".md": "text/markdown; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".csv": "text/csv; charset=utf-8",
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json", ".xml": "application/xml", ".pdf": "application/pdf",
    ".wasm": "application/wasm", ".zip": "application/zip", ".gz": "application/gzip",
    ".tar": "application/x-tar",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".svg": "image/svg+xml", ".ico": "image/vnd.microsoft.icon", ".webp": "image/webp",
    ".mp4": "video/mp4", ".webm": "video/webm", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
    ".woff": "font/woff", ".woff2": "font/woff2",
}


def content_type(name: str) -> str:
    """The type of a file called ``name`` (case-insensitive extension; octet-stream when unknown)."""
    return TYPES.get(PurePath(name).suffix.lower(), DEFAULT)
