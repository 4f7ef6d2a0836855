"""``--serve udp-file:PORT,dir=DIR``: receive files on a running stack until it stops.

One line per file on the stack's output: ``udp-file:PORT PEER received NAME
... sha256 ... match`` or ``udp-file:PORT PEER failed ...``.
"""
from __future__ import annotations

import threading
from pathlib import Path

from mnet.services.errors import ServiceError

from .endpoints import StackEndpoint
from .report import receive_summary
from .transfer import receive_files

MAX_SESSIONS = 16


def start(stack, svc, stopping: threading.Event, report) -> threading.Thread:
    """Bind the port and receive on a thread until ``stopping`` is set."""
    try:
        endpoint = StackEndpoint(stack, svc.port)
    except OSError as exc:
        raise ServiceError(f"--serve {svc.label}: {exc.strerror or exc}") from None

    def serve() -> None:
        try:
            receive_files(endpoint, svc.option("dir"), max_sessions=MAX_SESSIONS, stop=stopping.is_set,
                          report=lambda result: report(f"{svc.label} {receive_summary(result)}"))
        except OSError as exc:
            if not stopping.is_set():
                report(f"{svc.label} stopped: {exc.strerror or exc}")
        finally:
            endpoint.close()

    thread = threading.Thread(target=serve, name=svc.label, daemon=True)
    thread.start()
    return thread
