"""Start a service on a running stack: its socket, then the thread of its event loop."""
from __future__ import annotations

import logging
import resource
import threading
from typing import Callable

from stack import IpAddress, SocketType
from stack.tcp import SOMAXCONN

from .applications import starter
from .errors import ServiceError
from .service_loop import STACK_GONE, ServiceLoop
from .spec import Service
from .tcp_accept import AcceptHandler
from .udp_echo import UdpEchoHandler

log = logging.getLogger(__name__)


def open_service(stack, svc: Service):
    """The service's socket, bound (and listening) before the stack says it is up; non-blocking."""
    sock = stack.socket(SocketType.DATAGRAM if svc.kind == "udp-echo" else SocketType.STREAM)
    try:
        sock.bind(IpAddress.any(svc.port))
        if sock.type is SocketType.STREAM:
            # As servers that expect many clients at once do (Go reads somaxconn, nginx asks
            # 511): a burst of handshakes waits in the queues instead of being dropped.
            sock.listen(SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"--serve {svc.label}: {exc.strerror or exc}") from None
    sock.set_nonblocking(True)
    return sock


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit to its hard limit; return it.

    A TCP connection in the service's Poller holds no descriptor, but a
    handler that asks a socket for fileno() makes it take two (its readiness
    socket pair); the headroom costs nothing.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the descriptor limit from %s to %s: %s", soft, hard, exc)
        return soft
    return hard


def serve(stack, sock, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> None:
    """Serve ``svc`` on its socket (from :func:`open_service`) until ``stopping`` is set or the stack
    goes down; the service's socket is closed at the end."""
    loop = ServiceLoop(report, stack.clock)
    handler = UdpEchoHandler(loop, sock, svc) if svc.kind == "udp-echo" else AcceptHandler(loop, sock, svc)
    with sock:
        try:
            handler.start()
        except OSError as exc:
            if exc.errno in STACK_GONE:
                return  # the stack stopped (another service failed to start) before this one began
            raise
        loop.run(stopping)


def start_service(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    """Open the service's socket and serve it, all its connections on one thread, until `stopping` is set.

    An application (mnet/services/applications.py) starts itself and may use more threads."""
    raise_fd_limit()
    start_application = starter(svc.kind)
    if start_application is not None:
        return start_application(stack, svc, stopping, report)
    sock = open_service(stack, svc)
    t = threading.Thread(target=serve, args=(stack, sock, svc, stopping, report), name=svc.label, daemon=True)
    t.start()
    return t
