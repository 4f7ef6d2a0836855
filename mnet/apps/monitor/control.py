"""A running stack's control protocol: one JSON request line in, one reply line out.

The framing and the replies are the switch's (`nicdev.net.control`): each
request is one JSON object on one line, ``{"op": NAME}``, of at most
``MAX_REQUEST`` bytes; each reply is one line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "one line"}``. The ops:

- ``snapshot``: ``{"ok": true, "snapshot": {...}}``, what
  :meth:`stack.Stack.snapshot` returns (interface, neighbours, routes,
  sockets, counters, the NIC and its rings). At most ``MAX_SOCKET_ROWS``
  sockets are sent (the reply must fit the server's ``MAX_PENDING``);
  ``sockets_left_off`` says how many more there were.
- ``ops``: the ops this stack answers.

Every request gets a reply and nothing a request says can stop the stack:
bad JSON, an unknown op or argument and any exception an op raises become
an error reply. Sans-IO: the handler is handed lines by the server
(`mnet.apps.monitor.server`) and asks the stack for its snapshot.
"""
from __future__ import annotations

import json
import logging
from typing import Callable

from nicdev.net.control import RequestError, error_reply, parse_request

log = logging.getLogger(__name__)

__all__ = ["StackControlHandler", "OPS", "MAX_SOCKET_ROWS"]

OPS = ("snapshot", "ops")
# About 400 bytes of JSON each: 5,000 keep a reply near 2 MiB, under the
# server's MAX_PENDING of 4 MiB (a bigger one would cost the client its connection).
MAX_SOCKET_ROWS = 5000


def _reply(obj: dict) -> bytes:
    return json.dumps({"ok": True, **obj}, separators=(",", ":"), default=str).encode() + b"\n"


def _bounded(snap: dict) -> dict:
    sockets = snap.get("sockets", [])
    if len(sockets) > MAX_SOCKET_ROWS:
        snap["sockets"] = sockets[:MAX_SOCKET_ROWS]
        snap["sockets_left_off"] = len(sockets) - MAX_SOCKET_ROWS
    return snap


class StackControlHandler:
    """``handler.handle(line) -> reply line`` for one stack; ``snapshot`` is
    the function giving its snapshot (``stack.snapshot``)."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self._ops: dict[str, Callable[[], dict]] = {
            "snapshot": lambda: {"snapshot": _bounded(snapshot())},
            "ops": lambda: {"ops": list(OPS)},
        }

    def handle(self, line: bytes) -> bytes:
        """One request line (with or without its newline) -> one reply line."""
        try:
            return _reply(self._dispatch(line))
        except RequestError as exc:
            return error_reply(str(exc))
        except Exception as exc:        # a bug in an op: say so, keep serving
            log.exception("control request failed")
            return error_reply(f"internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, line: bytes) -> dict:
        op, request = parse_request(line, OPS)
        extra = sorted(set(request) - {"op"})
        if extra:
            raise RequestError(f"{op}: unknown argument {extra[0][:40]!r}")
        return self._ops[op]()
