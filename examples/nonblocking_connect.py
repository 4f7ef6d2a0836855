"""Non-blocking connect with poll: start several connections at once and wait for them together.

What it shows: set_nonblocking(True); connect() raising BlockingIOError
(EINPROGRESS) at once; stack.poll() waiting for WRITE on all the sockets (its
timeout in milliseconds, as poll(2)); take_error() saying how each attempt
ended (None: connected, or the error: here ECONNREFUSED from a closed port);
then a non-blocking send and a poll for READ before the recv.

Run it:
    python examples/nonblocking_connect.py
        in-process lab: the peer stack listens on port 7 (an echo server); port 9 is closed
    python examples/nonblocking_connect.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 \\
            [--port 7] [--closed-port 9]
"""
from __future__ import annotations

import errno

import _lab
from echo_server import start_echo_server
from stack import IpAddress, PollEvent, Socket, SocketType, poll

WAIT_MS = 5000


def start(address: IpAddress) -> Socket:
    sock = Socket(SocketType.STREAM)
    sock.set_nonblocking(True)
    try:
        sock.connect(address)
    except BlockingIOError as exc:
        print(f"connect to {address}: {errno.errorcode[exc.errno]} (returned at once, the handshake goes on)")
    return sock


def wait_for_all(socks: dict[Socket, IpAddress]) -> list[Socket]:
    """Poll until every attempt has ended; the connected sockets."""
    pending, connected = dict(socks), []
    while pending:
        ready = poll(list(pending), PollEvent.WRITE, WAIT_MS)
        if not ready:
            raise TimeoutError(f"no answer within {WAIT_MS} ms from {list(pending.values())}")
        for sock, events in ready:
            address = pending.pop(sock)
            error = sock.take_error()  # None: connected; otherwise why it failed (like SO_ERROR)
            if error is None:
                print(f"{address}: connected ({events})")
                connected.append(sock)
            else:
                print(f"{address}: failed with {errno.errorcode[error.errno]} ({type(error).__name__})")
                sock.close()
    return connected


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="a host with an echo server (default: the in-process peer)")
    p.add_argument("--port", type=int, default=7, help="its open port (default 7)")
    p.add_argument("--closed-port", type=int, default=9, help="a port nobody listens on (default 9)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        host = lab.server_ip(args.server)
        peer_listener = start_echo_server(args.port, stack=lab.peer) if lab.local else None
        targets = [IpAddress(host, args.port), IpAddress(host, args.port), IpAddress(host, args.closed_port)]
        connected = wait_for_all({start(a): a for a in targets})
        for i, sock in enumerate(connected):
            with sock:
                poll([sock], PollEvent.WRITE, WAIT_MS)  # room in the send buffer
                sock.send(f"ping {i}".encode())
                if not poll([sock], PollEvent.READ, WAIT_MS):  # wait for the echo, then read without blocking
                    raise TimeoutError("no echo")
                print(f"echo {i}: {sock.recv(100)!r}")
        if peer_listener is not None:
            peer_listener.close()
    print(f"non-blocking connect: {len(connected)} of {len(targets)} connected")


if __name__ == "__main__":
    _lab.run(main)
