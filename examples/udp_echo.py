"""UDP echo: a datagram server and a client that sends datagrams and waits for each one back.

What it shows: DATAGRAM sockets: bind() and recv_from()/send_to() on the
server (one datagram in, the same one out, to whoever sent it), and on the
client a connect()ed socket (send/recv, only the server's replies accepted),
a receive timeout, and a retry, because UDP may lose a datagram and nobody
resends it for you.

Run it:
    python examples/udp_echo.py
        in-process lab: the server runs on the peer stack
    python examples/udp_echo.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 [--port 7]
        against a real UDP echo server (`mnet stack --serve udp-echo:7`, `socat UDP-LISTEN:7,fork EXEC:cat`)
"""
from __future__ import annotations

import threading

import _lab
from stack import IpAddress, Socket, SocketType

ATTEMPTS = 3


def serve(sock: Socket) -> None:
    """Echo datagrams until the socket is closed."""
    while True:
        try:
            data, sender = sock.recv_from(65535)
        except OSError:
            return  # closed
        sock.send_to(data, sender)
        print(f"udp server: {len(data)} bytes from {sender} sent back", flush=True)


def ask(sock: Socket, message: bytes) -> bytes:
    """Send ``message`` and wait for its echo, trying ATTEMPTS times."""
    for attempt in range(1, ATTEMPTS + 1):
        sock.send(message)
        try:
            while True:
                reply = sock.recv(65535)
                if reply == message:
                    return reply
                # an echo of an earlier attempt that came late: keep waiting for this one
        except TimeoutError:
            print(f"no answer to attempt {attempt}, trying again")
    raise TimeoutError(f"no echo of {message!r} after {ATTEMPTS} attempts")


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="the UDP echo server (default: the in-process peer)")
    p.add_argument("--port", type=int, default=7, help="its port (default 7)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        server = IpAddress(lab.server_ip(args.server), args.port)
        if lab.local:
            server_sock = Socket(SocketType.DATAGRAM, stack=lab.peer)
            server_sock.bind(IpAddress.any(args.port))
            threading.Thread(target=serve, args=(server_sock,), daemon=True).start()
        with Socket(SocketType.DATAGRAM) as s:
            s.set_timeout(1.0)
            s.connect(server)  # a fixed peer: datagrams from anyone else are not delivered
            for i, size in enumerate((5, 1400, 8000), 1):  # 8000 bytes: sent as IP fragments
                message = bytes([i]) * size
                reply = ask(s, message)
                print(f"datagram {i}: {size} bytes sent, {len(reply)} bytes echoed by {server}")
        if lab.local:
            server_sock.close()
    print("udp echo: done")


if __name__ == "__main__":
    _lab.run(main)
