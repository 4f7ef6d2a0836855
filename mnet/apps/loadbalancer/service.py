"""`--serve lb:PORT,...`: the load balancer's listener, health checks and sessions on one event loop."""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Callable

from stack import PollEvent, SocketOption, SocketType

from mnet.services.runner import open_service
from mnet.services.service_loop import STACK_GONE, ServiceLoop
from mnet.services.spec import Service
from mnet.services.tcp_accept import AcceptHandler

from .balancer import Balancer, Change
from .options import lb_options
from .relay import Session, describe

log = logging.getLogger(__name__)


class LoadBalancer:
    """One ``lb`` service: its options, its balancer, its loop and the sessions it relays."""

    def __init__(self, stack, svc: Service, report: Callable[[str], None]) -> None:
        self.stack, self.svc = stack, svc
        self.label = svc.label
        self.options = lb_options(svc)
        self.loop = ServiceLoop(report, stack.clock)
        self.balancer = Balancer([str(a) for a in self.options.backends], self.options.policy,
                                 self.options.check, stack.clock.now(), self.options.rise, self.options.fall)
        self.sessions: set[Session] = set()                          # every client connection it holds
        self.relays: dict[int, set[Session]] = defaultdict(set)      # those relayed, by backend
        self.idle_closed = 0                                         # relayed connections ended by idle=

    def connect(self, index: int):
        """A non-blocking connection attempt to backend ``index`` (OSError if it cannot even start)."""
        sock = self.stack.socket(SocketType.STREAM)
        sock.set_nonblocking(True)
        sock.set_option(SocketOption.TCP_NO_DELAY, True)  # a relay passes bytes on as they come: no Nagle
        try:
            sock.connect(self.options.backends[index])
        except BlockingIOError:
            pass  # EINPROGRESS: the socket becomes writable when the attempt ends
        except OSError:
            sock.close()
            raise
        return sock

    def announce(self, change: Change | None) -> None:
        """Report a backend going up or down; one going down takes its relayed connections with it."""
        if change is None:
            return
        self.loop.report(f"{self.label} {change}")
        if not change.up:
            for session in list(self.relays[change.index]):
                session.backend_down()

    def relayed(self, session: Session) -> None:
        self.relays[session.index].add(session)

    def ended(self, session: Session) -> None:
        self.relays[session.index].discard(session)
        self.sessions.discard(session)

    def status(self) -> str:
        """The backends' table (state, connections, failures, bytes): SIGUSR1 and the exit print it."""
        lines = [f"{self.label} backends ({self.balancer.policy}):"]
        lines += ["  " + r for r in self.balancer.table().splitlines()]
        if self.options.idle is not None:
            lines.append(f"  closed after {self.options.idle:g} s idle: {self.idle_closed}")
        return "\n".join(lines)

    def serve(self, listener, stopping: threading.Event) -> None:
        """Accept, check and relay until ``stopping`` is set or the stack goes down; then the table."""
        with listener:
            try:
                Listener(self, listener).start()
            except OSError as exc:
                if exc.errno in STACK_GONE:
                    return
                raise
            try:
                self.loop.run(stopping)
            finally:
                for session in list(self.sessions):
                    session.close()
                self.loop.report(self.status())


class Listener(AcceptHandler):
    """The service's listening socket, accepting as every TCP service does; its timer runs the health checks."""

    def __init__(self, lb: LoadBalancer, sock) -> None:
        super().__init__(lb.loop, sock, lb.svc, make=self.session)
        self.lb = lb

    def session(self, loop, conn, peer, svc: Service) -> Session:
        """An accepted client's session; its socket, like the backend's, sends without Nagle's wait
        (what the client's side of the relay gets to send is whatever the backend sent, as it came)."""
        conn.set_option(SocketOption.TCP_NO_DELAY, True)
        return Session(self.lb, conn, peer)

    def start(self) -> None:
        super().start()
        self.loop.call_at(self.loop.clock.now(), self)  # the first checks at once

    def on_timer(self) -> None:
        now = self.lb.loop.clock.now()
        for index in self.lb.balancer.checks_due(now):
            HealthCheck(self.lb, index).start()
        due = self.lb.balancer.next_check_at()
        self.lb.loop.call_at(due if due is not None else now + self.lb.options.check, self)


class HealthCheck:
    """One health check: can a TCP connection to the backend be opened within the timeout?"""

    def __init__(self, lb: LoadBalancer, index: int) -> None:
        self.lb, self.index = lb, index
        self.sock = None

    def start(self) -> None:
        try:
            self.sock = self.lb.connect(self.index)
        except OSError as exc:
            self._done(describe(exc))
            return
        self.lb.loop.add(self, PollEvent.WRITE)
        self.lb.loop.call_at(self.lb.loop.clock.now() + self.lb.options.timeout, self)

    def on_ready(self, events: PollEvent) -> None:
        err = self.sock.take_error()
        if err is None and PollEvent.WRITE in events and PollEvent.HANGUP not in events:
            self._done(None)
        else:
            self._done(describe(err) if err is not None else "connection closed")

    def on_timer(self) -> None:
        self._done(f"no answer within {self.lb.options.timeout:g} s")

    def _done(self, failure: str | None) -> None:
        if self.sock is not None:
            self.lb.loop.remove(self)  # a graceful close: the backend sees a connection that said nothing
        balancer = self.lb.balancer
        self.lb.announce(balancer.check_passed(self.index) if failure is None
                         else balancer.check_failed(self.index, failure + " (health check)"))


def start(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    """applications.STARTERS' entry: listen on the service's port and run the balancer on a thread.

    The thread's ``status()`` gives the backends' table (`mnet stack` prints it on SIGUSR1)."""
    lb = LoadBalancer(stack, svc, report)
    listener = open_service(stack, svc)
    thread = threading.Thread(target=lb.serve, args=(listener, stopping), name=svc.label, daemon=True)
    thread.status = lb.status
    thread.start()
    return thread
