"""`mnet stack --serve lb:...` as users run it, in front of two kernel HTTP
servers, against the same client straight to a backend and through socat,
in one run.

`mnet switch` and `mnet stack` run as processes: the switch's vhost-user port
for the stack (10.0.0.9, `--serve lb:8080,backend=10.0.0.254:8001,
backend=10.0.0.254:8002`, round robin) and its TAP port into a namespace this
program creates (the kernel, 10.0.0.254). In the namespace: two
http_kernel_server.py backends (http.server's ThreadingHTTPServer speaking
HTTP/1.1) on ports 8001 and 8002 serving one directory with a small file
(--small-bytes) and a large one (--large-mbytes), socat relaying port 8090
to the backend on 8001 (a process per connection, TCP_NODELAY; socat does
not balance), and wrk as the client. Cases, each for --seconds with
--connections connections:

  direct  wrk -> a backend (the anchor; kernel only, over the namespace's loopback)
  socat   wrk -> socat -> a backend (a kernel relay, in the namespace)
  lb      wrk -> TAP -> switch -> the stack's balancer -> switch -> TAP -> a backend
each with the small file (requests/s) and the large one (MB/s), with
keep-alive (the relayed connections are reused) and with a connection per
request (each one is a new relayed connection: the balancer's connect path).
Every round runs each case once; each line has the median over the rounds,
the anchor's and their ratio, with wrk's latency and error counts. Root only
(namespaces, TAP); needs wrk, curl and socat.

    .venv/bin/python scripts/bench/lb_relay.py [--seconds 3] [--rounds 1] [--connections 8]
"""
from __future__ import annotations

import sys
from pathlib import Path

from http_lab import HOST_IP, STACK_IP, UserPath, bench_main

BACKENDS = (8001, 8002)
SOCAT_PORT, LB_PORT = 8090, 8080


def start(path: UserPath, root: Path, args) -> dict[str, tuple[str, str]]:
    for port in BACKENDS:
        path.start_kernel_server(port, root)
    path.start_socat(SOCAT_PORT, BACKENDS[0])
    path.start_stack(f"lb:{LB_PORT}" + "".join(f",backend={HOST_IP}:{port}" for port in BACKENDS))
    return {"direct": (f"http://{HOST_IP}:{BACKENDS[0]}", "a kernel backend (http.server, threaded, HTTP/1.1)"),
            "socat": (f"http://{HOST_IP}:{SOCAT_PORT}", "socat (a process per connection, TCP_NODELAY) -> a kernel backend"),
            "lb": (f"http://{STACK_IP}:{LB_PORT}", "mnet stack --serve lb (round robin, 2 kernel backends) "
                                                   "behind mnet switch")}


if __name__ == "__main__":
    sys.exit(bench_main("lb_relay.py", __doc__, ("socat",), start, anchor="direct"))
