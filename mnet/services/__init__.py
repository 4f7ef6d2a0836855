"""The services a MultiOS stack runs for `mnet stack --serve` and the demo.

`spec` (what a service is, its ``kind:PORT`` spelling), `source_stream`
(tcp-source's documented bytes), `udp_echo`, `tcp_handlers` (what each TCP
service does with one connection), `tcp_accept` (a listener serving each
connection on a thread), `runner` (open a service's socket and start its
thread), `connection_table` (the TCP table as printed), `errors`.

Import the modules themselves: `spec` and `source_stream` need only the
standard library, so `mnet --help` can describe the services without
loading the stack.
"""
