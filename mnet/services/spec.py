"""What a service is (kind, port, tcp-source's byte count) and its ``kind:PORT`` spelling."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ServiceSpecError

SERVICES = ("udp-echo", "tcp-echo", "tcp-discard", "tcp-source")
SERVICE_FORMS = "udp-echo:PORT, tcp-echo:PORT, tcp-discard:PORT, tcp-source:PORT,bytes=N"


@dataclass(frozen=True)
class Service:
    """One service: its kind, port and (tcp-source) byte count."""

    kind: str
    port: int
    size: int = 0

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.port}"


def parse_service(text: str) -> Service:
    """``kind:PORT`` (``tcp-source:PORT,bytes=N``) -> Service; ServiceSpecError for anything else."""
    kind, sep, rest = text.partition(":")
    if kind not in SERVICES or not sep:
        raise ServiceSpecError(f"bad --serve '{text}': expected one of {SERVICE_FORMS}")
    port_text, _, params = rest.partition(",")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ServiceSpecError(f"bad --serve '{text}': port must be 1..65535")
    size = 0
    if kind == "tcp-source":
        key, eq, value = params.partition("=")
        if key != "bytes" or not eq:
            raise ServiceSpecError(f"bad --serve '{text}': tcp-source needs bytes=N, as in tcp-source:{port},bytes=1000000")
        try:
            size = int(value)
        except ValueError:
            size = -1
        if size < 0:
            raise ServiceSpecError(f"bad --serve '{text}': bytes must be a whole number >= 0")
    elif params:
        raise ServiceSpecError(f"bad --serve '{text}': {kind} takes no parameters")
    return Service(kind, port, size)
