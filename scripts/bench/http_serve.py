"""`mnet stack --serve http:...` as users run it, against the kernel's own threaded
HTTP server with the same client and the same files, in one run.

`mnet switch` and `mnet stack` run as processes: the switch's vhost-user port
for the stack (10.0.0.9, `--serve http:80,root=DIR`) and its TAP port into a
namespace this program creates (the kernel, 10.0.0.254). In the namespace,
wrk is the client and http_kernel_server.py (http.server's ThreadingHTTPServer
speaking HTTP/1.1) the anchor, serving DIR on 10.0.0.254:8000; the anchor's
traffic stays in the namespace, the stack's crosses the TAP, the switch and
vhost-user. DIR holds a small file (--small-bytes) and a large one
(--large-mbytes). Cases, each for --seconds with --connections connections:

  kernel|stack small keep-alive   requests/s, connections reused
  kernel|stack small close        requests/s, a connection per request
  kernel|stack large keep-alive   MB/s
  kernel|stack large close        MB/s

Every round runs each kernel case and then its stack case; each line has the
median over the rounds, the kernel's (the anchor) and their ratio, with wrk's
latency and error counts. There is no in-process figure: the HTTP server is
an application of the `mnet` package, which benchmark programs do not import.
Root only (namespaces, TAP); needs wrk and curl.

    .venv/bin/python scripts/bench/http_serve.py [--seconds 3] [--rounds 1] [--connections 8]
"""
from __future__ import annotations

import sys
from pathlib import Path

from http_lab import HOST_IP, STACK_IP, UserPath, bench_main

KERNEL_PORT, STACK_PORT = 8000, 80
DEFAULT_WORKERS = 8   # the stack's http: default; more only when more connections are held open at once


def start(path: UserPath, root: Path, args) -> dict[str, tuple[str, str]]:
    spec = f"http:{STACK_PORT},root={root}"
    if args.connections > DEFAULT_WORKERS:
        spec += f",workers={args.connections}"
    path.start_kernel_server(KERNEL_PORT, root)
    path.start_stack(spec)
    return {"kernel": (f"http://{HOST_IP}:{KERNEL_PORT}", "http.server (threaded, HTTP/1.1) in the namespace"),
            "stack": (f"http://{STACK_IP}:{STACK_PORT}", f"mnet stack --serve {spec.replace(str(root), 'DIR')} "
                                                         "behind mnet switch")}


if __name__ == "__main__":
    sys.exit(bench_main("http_serve.py", __doc__, (), start, anchor="kernel"))
