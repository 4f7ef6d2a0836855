"""Socket options: set_option/get_option on DATAGRAM and STREAM sockets, and their errors.

What it shows: the guide's options (REUSE_ADDR, BROADCAST, buffer sizes,
TTL, TOS, TCP_NO_DELAY, keepalive and its timers, LINGER, the congestion
control), read back with get_option; a listener's options inherited by the
connections it accepts; the errno-style errors for a bad value (EINVAL) and
for an option the socket type does not have (ENOPROTOOPT); SO_ERROR-like
ERROR.

Run it:
    python examples/socket_options.py
        in-process lab: a connection to the peer stack shows the inherited options
    python examples/socket_options.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24
        on a real NIC (no peer needed: the options are set on our own sockets)
"""
from __future__ import annotations

import errno

import _lab
from stack import IpAddress, Socket, SocketOption, SocketType

UDP_OPTIONS = {SocketOption.BROADCAST: True, SocketOption.RECEIVE_BUFFER_SIZE: 1 << 18,
               SocketOption.TTL: 16, SocketOption.TOS: 0x10}
TCP_OPTIONS = {SocketOption.REUSE_ADDR: True, SocketOption.TCP_NO_DELAY: True,
               SocketOption.SEND_BUFFER_SIZE: 1 << 19, SocketOption.KEEP_ALIVE: True,
               SocketOption.KEEP_IDLE: 30.0, SocketOption.KEEP_INTERVAL: 5.0, SocketOption.KEEP_COUNT: 4,
               SocketOption.LINGER: 2.0, SocketOption.CONGESTION: "newreno"}


def set_and_show(sock: Socket, options: dict) -> None:
    for option, value in options.items():
        before = sock.get_option(option)
        sock.set_option(option, value)
        print(f"{sock.type.name:8} {option.name:20} {before!r:>10} -> {sock.get_option(option)!r}")


def show_error(what: str, call) -> None:
    try:
        call()
    except OSError as exc:
        print(f"{what}: {type(exc).__name__} {errno.errorcode[exc.errno]}")
    else:
        print(f"{what}: accepted?")


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--port", type=int, default=5000, help="the port of the lab's listener (default 5000)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        with Socket(SocketType.DATAGRAM) as udp, Socket(SocketType.STREAM) as tcp:
            set_and_show(udp, UDP_OPTIONS)
            set_and_show(tcp, TCP_OPTIONS)
            show_error("TTL 0", lambda: udp.set_option(SocketOption.TTL, 0))
            show_error("a negative buffer size", lambda: tcp.set_option(SocketOption.SEND_BUFFER_SIZE, -1))
            show_error("TCP_NO_DELAY on a DATAGRAM socket", lambda: udp.set_option(SocketOption.TCP_NO_DELAY, True))
            show_error("an unknown congestion control", lambda: tcp.set_option(SocketOption.CONGESTION, "bbr9"))
            print(f"pending error (ERROR, like SO_ERROR): {tcp.get_option(SocketOption.ERROR)}")
            if lab.local:
                tcp.bind(IpAddress.any(args.port))
                tcp.listen()
                with Socket(SocketType.STREAM, stack=lab.peer) as client:
                    client.connect(IpAddress(lab.our_ip, args.port))
                    conn, _ = tcp.accept()
                    with conn:
                        inherited = {o.name: conn.get_option(o) for o in (SocketOption.TCP_NO_DELAY,
                                     SocketOption.KEEP_ALIVE, SocketOption.KEEP_IDLE, SocketOption.CONGESTION)}
                        print(f"accepted connection inherits {inherited}")
                        print(f"its congestion control in tcp_info: {conn.tcp_info().congestion}")
    print("socket options: done")


if __name__ == "__main__":
    _lab.run(main)
