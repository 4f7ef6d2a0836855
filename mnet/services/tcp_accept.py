"""A TCP service's listener: accept connections, each served on a thread of its own."""
from __future__ import annotations

import errno
import logging
import threading
from typing import Callable

from .spec import Service
from .tcp_handlers import HANDLERS

log = logging.getLogger(__name__)


def tcp_accept_loop(listener, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> None:
    """Accept connections until stopped; each gets a thread running the service."""
    handler = HANDLERS[svc.kind]
    with listener:
        while not stopping.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if stopping.is_set() or exc.errno in (errno.EBADF, errno.ENETDOWN, errno.EINVAL):
                    return
                log.warning("%s: %s", svc.label, exc)
                continue
            t = threading.Thread(target=_serve_connection, args=(handler, conn, peer, svc, report),
                                 name=f"{svc.label} {peer}", daemon=True)
            t.start()


def _serve_connection(handler, conn, peer, svc: Service, report: Callable[[str], None]) -> None:
    with conn:
        try:
            line = handler(conn, svc)
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.ENETDOWN):
                return  # the stack is stopping
            line = f"error: {exc.strerror or exc}"
        report(f"{svc.label} {peer} {line}")
