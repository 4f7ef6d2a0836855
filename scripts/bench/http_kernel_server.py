"""The kernel's HTTP server of http_serve.py and lb_relay.py: Python's own
threaded server (http.server's ThreadingHTTPServer and SimpleHTTPRequestHandler,
as `python3 -m http.server` runs them) on the kernel's sockets, serving a
directory over HTTP/1.1 with keep-alive.

Three changes from `python3 -m http.server`, so it is a fair anchor rather than
a crippled one: it speaks HTTP/1.1 (the module's default, HTTP/1.0, closes
every connection); it sets TCP_NODELAY (the handler's own switch for it),
since it writes the headers and the body separately and Nagle's algorithm
would hold the body for the client's delayed ACK, 40 ms a request on a
reused connection; and it listens with a backlog of --backlog (the module's
5 drops handshakes once a few clients reconnect at once). Its access log goes
to stderr, one line per request, as the stack's server writes one.
Prints "ready" once it listens.

    ip netns exec NS .venv/bin/python scripts/bench/http_kernel_server.py --bind IP --port N --directory DIR
"""
from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out in separate writes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="0.0.0.0", help="the address to listen on (default all)")
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on (default 8000)")
    parser.add_argument("--directory", default=".", help="the directory to serve (default the current one)")
    parser.add_argument("--backlog", type=int, default=128, help="the listen backlog (default 128)")
    args = parser.parse_args()

    class Server(ThreadingHTTPServer):
        request_queue_size = args.backlog

    try:
        server = Server((args.bind, args.port), functools.partial(Handler, directory=args.directory))
    except OSError as exc:
        print(f"http_kernel_server.py: cannot listen on {args.bind}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
