"""An HTTP/1.1 server on the stack's STREAM sockets (docs/http.md).

`parser` (sans-IO: bytes in, requests or an `HttpError` out), `response`
(status lines, headers, bodies), `content_types`, `files` (a directory served
without path traversal), `routes` (fixed pages when no directory is given),
`handler` (a request to a response: methods, keep-alive), `connection` (one
connection: reads with deadlines, pipelining, the access log), `pool` (the
acceptor and a bounded pool of worker threads), `options` (the --serve
options' checks, standard library only) and `service` (the --serve starters).
"""
