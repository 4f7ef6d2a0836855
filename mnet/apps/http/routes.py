"""The fixed pages of a server given no directory: ``/`` says what it is, ``/status``
gives this server's and its stack's counters as JSON."""
from __future__ import annotations

import html
import json
from typing import Callable

from .paths import Target
from .response import SERVER, Response, error_response


class FixedSite:
    """``/`` and ``/status``; ``status()`` returns the JSON-able dict ``/status`` shows."""

    def __init__(self, label: str, status: Callable[[], dict]) -> None:
        self.label, self.status = label, status

    def describe(self) -> str:
        return "fixed pages / and /status"

    def get(self, target: Target) -> Response:
        if target.path == "/":
            return self._home()
        if target.path == "/status":
            body = json.dumps(self.status(), indent=1, sort_keys=True, default=str) + "\n"
            return Response(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body.encode())
        return error_response(404, f"{target.path} is not here: this server has / and /status")

    def _home(self) -> Response:
        label = html.escape(self.label)
        text = (f"<!doctype html>\n<title>{label}</title>\n<h1>{SERVER} on the MultiOS stack</h1>\n"
                f"<p>This is <code>{label}</code>, an HTTP server running on the MultiOS network stack "
                "(TCP in Python, on a virtio-net NIC it drives itself). Started without <code>root=DIR</code>, "
                "it serves this page and <a href=\"/status\">/status</a>, the server's and the stack's "
                "counters as JSON.</p>\n")
        return Response(200, [("Content-Type", "text/html; charset=utf-8")], text.encode())
