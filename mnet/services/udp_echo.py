"""udp-echo: send every datagram back to its sender."""
from __future__ import annotations

import errno
import logging

from stack import PollEvent

from .service_loop import ServiceLoop
from .spec import Service

log = logging.getLogger(__name__)

DATAGRAMS_PER_WAKEUP = 64


class UdpEchoHandler:
    """udp-echo's one socket on the service's loop."""

    def __init__(self, loop: ServiceLoop, sock, svc: Service) -> None:
        self.loop, self.sock, self.svc = loop, sock, svc

    def start(self) -> None:
        self.loop.add(self, PollEvent.READ)

    def on_ready(self, events: PollEvent) -> None:
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                data, peer = self.sock.recv_from(65535)
                self.sock.send_to(data, peer)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENETDOWN):
                    self.loop.done = True  # the stack is stopping
                    return
                # One peer's trouble (its ARP failed: EHOSTUNREACH) must not end the service.
                log.warning("%s: %s", self.svc.label, exc)

    def on_timer(self) -> None:
        pass
