"""What a service is (kind, port, options) and its ``kind:PORT[,key=value...]`` spelling.

Each kind is one row of KINDS: its spelling for messages, the option keys it
takes, which are required, and a check of their values. Applications other
than the built-in echo/discard/source services add a row here and a starter
in mnet/services/applications.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mnet.apps.chat.options import chat_options
from mnet.apps.filetransfer.options import check as check_udp_file
from mnet.apps.http.options import HTTP_KEYS, HTTPS_KEYS, check_http, check_https

from .errors import ServiceSpecError


@dataclass(frozen=True)
class Service:
    """One service: its kind, port, (tcp-source) byte count and its other ``key=value`` options, in order."""

    kind: str
    port: int
    size: int = 0
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.port}"

    def option(self, key: str, default: str | None = None) -> str | None:
        """The last value given for ``key`` (default when absent)."""
        values = self.all_options(key)
        return values[-1] if values else default

    def all_options(self, key: str) -> list[str]:
        """Every value given for ``key``, in order (for keys that may repeat)."""
        return [v for k, v in self.options if k == key]


@dataclass(frozen=True)
class ServiceKind:
    """How one kind of service is spelled and which options it takes."""

    name: str
    form: str                                  # e.g. "tcp-source:PORT,bytes=N"
    keys: tuple[str, ...] = ()                 # options it accepts
    required: tuple[str, ...] = ()             # ... of which these must be given
    repeatable: tuple[str, ...] = ()           # ... and these may be given more than once
    check: Callable[[Service], None] | None = None  # raises ServiceSpecError for a bad value


def _check_lb(svc: Service) -> None:
    from mnet.apps.loadbalancer.options import check_options  # (when an lb is asked for: it needs the stack)

    check_options(svc)


KINDS: dict[str, ServiceKind] = {k.name: k for k in (
    ServiceKind("udp-echo", "udp-echo:PORT"),
    ServiceKind("tcp-echo", "tcp-echo:PORT"),
    ServiceKind("tcp-discard", "tcp-discard:PORT"),
    ServiceKind("tcp-source", "tcp-source:PORT,bytes=N", keys=("bytes",), required=("bytes",)),
    ServiceKind("lb", "lb:PORT,backend=IP:PORT[,backend=IP:PORT...][,policy=round-robin|least-conn]"
                "[,check=SECONDS][,timeout=SECONDS][,rise=N][,fall=N][,idle=SECONDS]",
                keys=("backend", "policy", "check", "timeout", "rise", "fall", "idle"),
                required=("backend",), repeatable=("backend",), check=_check_lb),
    ServiceKind("http", "http:PORT[,root=DIR][,workers=N]", keys=HTTP_KEYS, check=check_http),
    ServiceKind("https", "https:PORT,cert=FILE,key=FILE[,root=DIR][,workers=N][,sha1_signatures=yes]",
                keys=HTTPS_KEYS, required=("cert", "key"), check=check_https),
    ServiceKind("chat", "chat:PORT[,max_clients=N][,max_line=BYTES]", keys=("max_clients", "max_line"),
                check=chat_options),
    ServiceKind("udp-file", "udp-file:PORT,dir=DIR", keys=("dir",), required=("dir",), check=check_udp_file),
)}

SERVICES = tuple(KINDS)
SERVICE_FORMS = ", ".join(k.form for k in KINDS.values())


def parse_service(text: str) -> Service:
    """``kind:PORT[,key=value...]`` -> Service; ServiceSpecError for anything else."""
    name, sep, rest = text.partition(":")
    kind = KINDS.get(name)
    if kind is None or not sep:
        raise ServiceSpecError(f"bad --serve '{text}': expected one of {SERVICE_FORMS}")
    port_text, _, params = rest.partition(",")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ServiceSpecError(f"bad --serve '{text}': port must be 1..65535")
    options = _parse_options(text, kind, port, params)
    size = 0
    if kind.name == "tcp-source":
        size = _parse_size(text, dict(options)["bytes"])
        options = ()
    svc = Service(kind.name, port, size, options)
    if kind.check is not None:
        kind.check(svc)
    return svc


def _parse_options(text: str, kind: ServiceKind, port: int, params: str) -> tuple[tuple[str, str], ...]:
    """The ``key=value`` pairs after the port, each checked against the kind's keys."""
    if params and not kind.keys:
        raise ServiceSpecError(f"bad --serve '{text}': {kind.name} takes no parameters")
    example = kind.form.replace("PORT", str(port), 1)  # (the first: the service's own)
    pairs = []
    for item in params.split(",") if params else ():
        key, eq, value = item.partition("=")
        if key not in kind.keys or not eq:
            given = {item.partition("=")[0] for item in params.split(",")}
            if not set(kind.required) <= given:
                raise ServiceSpecError(f"bad --serve '{text}': {kind.name} needs {_spell(kind.required)}, as in {example}")
            raise ServiceSpecError(f"bad --serve '{text}': {kind.name} takes {', '.join(k + '=' for k in kind.keys)} (as in {example})")
        if key not in kind.repeatable and any(k == key for k, _ in pairs):
            raise ServiceSpecError(f"bad --serve '{text}': {key}= given twice")
        pairs.append((key, value))
    missing = [k for k in kind.required if not any(p == k for p, _ in pairs)]
    if missing:
        raise ServiceSpecError(f"bad --serve '{text}': {kind.name} needs {_spell(missing)}, as in {example}")
    return tuple(pairs)


def _spell(keys) -> str:
    """``bytes=N,cert=CERT``: the keys as a user writes them."""
    return ",".join("bytes=N" if k == "bytes" else f"{k}={k.upper()}" for k in keys)


def _parse_size(text: str, value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise ServiceSpecError(f"bad --serve '{text}': bytes must be a whole number >= 0")
    return size
