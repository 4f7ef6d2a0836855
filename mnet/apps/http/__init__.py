"""An HTTP/1.1 server on the stack's STREAM sockets (docs/http.md).

`parser` (sans-IO: bytes in, requests or an `HttpError` out), `chunked` (a
chunked body decoded as it streams), `limits` (what a request may hold, and
`HttpError`), `paths` (a request target to a safe path), `response` (status
lines, headers, bodies), `content_types`, `files` (a directory served without
path traversal), `routes` (fixed pages when no directory is given), `handler`
(a request to a response: methods), `connection` (one connection: reads with
deadlines, pipelining, keep-alive, the access log), `pool` (the acceptor and a
bounded pool of worker threads), `stats` (the server's counters), `options`
(the --serve options' checks, standard library only) and `service` (the
--serve starters).
"""
