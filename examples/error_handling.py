"""Error handling: what each network failure looks like, as errno-style OSErrors.

What it shows: every failure is an OSError subclass with .errno set, as
POSIX sockets give it: a connection refused (ECONNREFUSED: a RST answers the
SYN), a timeout (ETIMEDOUT: the socket's own timeout runs out, on connect to
a host that never answers and on a recv with nothing coming), a connection
reset by the peer (ECONNRESET, then EPIPE for sends), and using a closed
socket (EBADF). Each is caught by its Python class or by its errno.

Run it:
    python examples/error_handling.py
        in-process lab: the peer stack refuses, stays silent, and resets as asked
    python examples/error_handling.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 \\
            [--closed-port 9] [--silent-ip 10.0.0.77]
        on a real network (the reset case needs the in-process peer and is left out)
"""
from __future__ import annotations

import errno
import threading

import _lab
from echo_server import listening_socket
from stack import IpAddress, Socket, SocketOption, SocketType


def report(case: str, exc: OSError) -> None:
    print(f"{case}: {type(exc).__name__} errno={errno.errorcode[exc.errno]} ({exc.strerror or exc})")


def refused(address: IpAddress) -> None:
    with Socket(SocketType.STREAM) as s:
        try:
            s.connect(address)
        except ConnectionRefusedError as exc:
            report(f"connect to closed port {address}", exc)


def connect_timeout(address: IpAddress) -> None:
    with Socket(SocketType.STREAM) as s:
        s.set_timeout(0.5)
        try:
            s.connect(address)
        except TimeoutError as exc:
            report(f"connect to silent {address} with a 0.5 s timeout", exc)


def recv_timeout(address: IpAddress) -> None:
    with Socket(SocketType.STREAM) as s:
        s.set_timeout(2.0)
        s.connect(address)
        s.set_timeout(0.3)
        try:
            s.recv(100)  # the server sends nothing
        except OSError as exc:
            if exc.errno != errno.ETIMEDOUT:  # the errno says what happened, whatever the class
                raise
            report("recv with nothing coming, 0.3 s timeout", exc)


def reset_by_peer(address: IpAddress) -> None:
    with Socket(SocketType.STREAM) as s:
        s.set_timeout(5.0)
        s.connect(address)
        try:
            s.recv(100)
        except ConnectionResetError as exc:
            report("recv after the peer reset the connection", exc)
        try:
            s.send(b"anyone there?")
        except BrokenPipeError as exc:
            report("send on the reset connection", exc)


def closed_socket() -> None:
    s = Socket(SocketType.DATAGRAM)
    s.close()
    try:
        s.send_to(b"x", IpAddress("10.0.0.2", 7))
    except OSError as exc:
        report("send on a closed socket", exc)


def lab_peer(peer) -> tuple[Socket, Socket]:
    """The peer's two listeners: port 13 accepts and stays silent, port 14 accepts and resets."""
    silent, resetting = listening_socket(13, stack=peer), listening_socket(14, stack=peer)
    resetting.set_option(SocketOption.LINGER, 0)  # inherited: close() sends a RST

    def serve(listener: Socket, reset: bool) -> None:
        held = []
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            if reset:
                conn.close()
            else:
                held.append(conn)  # open and silent until the listener closes
        for conn in held:
            conn.close()

    threading.Thread(target=serve, args=(silent, False), daemon=True).start()
    threading.Thread(target=serve, args=(resetting, True), daemon=True).start()
    return silent, resetting


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="a host that answers (default: the in-process peer)")
    p.add_argument("--closed-port", type=int, default=9, help="a port of it nobody listens on (default 9)")
    p.add_argument("--silent-ip", default="10.0.0.77", help="an address nobody has (default 10.0.0.77)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        host = lab.server_ip(args.server)
        refused(IpAddress(host, args.closed_port))
        connect_timeout(IpAddress(args.silent_ip, 80))
        if lab.local:
            listeners = lab_peer(lab.peer)
            recv_timeout(IpAddress(host, 13))
            reset_by_peer(IpAddress(host, 14))
            for listener in listeners:
                listener.close()
        closed_socket()
    print("error handling: done")


if __name__ == "__main__":
    _lab.run(main)
