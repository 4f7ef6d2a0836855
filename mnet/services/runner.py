"""Start a service on a running stack: its socket, then its thread."""
from __future__ import annotations

import threading
from typing import Callable

from stack import IpAddress, SocketType

from .errors import ServiceError
from .spec import Service
from .tcp_accept import tcp_accept_loop
from .udp_echo import udp_echo

ACCEPT_POLL = 0.5  # how often a service's loop looks at the stop flag


def open_service(stack, svc: Service):
    """The service's socket, bound (and listening) before the stack says it is up."""
    sock = stack.socket(SocketType.DATAGRAM if svc.kind == "udp-echo" else SocketType.STREAM)
    try:
        sock.bind(IpAddress.any(svc.port))
        if sock.type is SocketType.STREAM:
            sock.listen()
    except OSError as exc:
        sock.close()
        raise ServiceError(f"--serve {svc.label}: {exc.strerror or exc}") from None
    sock.set_timeout(ACCEPT_POLL)
    return sock


def start_service(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    """Open the service's socket and serve it on a thread until `stopping` is set."""
    sock = open_service(stack, svc)
    target = udp_echo if svc.kind == "udp-echo" else tcp_accept_loop
    t = threading.Thread(target=target, args=(sock, svc, stopping, report), name=svc.label, daemon=True)
    t.start()
    return t
