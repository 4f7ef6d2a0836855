"""The control protocol of a running switch, sans-IO: one request line in, one reply line out.

Each request is one JSON object on one line, `{"op": NAME, ...args}`, of at
most `MAX_REQUEST` bytes; each reply is one JSON object on one line,
`{"ok": true, ...}` or `{"ok": false, "error": "one line"}`. The ops
(docs/control.md has examples):

- `ports`: every port's name, kind, status line, link state, impairments.
- `counters`: the switch's and every port's counters (`Switch.stats()`),
  with each impaired port's impairment counters.
- `impair` {port, spec}: set the port's impairments from now on; `spec` is
  the impairment keys of a port spec (`"loss=50%,seed=1"`), null clears.
- `link` {port, up}: take the port's link down or up (`Port.set_link`).
- `trace` {port, on}: start or stop tracing one port (null: every port)
  into the switch's live buffer (`Switch.set_tracing`).
- `trace_read` {since, max?}: the buffered records numbered `since` and
  later, at most `max` (default `TRACE_READ_MAX`): {records, next, lost}.
- `fault` {port, mode}: set the port's device mode (`port.set_fault`),
  null clears.

Every request gets a reply and nothing a request says can stop the switch:
bad JSON, an unknown op, a missing or wrongly typed argument, an unknown
port, a port that lacks the feature, and any exception an op raises become
an error reply (unexpected ones are logged with their traceback).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from nicdev.virtio.impairment import Impairment

from .errors import PortError
from .portspec import PortSpecError, parse_impairment_spec

log = logging.getLogger(__name__)

__all__ = ["ControlHandler", "MAX_REQUEST", "TRACE_READ_MAX", "error_reply", "OPS"]

MAX_REQUEST = 64 * 1024
# Records one trace_read returns at most: keeps a reply a few hundred KiB.
TRACE_READ_MAX = 2000

_NULL = type(None)


class RequestError(Exception):
    """What was wrong with a request, said in the error reply."""


def parse_request(line: bytes, ops: tuple[str, ...]) -> tuple[str, dict]:
    """One request line -> (its op, one of ``ops``; the whole request object).

    RequestError says what is wrong: too long, not JSON, not an object, no
    "op" string, an op not in ``ops``. Other control sockets (a stack's)
    speak the same framing through this function."""
    if len(line) > MAX_REQUEST + 1:
        raise RequestError(f"request longer than {MAX_REQUEST} bytes")
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        raise RequestError("request is not JSON (one JSON object per line)") from None
    if not isinstance(request, dict):
        raise RequestError('request must be a JSON object, {"op": ...}')
    op = request.get("op")
    if not isinstance(op, str):
        raise RequestError('request needs "op", a string')
    if op not in ops:
        raise RequestError(f"unknown op {op[:40]!r}; ops: {', '.join(ops)}")
    return op, request


def error_reply(message: str) -> bytes:
    """`{"ok": false, "error": message}` as a line (the message kept to one line)."""
    one_line = " ".join(str(message).split()) or "error"
    return _line({"ok": False, "error": one_line})


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def _type_name(types: tuple) -> str:
    names = {bool: "true or false", int: "an integer", str: "a string", _NULL: "null"}
    return " or ".join(names[t] for t in types)


class _Args:
    """A request's arguments, checked as they are taken."""

    def __init__(self, op: str, args: dict) -> None:
        self.op = op
        self.args = args
        self.used = {"op"}

    def get(self, name: str, *types: type, default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.args:
            if default is ...:
                raise RequestError(f"{self.op} needs {name!r}")
            return default
        value = self.args[name]
        # bool is an int in Python; JSON keeps them apart, and so do we.
        if not any(type(value) is t for t in types):
            raise RequestError(f"{self.op}: {name!r} must be {_type_name(types)}, not {json.dumps(value)[:40]}")
        return value

    def check_unknown(self) -> None:
        extra = sorted(set(self.args) - self.used)
        if extra:
            raise RequestError(f"{self.op}: unknown argument {extra[0]!r}")


class ControlHandler:
    """`handler.handle(line) -> reply line` for one `Switch`. Call on the
    switch's loop thread (the server does)."""

    def __init__(self, switch) -> None:
        self.switch = switch
        self._ops: dict[str, Callable[[_Args], dict]] = {
            "ports": self._ports, "counters": self._counters, "impair": self._impair, "link": self._link,
            "trace": self._trace, "trace_read": self._trace_read, "fault": self._fault,
        }

    def handle(self, line: bytes) -> bytes:
        """One request line (with or without its newline) -> one reply line."""
        try:
            return _line({"ok": True, **self._dispatch(line)})
        except RequestError as exc:
            return error_reply(str(exc))
        except (PortError, PortSpecError, ValueError) as exc:
            return error_reply(str(exc))
        except Exception as exc:        # a bug in an op: say so, keep serving
            log.exception("control request failed")
            return error_reply(f"internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, line: bytes) -> dict:
        op, request = parse_request(line, OPS)
        # Each op checks its arguments (all of them) before it changes anything.
        return self._ops[op](_Args(op, request))

    # -- helpers -------------------------------------------------------------------
    def _port(self, args: _Args):
        name = args.get("port", str)
        port = self.switch.ports.get(name)
        if port is None:
            raise RequestError(f"no port named {name[:40]!r}; ports: {', '.join(self.switch.ports) or 'none'}")
        return port

    @staticmethod
    def _impairments(port) -> dict | None:
        stats = getattr(port, "impairment_stats", None)
        return stats() if stats is not None else None

    # -- ops ---------------------------------------------------------------------------
    def _ports(self, args: _Args) -> dict:
        args.check_unknown()
        rows = []
        for port in self.switch.ports.values():
            qmp = getattr(port, "qmp_link", None)
            rows.append({"name": port.name, "kind": port.kind, "status": port.status, "link": port.link_up,
                         "impairment": self._impairments(port), "fault": getattr(port, "fault", None),
                         "qmp": None if qmp is None else qmp.last})
        return {"ports": rows}

    def _counters(self, args: _Args) -> dict:
        args.check_unknown()
        stats = self.switch.stats()
        for name, port in self.switch.ports.items():
            impairment = self._impairments(port)
            if impairment is not None:
                stats["ports"][name]["impairment"] = impairment
        return stats

    def _impair(self, args: _Args) -> dict:
        port = self._port(args)
        spec = args.get("spec", str, _NULL)
        args.check_unknown()
        out: Impairment | None = None
        in_: Impairment | None = None
        if spec is not None:
            out, in_ = parse_impairment_spec(spec)
        port = self.switch.set_impairments(port.name, out, in_)
        return {"port": port.name, "impairment": self._impairments(port)}

    def _link(self, args: _Args) -> dict:
        port = self._port(args)
        up = args.get("up", bool)
        args.check_unknown()
        port.set_link(up)
        qmp = getattr(port, "qmp_link", None)
        return {"port": port.name, "link": port.link_up, "qmp": None if qmp is None else qmp.last}

    def _trace(self, args: _Args) -> dict:
        name = args.get("port", str, _NULL)
        on = args.get("on", bool)
        args.check_unknown()
        if name is not None:
            self._port(args)
        self.switch.set_tracing(name, on)
        return {"port": name, "on": on}

    def _trace_read(self, args: _Args) -> dict:
        since = args.get("since", int)
        limit = args.get("max", int, default=TRACE_READ_MAX)
        args.check_unknown()
        if since < 0:
            raise RequestError("trace_read: 'since' must be 0 or more")
        if not 1 <= limit <= TRACE_READ_MAX:
            raise RequestError(f"trace_read: 'max' must be from 1 to {TRACE_READ_MAX}")
        records, end, lost = self.switch.trace_buffer.since(since)
        if len(records) > limit:
            end -= len(records) - limit
            records = records[:limit]
        return {"records": records, "next": end, "lost": lost}

    def _fault(self, args: _Args) -> dict:
        port = self._port(args)
        mode = args.get("mode", str, _NULL)
        args.check_unknown()
        set_fault = getattr(port, "set_fault", None)
        if set_fault is None:
            raise RequestError(f"device modes (fault) are not supported by port {port.name!r} ({port.kind})")
        set_fault(mode)
        return {"port": port.name, "mode": getattr(port, "fault", mode)}


OPS = ("ports", "counters", "impair", "link", "trace", "trace_read", "fault")
