"""udp-echo: send every datagram back to its sender."""
from __future__ import annotations

import errno
import logging
import threading
from typing import Callable

from .spec import Service

log = logging.getLogger(__name__)


def udp_echo(sock, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> None:
    """Echo every datagram on `sock` until `stopping` is set or the stack goes down."""
    with sock:
        while not stopping.is_set():
            try:
                data, peer = sock.recv_from(65535)
                sock.send_to(data, peer)
            except TimeoutError:
                continue
            except OSError as exc:
                if stopping.is_set() or exc.errno in (errno.EBADF, errno.ENETDOWN):
                    return
                # One peer's trouble (its ARP failed: EHOSTUNREACH) must not end the service.
                log.warning("%s: %s", svc.label, exc)
