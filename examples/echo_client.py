"""TCP echo client: connect to an echo server, send lines, read each one back.

What it shows: the client half of the guide's echo example: connect() with a
timeout, sendall(), a recv() loop that collects a whole reply (TCP is a byte
stream: one send can arrive in several recvs), shutdown(WRITE) to say "no
more", and the server's end of stream (recv returns b"").

Run it:
    python examples/echo_client.py
        in-process lab: the echo server of examples/echo_server.py runs on the peer stack
    python examples/echo_client.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 [--port 7]
        against a real echo server (the kernel's, a guest's, `mnet stack --serve tcp-echo:7`)
"""
from __future__ import annotations

import _lab
from echo_server import start_echo_server
from stack import IpAddress, Shutdown, Socket, SocketType


def recv_exactly(sock: Socket, n: int) -> bytes:
    """``n`` bytes, however many recv() calls that takes."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {len(data)} of {n} bytes")
        data += chunk
    return data


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="the echo server (default: the in-process peer)")
    p.add_argument("--port", type=int, default=7, help="its port (default 7)")
    p.add_argument("lines", nargs="*", default=["hello", "MultiOS", "echo"], help="lines to send")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        server = IpAddress(lab.server_ip(args.server), args.port)
        peer_listener = start_echo_server(args.port, stack=lab.peer) if lab.local else None
        with Socket(SocketType.STREAM) as s:
            s.set_timeout(5.0)  # connect and every recv give up after 5 s (TimeoutError)
            s.connect(server)
            print(f"connected {s.local_address()} -> {s.peer_address()}")
            for line in args.lines:
                message = line.encode() + b"\n"
                s.sendall(message)
                reply = recv_exactly(s, len(message))
                print(f"sent {line!r}, got back {reply.decode().rstrip()!r}")
            s.shutdown(Shutdown.WRITE)
            print("end of stream from the server" if s.recv(100) == b"" else "the server sent more")
        if peer_listener is not None:
            peer_listener.close()
    print(f"echo client: {len(args.lines)} lines echoed by {server}")


if __name__ == "__main__":
    _lab.run(main)
