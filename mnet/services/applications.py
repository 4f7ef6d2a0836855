"""The applications `--serve` can start besides the built-in echo/discard/source services.

Each row names a kind (its spelling is in spec.KINDS) and the function that
starts it, as ``module:function``; the module is imported only when the
service starts, so an application may use anything in mnet.services.
The function is called as ``start(stack, svc, stopping, report)`` and returns
the thread that serves it until ``stopping`` is set (ServiceError if it
cannot start: the CLI says it in one line). A thread with a ``status()``
method has `mnet stack` print what it returns on SIGUSR1.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable

STARTERS: dict[str, str] = {
    "lb": "mnet.apps.loadbalancer.service:start",
    "http": "mnet.apps.http.service:start_http",
    "https": "mnet.apps.http.service:start_https",
    "chat": "mnet.apps.chat.server:start",
    "udp-file": "mnet.apps.filetransfer.service:start",
}


def starter(kind: str) -> Callable[..., threading.Thread] | None:
    """The start function of application ``kind`` (None for the built-in services)."""
    target = STARTERS.get(kind)
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
