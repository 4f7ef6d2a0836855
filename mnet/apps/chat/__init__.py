"""The multi-client chat server (`--serve chat:PORT`), line-based so plain `nc` is a client.

`lines` cuts a client's bytes into lines (limits, CRLF, bad UTF-8), `room`
is the chat itself, sans-IO (lines in from a client, messages out to
clients), `options` reads ``chat:PORT[,key=value]``, and `server` runs the
room on the service's event loop over the stack's non-blocking sockets.
"""
