"""chat on one service loop: each connection a non-blocking handler, the Room between them.

Nothing waits on a client: a line for a client goes into its output queue
and out as fast as its socket takes it. A client that stops reading fills
its socket's send buffer, then its queue; past OUTPUT_LIMIT bytes queued it
is dropped (a reset) and the others are told ``* nick left (not reading)``.
"""
from __future__ import annotations

import errno
import threading
from itertools import count
from typing import Callable

from stack import PollEvent, SocketOption

from mnet.services.runner import open_service
from mnet.services.service_loop import STACK_GONE, ServiceLoop
from mnet.services.spec import Service
from mnet.services.tcp_accept import AcceptHandler

from .lines import OVERLONG, LineReader
from .options import chat_options
from .room import Event, Hangup, Room, Send

OUTPUT_LIMIT = 65536   # bytes queued for one client beyond its socket's send buffer
HANGUP_TIMEOUT = 10.0  # seconds a client told goodbye has to take its last lines
NICKNAME_TIMEOUT = 60.0  # seconds a new client has to send an accepted nickname
READ_SIZE = 4096
READS_PER_WAKEUP = 16  # bound one client's turn, so the others get theirs


def start(stack, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> threading.Thread:
    """The application starter (mnet/services/applications.py): chat's listener and its loop's thread."""
    sock = open_service(stack, svc)
    t = threading.Thread(target=serve, args=(stack, sock, svc, stopping, report), name=svc.label, daemon=True)
    t.start()
    return t


def serve(stack, sock, svc: Service, stopping: threading.Event, report: Callable[[str], None]) -> None:
    """Serve the chat on ``sock`` (listening, non-blocking) until ``stopping`` is set or the stack goes."""
    options = chat_options(svc)
    loop = ServiceLoop(report, stack.clock)
    server = ChatServer(loop, svc, Room(options.max_clients, options.max_line))
    with sock:
        try:
            AcceptHandler(loop, sock, svc, make=server.connection).start()
        except OSError as exc:
            if exc.errno in STACK_GONE:
                return
            raise
        loop.run(stopping)


class ChatServer:
    """The room and the connections of its clients, on one loop."""

    def __init__(self, loop: ServiceLoop, svc: Service, room: Room) -> None:
        self.loop, self.svc, self.room = loop, svc, room
        self.conns: dict[int, ChatConnection] = {}
        self._ids = count(1)

    def connection(self, loop: ServiceLoop, sock, peer, svc: Service) -> "ChatConnection":
        """AcceptHandler's factory: an accepted connection becomes a client.

        Its lines go out at once (TCP_NODELAY): with Nagle, a line for a client
        that only listens would wait for its delayed ACK of the line before."""
        sock.set_option(SocketOption.TCP_NO_DELAY, True)
        return ChatConnection(self, next(self._ids), sock, peer)

    def opened(self, conn: "ChatConnection") -> None:
        self.conns[conn.client] = conn
        self.loop.add(conn, PollEvent.READ)
        self.loop.call_at(conn.nickname_due, conn)
        self.apply(self.room.connect(conn.client))

    def received(self, conn: "ChatConnection", item) -> None:
        """One line (or OVERLONG) from ``conn``'s client through the room."""
        before = self.room.nick(conn.client)
        self.apply(self.room.overlong(conn.client) if item is OVERLONG else self.room.line(conn.client, item))
        after = self.room.nick(conn.client)
        if after != before:
            what = f"left as {before}" if after is None else f"joined as {after}" if before is None else f"is now {after}"
            self.report(conn, what)

    def apply(self, events: list[Event]) -> None:
        """Carry out the room's events: queue each line, then flush every client they touched.
        A client that turns out gone or not reading leaves, which makes more events."""
        while events:
            touched: dict[int, ChatConnection] = {}
            for event in events:
                conn = self.conns.get(event.to)
                if conn is None:
                    continue
                if isinstance(event, Send):
                    conn.queue(event.text)
                elif isinstance(event, Hangup):
                    conn.hang_up()
                touched[conn.client] = conn
            events = []
            for conn in touched.values():
                if self.conns.get(conn.client) is conn:
                    events += conn.flush()

    def leave(self, conn: "ChatConnection", reason: str | None, abort: bool) -> list[Event]:
        """``conn``'s client leaves the room now; its socket is closed (reset when ``abort``)."""
        nick = self.room.nick(conn.client)
        if nick is not None:
            self.report(conn, f"left as {nick}" + (f" ({reason})" if reason else ""))
        events = self.room.leave(conn.client, reason)
        if abort:
            self.close(conn, abort=True)
        return events

    def close(self, conn: "ChatConnection", abort: bool = False) -> None:
        if self.conns.pop(conn.client, None) is None:
            return
        if abort:
            try:
                conn.sock.set_option(SocketOption.LINGER, 0)  # close() resets: the queued lines are worthless
            except OSError:
                pass  # the connection is gone already
        self.loop.remove(conn)

    def report(self, conn: "ChatConnection", what: str) -> None:
        self.loop.report(f"{self.svc.label} {conn.peer} {what}")


class ChatConnection:
    """One client's socket: its bytes in as lines, its queued lines out."""

    def __init__(self, server: ChatServer, client: int, sock, peer) -> None:
        self.server, self.client, self.sock, self.peer = server, client, sock, peer
        self.reader = LineReader(server.room.max_line)
        self.out = bytearray()
        self.hanging_up = False  # told goodbye: send what is queued, then close
        self.eof = False  # the client sent its FIN (it may still read)
        self.nickname_due = server.loop.clock.now() + NICKNAME_TIMEOUT
        self.hangup_due = float("inf")  # set when it is told goodbye

    @property
    def open(self) -> bool:
        return self.server.conns.get(self.client) is self

    def start(self) -> None:
        self.server.opened(self)

    def on_ready(self, events: PollEvent) -> None:
        self._read()
        if self.open:
            self.server.apply(self.flush())

    def on_timer(self) -> None:
        now = self.server.loop.clock.now()
        if now >= self.hangup_due:
            self.server.report(self, f"reset: its last lines not taken within {HANGUP_TIMEOUT:g} s")
            self.server.close(self, abort=True)
        elif now >= self.nickname_due and not self.hanging_up:
            events = self.server.room.nickname_deadline(self.client, NICKNAME_TIMEOUT)
            if events:
                self.server.report(self, "sent no nickname in time")
            self.server.apply(events)

    def queue(self, text: str) -> None:
        self.out += text.encode() + b"\n"

    def hang_up(self) -> None:
        if not self.hanging_up:
            self.hanging_up = True
            self.hangup_due = self.server.loop.clock.now() + HANGUP_TIMEOUT
            self.server.loop.call_at(self.hangup_due, self)

    def flush(self) -> list[Event]:
        """Hand queued bytes to the socket; the room's events if that ended the client."""
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                break
            except OSError as exc:
                return self.server.leave(self, _reason(exc), abort=True)
            del self.out[:n]
        if len(self.out) > OUTPUT_LIMIT:
            return self.server.leave(self, "not reading", abort=True)
        if self.hanging_up and not self.out:
            self.server.close(self)  # a graceful close: the FIN follows the last line
        else:
            wanted = PollEvent.NONE if self.eof else PollEvent.READ  # (at EOF it would always be ready)
            if self.out:
                wanted |= PollEvent.WRITE
            self.server.loop.want(self, wanted)
        return []

    def _read(self) -> None:
        if self.eof:
            return
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.server.apply(self.server.leave(self, _reason(exc), abort=True))
                return
            if not data:
                self._end_of_stream()
                return
            if self.hanging_up:
                continue  # read and dropped, so our close is not turned into a reset
            for item in self.reader.feed(data):
                self.server.received(self, item)
                if self.hanging_up or not self.open:
                    break
            if not self.open:
                return

    def _end_of_stream(self) -> None:
        self.eof = True
        if not self.hanging_up:
            for item in self.reader.finish():
                self.server.received(self, item)
                if self.hanging_up or not self.open:
                    break
        if self.open:
            self.server.apply(self.server.leave(self, None, abort=False))
            self.hang_up()  # what is still queued for it goes out, then our FIN


def _reason(exc: OSError) -> str | None:
    """Why a connection ended, for the others' ``* nick left (...)`` (None: the stack is stopping)."""
    if exc.errno in STACK_GONE:
        return None
    if exc.errno == errno.ECONNRESET:
        return "connection reset"
    return (exc.strerror or str(exc)).lower()
