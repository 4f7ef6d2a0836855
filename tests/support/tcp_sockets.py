"""Helpers shared by the socket tests (test_socket_*.py, test_stack_clock.py): a listener,
a connected pair, a TCP frame parser for impairment hooks, a blocking call on its
own thread timed on a stack's clock (the bounded wait is support.waiting's), and
closing_sockets, with which a fixture closes every socket its test opened.
Not a test module; each test module keeps its own fixtures (their configs differ)."""
from __future__ import annotations

import contextlib
import threading

from stack import IpAddress, SocketOption, SocketType
from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr
from stack.wire.tcp import TcpRepr

WAIT = 5.0  # generous bound for anything that should take milliseconds
WAIT_MS = int(WAIT * 1000)  # the same for poll() and Poller.poll(), which take milliseconds


def listener(st, port=7, backlog=8, **options):
    """A STREAM socket listening on `port` of stack `st`; options by SocketOption name."""
    s = st.socket(SocketType.STREAM)
    for opt, value in options.items():
        s.set_option(SocketOption[opt], value)
    s.bind(IpAddress.any(port))
    s.listen(backlog)
    s.set_timeout(WAIT)
    return s


def connected_pair(a, b, port=7, **options):
    """(client on a, server-side socket on b, listener on b); options go to the listener."""
    lst = listener(b, port, **options)
    client = a.socket(SocketType.STREAM)
    client.set_timeout(WAIT)
    client.connect(("10.0.0.2", port))
    server, _ = lst.accept()
    server.set_timeout(WAIT)
    return client, server, lst


@contextlib.contextmanager
def closing_sockets(*stacks):
    """Hold every socket the stacks open while inside (accepted ones and throwaway ones too)
    and close them, newest first, on the way out.

    For a fixture around its test: the test's locals go when it returns, before the fixture
    stops the stacks, and a stack socket collected open warns (an error in the unit suite).
    """
    held = []
    for st in stacks:
        def register(sock, _register=st.register):
            _register(sock)
            held.append(sock)
        st.register = register  # an instance attribute, over Stack.register
    try:
        yield held
    finally:
        for st in stacks:
            del st.register
        for sock in reversed(held):
            sock.close()


def tcp_of(frame: bytes):
    """(Ipv4Repr, TcpRepr, payload) of a TCP frame, or None."""
    eth, payload = EthernetRepr.parse(frame)
    if eth.ethertype != EtherType.IPV4:
        return None
    ip, data = Ipv4Repr.parse(payload)
    if ip.protocol != IpProtocol.TCP:
        return None
    seg, body = TcpRepr.parse(data, ip.src, ip.dst)
    return ip, seg, bytes(body)


class Call:
    """``fn()`` on its own thread: what it returned (``result``) or raised (``error``), and
    ``ended_at``, the clock's time when it ended (a VirtualClock's, in the tests that use one)."""

    def __init__(self, clock, fn):
        self.clock, self.result, self.error, self.ended_at = clock, None, None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except Exception as exc:
            self.error = exc
        self.ended_at = self.clock.now()

    def done(self, timeout=WAIT) -> bool:
        """Wait (real time, up to ``timeout``) for the call to end; has it?"""
        self.thread.join(timeout)
        return not self.thread.is_alive()
