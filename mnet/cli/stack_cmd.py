"""`mnet stack`: run a MultiOS stack with services until interrupted."""
from __future__ import annotations

import argparse
import signal
import threading

from mnet.services.errors import ServiceError, ServiceSpecError
from mnet.services.source_stream import SOURCE_CHUNK, SOURCE_SEED
from mnet.services.spec import SERVICE_FORMS, Service, parse_service

from .errors import CliError
from .stack_common import add_stack_arguments, format_counters, open_stack

DESCRIPTION = f"""\
Run the MultiOS network stack as a host on the virtual network. Its NIC is a
virtio-net device it drives itself through a vhost-user socket (a `mnet switch`
vhost-user port, or DPDK's net_vhost). Services (repeatable --serve):

  udp-echo:PORT              send every datagram back to its sender
  tcp-echo:PORT              send every byte of a TCP connection back
  tcp-discard:PORT           read and drop; when a connection ends, print
                             how many bytes came and their SHA-256
  tcp-source:PORT,bytes=N    send N pseudo-random bytes to each connection,
                             then close it; prints their SHA-256
  lb:PORT,backend=IP:PORT[,backend=IP:PORT...][,policy=round-robin|least-conn]
     [,check=SECONDS][,timeout=SECONDS][,rise=N][,fall=N][,idle=SECONDS]
                             a TCP load balancer: each connection is relayed
                             to a backend taken in turn (round-robin, the
                             default) or with the fewest connections
                             (least-conn); a backend whose connection attempt
                             fails, or whose health checks (a connect every
                             check= seconds, default 1) fail fall= times in a
                             row, is down, and skipped, until rise= checks
                             pass in a row (both default 1); idle= closes a
                             relayed connection that moved no byte for that
                             long (default: never) (docs/loadbalancer.md)
  http:PORT[,root=DIR][,workers=N][,queue=N][,timeout=S]
                             an HTTP/1.1 server (GET, HEAD, keep-alive) on
                             a pool of N worker threads (default 8): the
                             files under DIR, or without root= a page at /
                             and the counters as JSON at /status; one
                             access-log line per request (docs/http.md)
  https:PORT,cert=FILE,key=FILE[,root=DIR][,workers=N][,sha1_signatures=yes]
                             the same over TLS 1.2/1.3 (PEM certificate
                             chain and key); sha1_signatures=yes also
                             serves TLS 1.2 clients that offer no
                             signature algorithms, e.g. busybox wget
  chat:PORT[,max_clients=N][,max_line=BYTES]
                             a line-based chat room (plain `nc` is a client):
                             the first line is the nickname, then each line
                             goes to the others (docs/chat.md)
  udp-file:PORT,dir=DIR      receive files sent with `mnet transfer send`
                             over UDP, reliably (acknowledged, resent,
                             SHA-256 checked) into DIR (docs/filetransfer.md)

tcp-source's bytes are the same for every connection, so anyone can check
them: in Python, `r = random.Random({SOURCE_SEED})` and the stream is
`r.randbytes({SOURCE_CHUNK})` called again and again, concatenated and cut to N.
Each service runs one event loop on one thread, however many connections it
serves at once, and a connection takes no descriptor; `mnet stack` still
raises its descriptor limit to the hard limit.

--trace FILE records the driver's side of the NIC's rings from the start
(set-up included) as JSON lines (docs/tracing.md): chains added, used entries
reaped, index moves, kicks, interrupts, drops, vhost-user messages.

--control PATH is the stack's control socket, where `mnet monitor` reads
its tables (interface, ARP cache, routes, sockets, NIC rings: docs/monitor.md);
by default stack-PID.sock in $XDG_RUNTIME_DIR/mnet (without it /run/mnet for
root, /tmp/mnet-UID for others); 'off': none.

The stack answers ARP and ping, and TCP connections to other ports get a
reset. SIGUSR1 prints the TCP connection table (like `ss -ti`: state,
queues, addresses, cwnd, srtt, retransmits) and each load balancer's
backends (state, connections, failures, bytes). Runs until SIGINT/SIGTERM,
then prints the connection table and its counters and exits 0 (1 if the
stack's thread failed).
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_stack_arguments(p)
    p.add_argument("--serve", action="append", default=[], metavar="SERVICE:PORT",
                   help="a service to run (repeatable): " + SERVICE_FORMS)
    p.add_argument("--trace", metavar="FILE",
                   help="record the NIC driver's ring events to FILE (JSON lines)")
    p.add_argument("--control", metavar="PATH",
                   help="the control socket for `mnet monitor` (default stack-PID.sock in the default "
                        "control directory; 'off': none)")


def parse_services(texts: list[str]) -> list[Service]:
    try:
        return [parse_service(text) for text in texts]
    except ServiceSpecError as exc:
        raise CliError(str(exc)) from None


def open_trace(path: str | None):
    """The --trace file's writer (None without the option)."""
    if path is None:
        return None
    from nicdev.virtio.trace import JsonLinesWriter

    try:
        return JsonLinesWriter(path)
    except OSError as exc:
        raise CliError(f"bad --trace: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    from mnet.apps.monitor.server import StackControlServer
    from mnet.services.connection_table import connection_table
    from mnet.services.runner import start_service

    services = parse_services(args.serve)
    trace = open_trace(args.trace)
    try:
        stack, nic = open_stack(args, trace_sink=trace)
    except BaseException:
        if trace is not None:
            trace.close()
        raise
    stopping = threading.Event()
    wake = threading.Event()
    flags = {"done": False, "table": False}
    print_lock = threading.Lock()

    def report(line: str) -> None:
        with print_lock:
            print(line, flush=True)

    def on_signal(signum, frame) -> None:
        flags["table" if signum == signal.SIGUSR1 else "done"] = True
        wake.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    threads = []
    status = 0
    control = None
    try:
        if args.control != "off":
            control = StackControlServer(stack, args.control).start()
            report(f"control socket {control.path}")
        for svc in services:
            try:
                threads.append(start_service(stack, svc, stopping, report))
            except ServiceError as exc:
                raise CliError(str(exc), status=1) from None
            report(f"serving {svc.kind} on port {svc.port}" + (f" ({svc.size} bytes)" if svc.kind == "tcp-source" else "") + "".join(f" {k}={v}" for k, v in svc.options))
        report(f"stack up: {args.ip} mac {nic.mac} on {args.nic}; Ctrl-C to stop")
        while not flags["done"]:
            wake.wait(0.5)
            wake.clear()
            if flags["table"]:
                flags["table"] = False
                report(connection_table(stack))
                for t in threads:
                    if hasattr(t, "status"):
                        report(t.status())  # (an application's own table: the load balancer's backends)
            if stack.failure is not None:
                report(f"stack stopped: {stack.failure}")
                status = 1
                break
    finally:
        stopping.set()
        if control is not None:
            control.close()
        report(connection_table(stack))
        stack.stop()
        for t in threads:
            t.join(2)
        report("counters:\n" + format_counters(stack.counters()))
        nic.close()
        if trace is not None:
            trace.close()
            report(f"trace: {trace.records} records in {trace.path}")
    return status
