"""A minimal HTTP/1.0 server, as the socket guide writes one: fixed pages, one thread per client.

What it shows: reading a request until the blank line that ends its headers
(a recv loop with a size limit), parsing the request line, answering with a
status line, Content-Type, Content-Length and Connection: close, then
closing. GET and HEAD are served; other methods get 501, unknown paths 404,
a request line that cannot be read 400. (The project's full HTTP server,
with keep-alive, a directory root and worker threads, is `mnet stack --serve
http:PORT`; this example is the guide's small one.)

Run it:
    python examples/http_server.py
        in-process lab: the server runs on our stack; the peer stack fetches a few URLs
    python examples/http_server.py --nic vhost-user:/tmp/s.sock --ip 10.0.0.9/24 [--port 8080]
        on a real network, until Ctrl-C (try `curl -v http://10.0.0.9:8080/`)
"""
from __future__ import annotations

import threading

import _lab
from echo_server import listening_socket
from stack import IpAddress, Socket, SocketType

MAX_REQUEST = 8192  # bytes of request line and headers we are willing to read
PAGES = {
    "/": ("text/html", b"<html><body><h1>Hello from the MultiOS stack</h1></body></html>\n"),
    "/hello.txt": ("text/plain", b"hello\n"),
}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 501: "Not Implemented"}


def read_request(conn: Socket) -> bytes | None:
    """The request's head (up to the blank line), or None if the client sent too much or nothing."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) + len(chunk) > MAX_REQUEST:
            return None
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def respond(head: bytes | None) -> tuple[int, str, bytes, bool]:
    """(status, content type, body, send the body?) for a request head."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split() if head else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return 400, "text/plain", b"bad request\n", True
    method, path, _ = parts
    if method not in ("GET", "HEAD"):
        return 501, "text/plain", b"not implemented\n", True
    if path not in PAGES:
        return 404, "text/plain", b"not found\n", method == "GET"
    content_type, body = PAGES[path]
    return 200, content_type, body, method == "GET"


def handle(conn: Socket, peer: IpAddress) -> None:
    with conn:
        conn.set_timeout(10.0)  # a client that sends nothing does not hold a thread forever
        try:
            head = read_request(conn)
        except OSError:  # a client that sent nothing for 10 s (TimeoutError), or reset
            return
        status, content_type, body, with_body = respond(head)
        conn.sendall(f"HTTP/1.0 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + (body if with_body else b""))
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1") if head else "?"
        print(f"http server: {peer} {request_line!r} -> {status}", flush=True)


def serve(listener: Socket) -> None:
    while True:
        try:
            conn, peer = listener.accept()
        except OSError:
            return  # closed
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def fetch(peer_stack, server: IpAddress, request: bytes) -> str:
    """What a browser would do, on the peer stack: send the request, read to the end."""
    with Socket(SocketType.STREAM, stack=peer_stack) as s:
        s.set_timeout(5.0)
        s.connect(server)
        s.sendall(request)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].decode()
    return f"{status_line} ({len(body)} bytes of body)"


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--port", type=int, default=8080, help="the port to serve (default 8080)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        with listening_socket(args.port) as listener:
            print(f"http server: http://{lab.our_ip}:{args.port}/", flush=True)
            if not lab.local:
                serve(listener)  # until Ctrl-C
                return
            threading.Thread(target=serve, args=(listener,), daemon=True).start()
            here = IpAddress(lab.our_ip, args.port)
            for request in (b"GET / HTTP/1.0\r\n\r\n", b"HEAD /hello.txt HTTP/1.0\r\n\r\n",
                            b"GET /missing HTTP/1.0\r\n\r\n", b"DELETE / HTTP/1.0\r\n\r\n", b"nonsense\r\n\r\n"):
                request_line = request.split(b"\r\n")[0].decode()
                print(f"client: {request_line!r} -> {fetch(lab.peer, here, request)}")
    print("http server: done")


if __name__ == "__main__":
    _lab.run(main)
