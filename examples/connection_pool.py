"""Connection pool: reuse TCP connections across requests and threads (stack.ConnectionPool).

What it shows: ConnectionPool(max_per_host=2) shared by six threads making
requests to one echo server: connections are opened once and handed out
again (get_connection/return_connection, here through `with
pool.connection(addr)`), never more than two at a time, never one to two
threads; a request that finds a reused connection dead is retried once on a
new one. Then the server closes its idle connections (as servers with a
keep-alive timeout do): the pool's liveness check notices, drops them and
opens new ones, and the caller never gets a dead connection. stats() counts
all of it.

Run it:
    python examples/connection_pool.py
        in-process lab: the peer stack runs an echo server that closes connections idle for 1 s
    python examples/connection_pool.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 [--port 7]
        against a real echo server
"""
from __future__ import annotations

import threading
import time

import _lab
from echo_server import listening_socket
from stack import ConnectionPool, IpAddress, Socket

IDLE_CLOSE = 1.0  # seconds after which the lab's server closes a quiet connection
THREADS, REQUESTS = 6, 3


class ClosingEcho:
    """The lab's server: echo, and close a connection that stays quiet for IDLE_CLOSE seconds."""

    def __init__(self, listener: Socket) -> None:
        self.open = 0  # connections accepted and not closed yet
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, args=(listener,), daemon=True).start()

    def serve(self, listener: Socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: Socket) -> None:
        with conn:
            conn.set_timeout(IDLE_CLOSE)
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass  # quiet for too long (TimeoutError), or the lab is closing
        with self.lock:
            self.open -= 1

    def wait_until_all_closed(self, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while self.open and time.monotonic() < deadline:
            time.sleep(0.05)


def request(pool: ConnectionPool, server: IpAddress, text: str) -> str:
    """One request-reply on a pooled connection; retried once on a new connection if it dies."""
    for attempt in (1, 2):
        with pool.connection(server) as sock:
            sock.set_timeout(5.0)
            try:
                sock.sendall(text.encode())
                reply = sock.recv(4096)
                if reply:
                    return reply.decode()
            except (ConnectionResetError, BrokenPipeError):
                pass
            sock.close()  # dead after all (the server closed it just now): returned closed, not kept
    raise ConnectionError(f"{server} did not answer {text!r}")


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="an echo server (default: the in-process peer)")
    p.add_argument("--port", type=int, default=7, help="its port (default 7)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        server = IpAddress(lab.server_ip(args.server), args.port)
        if lab.local:
            listener = listening_socket(args.port, stack=lab.peer)
            server_side = ClosingEcho(listener)
        with ConnectionPool(max_per_host=2, idle_timeout=60.0, connect_timeout=5.0) as pool:
            def worker(n: int) -> None:
                for i in range(REQUESTS):
                    assert request(pool, server, f"request {n}.{i}") == f"request {n}.{i}"

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            s = pool.stats()
            print(f"{THREADS * REQUESTS} requests from {THREADS} threads: {s.opened} connections opened, "
                  f"{s.reused} reuses, {s.idle} idle now")
            if lab.local:
                server_side.wait_until_all_closed()  # its idle timeout closes the pool's idle connections
                time.sleep(0.1)  # (their FINs are on the way)
                print(f"after the server closed its idle connections: {request(pool, server, 'hello again')!r}")
                after = pool.stats()
                print(f"the pool opened a new connection: {after.opened > s.opened}; "
                      f"dead connections dropped: {after.dead}")
        if lab.local:
            listener.close()
    print("connection pool: done")


if __name__ == "__main__":
    _lab.run(main)
