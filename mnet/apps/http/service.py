"""``--serve http:PORT[,root=DIR][,workers=N]`` and ``https:PORT,cert=FILE,key=FILE[,...]``:
the starters mnet/services/applications.py names."""
from __future__ import annotations

import threading
from functools import partial
from typing import Callable

from mnet.services.errors import ServiceError
from mnet.services.spec import Service
from stack import IpAddress, Shutdown, SocketOption, SocketType
from stack.tcp import SOMAXCONN
from stack.tls import SecurityConfig, TlsSocket, TlsVersion

from . import options
from .connection import VERSION, HttpConnection, ServerSettings
from .files import DirectorySite
from .pool import WorkerPool
from .response import error_response
from .routes import FixedSite
from .stats import ServerStats


def start_http(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    return _start(stack, svc, stopping, report, tls=None)


def start_https(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    config = SecurityConfig(min_version=TlsVersion.TLS1_2, max_version=TlsVersion.TLS1_3,
                            allow_sha1_signatures=options.sha1_signatures(svc))
    config.set_identity(svc.option("cert"), svc.option("key"))
    try:
        config.context(server_side=True)
    except (OSError, ValueError) as exc:
        raise ServiceError(f"--serve {svc.label}: the certificate does not load: {exc}") from None
    return _start(stack, svc, stopping, report, tls=config)


def settings_for(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> ServerSettings:
    """The server's settings from the service's options (already checked by options.check_*)."""
    stats = ServerStats()
    root = svc.option("root")
    if root is not None:
        try:
            site = DirectorySite(root)
        except OSError as exc:
            raise ServiceError(f"--serve {svc.label}: root={root}: {exc.strerror or exc}") from None
    else:
        site = FixedSite(svc.label, lambda: {"server": stats.snapshot(), "stack": stack.counters()})
    return ServerSettings(svc.label, site, report, stack.now, stopping, timeout=options.timeout(svc), stats=stats)


def _start(stack, svc, stopping, report, *, tls: SecurityConfig | None) -> threading.Thread:
    settings = settings_for(stack, svc, stopping, report)
    listener = _listen(stack, svc)

    def serve(sock, peer) -> None:
        settings.stats.busy(+1)
        try:
            _no_delay(sock)
            conn = sock if tls is None else _handshake(sock, peer, tls, settings)
            if conn is not None:
                HttpConnection(conn, str(peer.ip), settings).serve()
        finally:
            settings.stats.busy(-1)

    def answer_busy(sock, peer) -> None:  # HTTPS, on the pool's overflow thread: handshake, 503, close
        _no_delay(sock)
        conn = _handshake(sock, peer, tls, settings)
        if conn is not None:
            HttpConnection(conn, str(peer.ip), settings).refuse(busy_response())

    turn_away = {"reject": partial(_reject_plain, settings.stats)} if tls is None else {"overflow": answer_busy}
    pool = WorkerPool(listener, label=svc.label, workers=options.workers(svc), queue_size=options.queue_size(svc),
                      now=stack.now, stopping=stopping, serve=serve, count=settings.stats.count, report=report,
                      **turn_away)
    report(f"{svc.label} serving {settings.site.describe()} with {len(pool.workers)} workers")
    return pool.start()


def _listen(stack, svc: Service):
    """The listening socket, with REUSE_ADDR as HTTP servers set it: the port can be listened on
    again while connections the server closed first wait in TIME-WAIT."""
    sock = stack.socket(SocketType.STREAM)
    try:
        sock.set_option(SocketOption.REUSE_ADDR, True)
        sock.bind(IpAddress.any(svc.port))
        sock.listen(SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"--serve {svc.label}: {exc.strerror or exc}") from None
    return sock


def _no_delay(sock) -> None:
    """TCP_NODELAY on an accepted connection, as web servers set it: with Nagle, the tail of a
    response (or a TLS record) waits for the client's delayed ACK of what went before, about
    40 ms a request on a kept-alive connection."""
    try:
        sock.set_option(SocketOption.TCP_NO_DELAY, True)
    except OSError:
        pass    # the client already reset the connection: serving it reports that


def _handshake(sock, peer, config: SecurityConfig, settings: ServerSettings) -> TlsSocket | None:
    """The TLS server handshake, bounded by the request timeout (None if it fails: logged, closed)."""
    tls = TlsSocket(sock, config, server_side=True)
    tls.set_timeout(settings.timeout)
    try:
        tls.do_handshake()
    except OSError as exc:
        settings.stats.count("tls_handshake_failures")
        settings.report(f"{settings.label} {peer.ip} TLS handshake failed: {exc}")
        tls.close()
        return None
    return tls


def busy_response():
    """503 for a connection that found every worker busy and the queue full."""
    return error_response(503, "every worker is busy and the queue is full; try again", [("Retry-After", "1")])


def _reject_plain(stats: ServerStats, sock) -> bool:
    """503 without blocking the acceptor (a fresh socket's send buffer takes it whole)."""
    sock.set_timeout(0)
    response = busy_response()
    sock.send(response.head(VERSION, False) + response.body)
    stats.response(503)
    sock.shutdown(Shutdown.WRITE)
    return True  # linger: read what the client sends until it closes
