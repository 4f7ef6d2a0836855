"""What each TCP service does with one accepted connection; each returns its report line."""
from __future__ import annotations

import hashlib

from stack import Shutdown

from .source_stream import SOURCE_CHUNK, source_chunks
from .spec import Service

DRAIN_TIMEOUT = 30.0  # tcp-source: how long to wait for the peer to close after our FIN


def tcp_echo(conn, svc: Service) -> str:
    total = 0
    while data := conn.recv(SOURCE_CHUNK):
        conn.sendall(data)
        total += len(data)
    return f"echoed {total} bytes"


def tcp_discard(conn, svc: Service) -> str:
    digest = hashlib.sha256()
    total = 0
    try:
        while data := conn.recv(SOURCE_CHUNK):
            digest.update(data)
            total += len(data)
    except OSError as exc:
        return f"received {total} bytes, then error: {exc.strerror or exc}"
    return f"received {total} bytes sha256 {digest.hexdigest()}"


def tcp_source(conn, svc: Service) -> str:
    digest = hashlib.sha256()
    for chunk in source_chunks(svc.size):
        conn.sendall(chunk)
        digest.update(chunk)
    conn.shutdown(Shutdown.WRITE)  # the FIN follows the data
    # Wait for the peer to close (reading what it sends), so our close is not a reset.
    conn.set_timeout(DRAIN_TIMEOUT)
    try:
        while conn.recv(SOURCE_CHUNK):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    return f"sent {svc.size} bytes sha256 {digest.hexdigest()}"


HANDLERS = {"tcp-echo": tcp_echo, "tcp-discard": tcp_discard, "tcp-source": tcp_source}
