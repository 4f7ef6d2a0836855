"""A TCP service's listener: accept connections and hand each to a handler on the same loop."""
from __future__ import annotations

import errno
import logging

from stack import PollEvent

from .service_loop import ServiceLoop
from .spec import Service
from .tcp_handlers import HANDLERS

log = logging.getLogger(__name__)

ACCEPTS_PER_WAKEUP = 64  # bound the listener's turn, so the connections get theirs


class AcceptHandler:
    """The listening socket of a TCP service: each accepted connection gets the service's handler."""

    def __init__(self, loop: ServiceLoop, listener, svc: Service, make=None) -> None:
        """``make(loop, conn, peer, svc)`` gives an accepted connection's handler (by default
        the service's in tcp_handlers.HANDLERS; an application passes its own)."""
        self.loop, self.sock, self.svc = loop, listener, svc
        self.make = make or HANDLERS[svc.kind]

    def start(self) -> None:
        self.loop.add(self, PollEvent.READ)

    def on_ready(self, events: PollEvent) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENETDOWN, errno.EINVAL):
                    self.loop.done = True  # the listener is gone: so is the service
                    return
                log.warning("%s: %s", self.svc.label, exc)  # (out of descriptors, say): keep serving
                return
            conn.set_nonblocking(True)
            self.make(self.loop, conn, peer, self.svc).start()

    def on_timer(self) -> None:
        pass
