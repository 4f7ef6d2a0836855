"""The services a MultiOS stack runs for `mnet stack --serve` and the demo.

`spec` (what a service is, its ``kind:PORT`` spelling), `source_stream`
(tcp-source's documented bytes), `service_loop` (one thread's event loop
over a service's non-blocking sockets), `udp_echo` (its handler),
`tcp_handlers` (what each TCP service does with one connection, as a
non-blocking state machine), `tcp_accept` (the listener's handler),
`runner` (open a service's socket and start its loop's thread),
`connection_table` (the TCP table as printed), `errors`.

Import the modules themselves: `spec` and `source_stream` need only the
standard library, so `mnet --help` can describe the services without
loading the stack.
"""
