"""One client's connection through the load balancer: connect it to a backend, then relay.

A :class:`Session` asks the balancer for a backend and connects to it
(non-blocking, bounded by the connect timeout); when that fails it tells the
balancer, which marks the backend down, and tries the next backend that is
up, so a dead backend costs the client nothing. With no backend left the
client's connection is reset.

Once connected, bytes go both ways through two :class:`Pipe`\\ s of at most
PIPE_LIMIT bytes each: a socket is read only while its pipe has room, so a
slow reader slows the writer on the other side (TCP's own flow control)
instead of filling memory. End of stream is passed on as it comes (a FIN
from one side becomes shutdown(WRITE) on the other, after the data before
it); an error or reset on either side resets the other.

With ``idle=S`` a relayed connection that moved no byte either way for S
seconds is closed on both sides: with a FIN when nothing is waiting in its
pipes, with a reset when bytes are stuck there (they would be lost).
"""
from __future__ import annotations

import errno

from stack import PollEvent, Shutdown, SocketOption

from mnet.services.service_loop import STACK_GONE

PIPE_LIMIT = 64 * 1024   # bytes buffered per direction per connection
MOVES_PER_WAKEUP = 16    # bound one connection's turn, so the others get theirs


class Pipe:
    """One direction of a relayed connection: bytes read from one side, not yet written to the other."""

    def __init__(self, limit: int = PIPE_LIMIT) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.eof = False    # the reading side ended its stream
        self.shut = False   # ... and that end was passed on (shutdown(WRITE) on the other side)
        self.moved = 0      # bytes written to the other side

    @property
    def room(self) -> int:
        return self.limit - len(self.buf)


class End:
    """One socket of a session, as the service loop sees it."""

    def __init__(self, session: "Session", sock, name: str) -> None:
        self.session, self.sock, self.name = session, sock, name
        self.open = True

    def on_ready(self, events: PollEvent) -> None:
        self.session.on_ready(self, events)

    def on_timer(self) -> None:
        self.session.on_timer(self)


class Broken(Exception):
    """A socket call failed for good: the session ends with a reset."""

    def __init__(self, end: End, exc: OSError) -> None:
        super().__init__(end.name, exc)
        self.end, self.exc = end, exc


def describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


class Session:
    """One client connection: connecting to a backend (the next one if that fails), then relaying."""

    def __init__(self, lb, sock, peer) -> None:
        self.lb, self.loop = lb, lb.loop   # (the service.LoadBalancer it belongs to)
        self.client = End(self, sock, "client")
        self.peer = peer
        self.backend: End | None = None
        self.index: int | None = None     # the backend's number in the balancer
        self.tried: set[int] = set()
        self.relaying = False
        self.up, self.down = Pipe(), Pipe()   # client -> backend, backend -> client
        self.last_moved = 0.0                 # when a byte (or an end of stream) last moved, relaying
        self.idle_due = float("inf")          # when the idle timer set last is due

    @property
    def name(self) -> str:
        where = self.lb.balancer.backends[self.index].address if self.index is not None else "?"
        return f"{self.lb.label} {self.peer} -> {where}"

    # -- connecting ------------------------------------------------------------------------------
    def start(self) -> None:
        self.lb.sessions.add(self)
        self._dial()

    def _dial(self) -> None:
        while True:
            index = self.lb.balancer.choose(self.tried)
            if index is None:
                self._refuse()
                return
            self.tried.add(index)
            self.lb.balancer.opening(index)
            try:
                sock = self.lb.connect(index)
            except OSError as exc:  # (no route, out of ports): this backend cannot be reached now
                self.lb.announce(self.lb.balancer.connect_failed(index, describe(exc) + " (connecting a client)"))
                continue
            self.index = index
            self.backend = End(self, sock, "backend")
            self.loop.add(self.backend, PollEvent.WRITE)
            self.loop.call_at(self.loop.clock.now() + self.lb.options.timeout, self.backend)
            return

    def _dialed(self, events: PollEvent) -> None:
        err = self.backend.sock.take_error()
        if err is None and PollEvent.WRITE in events and PollEvent.HANGUP not in events:
            self._start_relay()
        else:
            self._redial(describe(err) if err is not None else "connection closed")

    def _redial(self, reason: str) -> None:
        """The attempt on the current backend failed: mark it down, try the next one."""
        self.loop.remove(self.backend)
        index, self.backend, self.index = self.index, None, None
        self.lb.announce(self.lb.balancer.connect_failed(index, reason + " (connecting a client)"))
        self._dial()

    def _refuse(self) -> None:
        """No backend is up: reset the client's connection (it sees an error, not an empty answer)."""
        self.lb.sessions.discard(self)
        self._close(self.client, reset=True)
        self.loop.report(f"{self.lb.label} {self.peer}: no backend is up, connection reset")

    def _start_relay(self) -> None:
        self.relaying = True
        self.lb.balancer.connected(self.index)
        self.lb.relayed(self)
        self.loop.report(f"{self.name} relaying")
        self.loop.add(self.client, PollEvent.READ)
        self.last_moved = self.loop.clock.now()
        if self.lb.options.idle is not None:
            self._set_idle_timer(self.last_moved + self.lb.options.idle)
        self._step()

    # -- the loop's calls ------------------------------------------------------------------------
    def on_ready(self, end: End, events: PollEvent) -> None:
        if not self.relaying:
            self._dialed(events)
            return
        if PollEvent.ERROR in events:
            err = end.sock.take_error()
            if err is not None:
                self._broken(Broken(end, err))
                return
        self._step()

    def on_timer(self, end: End) -> None:
        if not self.relaying:
            if end is self.backend:
                self._redial(f"no answer within {self.lb.options.timeout:g} s")
        elif self.lb.options.idle is not None:
            self._idle_timer()

    # -- the idle timeout ------------------------------------------------------------------------
    def _set_idle_timer(self, when: float) -> None:
        """One idle timer at a time, on an end the loop still holds (it only calls those)."""
        self.idle_due = when
        end = self.client if self.client.open else self.backend
        self.loop.call_at(when, end)

    def _idle_timer(self) -> None:
        now = self.loop.clock.now()
        if now < self.idle_due:
            return  # an earlier timer of this session (its connect timeout): the idle one is still to come
        deadline = self.last_moved + self.lb.options.idle
        if now < deadline:
            self._set_idle_timer(deadline)  # something moved since: wait from then
            return
        self.lb.idle_closed += 1
        stuck = len(self.up.buf) + len(self.down.buf)
        self._end(f"closed: idle for {self.lb.options.idle:g} s, {self.up.moved} bytes to the backend, "
                  f"{self.down.moved} back" + (f", {stuck} stuck (reset)" if stuck else ""), reset=bool(stuck))

    # -- relaying --------------------------------------------------------------------------------
    def _step(self) -> None:
        moved = False
        try:
            for _ in range(MOVES_PER_WAKEUP):
                moved_up = self._move(self.up, self.client, self.backend)
                moved_down = self._move(self.down, self.backend, self.client)
                if not (moved_up or moved_down):
                    break
                moved = True
        except Broken as broken:
            self._broken(broken)
            return
        if moved:
            self.last_moved = self.loop.clock.now()
        self._settle(self.client, self.up, self.down)
        self._settle(self.backend, self.down, self.up)
        if not (self.client.open or self.backend.open):
            self._end(f"closed: {self.up.moved} bytes to the backend, {self.down.moved} back")

    def _move(self, pipe: Pipe, src: End, dst: End) -> bool:
        """Move what can move now from ``src`` through ``pipe`` to ``dst``; whether anything did."""
        moved = False
        if not pipe.eof and pipe.room:
            data = _call(src, src.sock.recv, pipe.room)
            if data is not None:
                pipe.eof = not data
                pipe.buf += data
                moved = True
        if pipe.buf:
            n = _call(dst, dst.sock.send, pipe.buf)
            if n:
                del pipe.buf[:n]
                pipe.moved += n
                moved = True
        if pipe.eof and not pipe.buf and not pipe.shut:
            _call(dst, dst.sock.shutdown, Shutdown.WRITE)  # the FIN after the data, as it came
            pipe.shut = True
            moved = True
        return moved

    def _settle(self, end: End, inbound: Pipe, outbound: Pipe) -> None:
        """Close ``end`` once its stream and ours to it have both ended; otherwise wait for what it can do.

        With nothing to do now (its pipe is full, nothing to write to it) it is not
        watched at all, so a hang-up cannot wake the loop again and again."""
        if not end.open:
            return
        if inbound.eof and outbound.shut:
            self.loop.remove(end)
            end.open = False
            return
        wanted = PollEvent.NONE
        if not inbound.eof and inbound.room:
            wanted |= PollEvent.READ
        if outbound.buf:
            wanted |= PollEvent.WRITE
        self.loop.want(end, wanted)

    def _broken(self, broken: Broken) -> None:
        if broken.exc.errno in STACK_GONE:
            self._end(None)  # the stack is stopping
            return
        if broken.exc.errno == errno.ECONNRESET:
            self._end(f"reset by the {broken.end.name}", reset=True)
        else:
            self._end(f"{broken.end.name} error: {describe(broken.exc)}", reset=True)

    def backend_down(self) -> None:
        """The backend was marked down: this connection ends too, with a reset both ways."""
        self._end("reset: the backend is down", reset=True)

    def _end(self, line: str | None, reset: bool = False) -> None:
        for end in (self.client, self.backend):
            self._close(end, reset)
        self.lb.balancer.closed(self.index, self.up.moved, self.down.moved)
        self.lb.ended(self)
        if line is not None:
            self.loop.report(f"{self.name} {line}")

    def _close(self, end: End, reset: bool) -> None:
        if not end.open:
            return
        end.open = False
        if reset:
            try:
                end.sock.set_option(SocketOption.LINGER, 0)  # close() then sends a reset
            except OSError:
                pass  # closed already: nothing to reset
        if end.sock in self.loop.handlers:
            self.loop.remove(end)
        else:
            end.sock.close()

    def close(self) -> None:
        """The service is stopping: close what the loop does not hold (a client waiting for its backend)."""
        self._close(self.client, reset=True)


def _call(end: End, method, arg):
    """``method(arg)`` on ``end``'s socket: its result, None if it would block; Broken if it failed."""
    try:
        return method(arg)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise Broken(end, exc) from None
