"""The checks of ``http:`` and ``https:`` --serve options, run when the command line is
read (standard library only, so ``mnet --help`` stays light): a clear error
before the stack starts for a missing directory, a bad number, a certificate
or key that cannot be read or does not load."""
from __future__ import annotations

import os
import ssl

from mnet.services.errors import ServiceSpecError

HTTP_KEYS = ("root", "workers", "queue", "timeout")
HTTPS_KEYS = ("cert", "key", *HTTP_KEYS, "sha1_signatures")
DEFAULT_WORKERS = 8
DEFAULT_QUEUE = 32
DEFAULT_TIMEOUT = 10.0


def _bad(svc, message: str) -> ServiceSpecError:
    return ServiceSpecError(f"bad --serve {svc.label}: {message}")


def _int(svc, key: str, default: int, low: int, high: int) -> int:
    text = svc.option(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise _bad(svc, f"{key}= must be a whole number in {low}..{high}, got {text!r}")
    return value


def workers(svc) -> int:
    return _int(svc, "workers", DEFAULT_WORKERS, 1, 256)


def queue_size(svc) -> int:
    return _int(svc, "queue", DEFAULT_QUEUE, 1, 4096)


def timeout(svc) -> float:
    text = svc.option("timeout")
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise _bad(svc, f"timeout= must be seconds in (0, 3600], got {text!r}")
    return value


def check_http(svc) -> None:
    workers(svc), queue_size(svc), timeout(svc)
    root = svc.option("root")
    if root is None:
        return
    if not os.path.isdir(root):
        raise _bad(svc, f"root={root} is not a directory" if os.path.exists(root) else f"root={root} does not exist")
    if not os.access(root, os.R_OK | os.X_OK):
        raise _bad(svc, f"root={root} cannot be read")


def sha1_signatures(svc) -> bool:
    """``sha1_signatures=yes``: serve TLS 1.2 clients that offer no signature algorithms (busybox wget)."""
    text = svc.option("sha1_signatures", "no")
    if text not in ("yes", "no"):
        raise _bad(svc, f"sha1_signatures= must be yes or no, got {text!r}")
    return text == "yes"


def check_https(svc) -> None:
    check_http(svc)
    sha1_signatures(svc)
    cert, key = svc.option("cert"), svc.option("key")
    for name, path in (("cert", cert), ("key", key)):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise _bad(svc, f"{name}={path} cannot be read" if os.path.exists(path) else f"{name}={path} does not exist")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        detail = f" ({exc.reason})" if exc.reason else ""
        raise _bad(svc, f"cert={cert} and key={key} do not load as a PEM certificate and its key{detail}") from None
