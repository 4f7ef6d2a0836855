"""chat's ``--serve`` options: ``chat:PORT[,max_clients=N][,max_line=BYTES]``. Standard library only,
so `mnet --help` can describe the service without loading the stack."""
from __future__ import annotations

from dataclasses import dataclass

from mnet.services.errors import ServiceSpecError

MAX_CLIENTS = 100   # connections at once (nicknamed or not); one more is told the chat is full
MAX_LINE = 1024     # bytes in one line, its end of line aside (IRC allows 512 with it)
LIMITS = {"max_clients": (1, 10000), "max_line": (16, 65536)}


@dataclass(frozen=True)
class ChatOptions:
    max_clients: int = MAX_CLIENTS
    max_line: int = MAX_LINE


def chat_options(svc) -> ChatOptions:
    """The options of a ``chat`` Service; ServiceSpecError for a value out of its range."""
    values = {}
    for key, (low, high) in LIMITS.items():
        text = svc.option(key)
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ServiceSpecError(f"bad --serve {svc.label}: {key} must be {low}..{high}, not {text!r}")
        values[key] = value
    return ChatOptions(**values)
