"""TCP echo server: bind, listen, accept, and send every byte back, one thread per client.

What it shows: the server half of the guide's echo example: a STREAM socket
bound to a port (REUSE_ADDR set first), listen(), an accept() loop, and a
handler per connection that reads until the client's end of stream (recv
returns b"") and sendall()s what it read; `with` closes each socket.

Run it:
    python examples/echo_server.py
        in-process lab: the server runs on our stack; the peer stack connects
        three clients that each send a line and print the echo
    python examples/echo_server.py --nic vhost-user:/tmp/s.sock --ip 10.0.0.9/24 [--port 7]
        on a real network, until Ctrl-C (try `echo hello | nc -q1 10.0.0.9 7`)
"""
from __future__ import annotations

import threading

import _lab
from stack import IpAddress, Shutdown, Socket, SocketOption, SocketType


def handle(conn: Socket, peer: IpAddress) -> None:
    """Echo one client until it closes its side."""
    total = 0
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
                total += len(data)
        except OSError as exc:  # a reset, or the stack stopping: this connection ends, not the server
            print(f"echo server: {peer}: {type(exc).__name__}: {exc}", flush=True)
            return
    print(f"echo server: {peer} closed, {total} bytes echoed", flush=True)


def listening_socket(port: int, stack=None) -> Socket:
    listener = Socket(SocketType.STREAM, stack=stack)  # stack=None: the default stack
    listener.set_option(SocketOption.REUSE_ADDR, True)  # restart at once, even over TIME-WAIT
    listener.bind(IpAddress.any(port))
    listener.listen(16)
    return listener


def serve(listener: Socket, connections: int | None = None) -> None:
    """Accept clients, each on its own thread; stop after ``connections`` (None: until closed)."""
    threads = []
    while connections is None or len(threads) < connections:
        try:
            conn, peer = listener.accept()
        except OSError:
            break  # the listener was closed
        t = threading.Thread(target=handle, args=(conn, peer), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def start_echo_server(port: int, stack=None) -> Socket:
    """An echo server on a thread (the other examples' peer); closing the listener stops it."""
    listener = listening_socket(port, stack)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    return listener


def three_clients(peer_stack, server: IpAddress) -> None:
    """The in-process lab's clients, on the peer stack."""
    for i in range(1, 4):
        with Socket(SocketType.STREAM, stack=peer_stack) as s:
            s.set_timeout(5.0)
            s.connect(server)
            s.sendall(f"hello {i}".encode())
            s.shutdown(Shutdown.WRITE)  # no more to send: the server's recv gets b""
            print(f"client {i} got {s.recv(100)!r}", flush=True)


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--port", type=int, default=7, help="the port to serve (default 7)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        with listening_socket(args.port) as listener:
            print(f"echo server: listening on {lab.our_ip}:{args.port}", flush=True)
            if not lab.local:
                serve(listener)  # until Ctrl-C
                return
            here = IpAddress(lab.our_ip, args.port)
            clients = threading.Thread(target=three_clients, args=(lab.peer, here))
            clients.start()
            serve(listener, connections=3)
            clients.join()
    print("echo server: done")


if __name__ == "__main__":
    _lab.run(main)
