"""One request to its response: the method (GET and HEAD, 405 with Allow for the other
methods HTTP defines, 501 for the rest), then the site's answer for the target."""
from __future__ import annotations

from .parser import HttpError, Request
from .paths import parse_target
from .response import Response, error_response

ALLOW = "GET, HEAD"
SERVED = ("GET", "HEAD")
KNOWN = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def respond(request: Request, site) -> Response:
    """The response to ``request`` (the same one for HEAD as for GET: the connection
    leaves the body out). ``site`` has ``get(Target) -> Response``."""
    if request.method not in SERVED:
        if request.method in KNOWN:
            return error_response(405, f"{request.method} is not allowed here", [("Allow", ALLOW)])
        return error_response(501, f"{request.method} is not a method this server knows")
    try:
        target = parse_target(request.target)
    except HttpError as exc:
        return error_response(exc.status, exc.message)
    return site.get(target)
