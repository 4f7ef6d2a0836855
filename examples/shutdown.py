"""Shutdown (half-close): send everything, say "no more" with shutdown(WRITE), and still read the answer.

What it shows: a client that sends its request in pieces and then calls
shutdown(Shutdown.WRITE): TCP sends a FIN after the data, the server's recv
returns b"" (the end of the request), yet the connection stays open the
other way, so the server's reply still arrives. A send after the shutdown
fails with BrokenPipeError (EPIPE); shutdown(READ) makes recv return b"".

Run it:
    python examples/shutdown.py
        in-process lab: the peer stack runs a server that counts bytes until end of stream
    python examples/shutdown.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 [--port 9000]
        against a server that answers after the client's end of stream (for example
        `socat TCP-LISTEN:9000,fork SYSTEM:'wc -c'`)
"""
from __future__ import annotations

import errno
import threading

import _lab
from echo_server import listening_socket
from stack import IpAddress, Shutdown, Socket, SocketType


def count_until_end(listener: Socket) -> None:
    """The lab's server: read to the end of the stream, then say how much came, then close."""
    conn, peer = listener.accept()
    with conn:
        total = 0
        while data := conn.recv(4096):
            total += len(data)
        print(f"server: end of stream from {peer} after {total} bytes; answering", flush=True)
        conn.sendall(f"{total}\n".encode())


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="the server (default: the in-process peer)")
    p.add_argument("--port", type=int, default=9000, help="its port (default 9000)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        server = IpAddress(lab.server_ip(args.server), args.port)
        if lab.local:
            listener = listening_socket(args.port, stack=lab.peer)
            threading.Thread(target=count_until_end, args=(listener,), daemon=True).start()
        with Socket(SocketType.STREAM) as s:
            s.set_timeout(5.0)
            s.connect(server)
            for piece in (b"first part, ", b"second part, ", b"and the last part"):
                s.sendall(piece)
            s.shutdown(Shutdown.WRITE)  # FIN: the request is complete
            print("client: shut down for writing")
            try:
                s.send(b"too late")
            except BrokenPipeError as exc:
                print(f"client: a send after shutdown(WRITE) fails: {errno.errorcode[exc.errno]}")
            reply = b""
            while chunk := s.recv(100):  # the other direction is still open
                reply += chunk
            print(f"client: the server says {reply.decode().strip()} bytes arrived")
            s.shutdown(Shutdown.READ)
            print(f"client: after shutdown(READ) recv returns {s.recv(100)!r}")
        if lab.local:
            listener.close()
    print("shutdown: done")


if __name__ == "__main__":
    _lab.run(main)
