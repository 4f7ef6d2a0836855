"""The chat room, sans-IO: a client's lines in, the lines each client must get out.

A client is a number the server picks. Its first line is its nickname; once
that is accepted, each line it sends goes to every other client as
``<nick> text`` and the others see ``* nick joined`` / ``* nick left``.
Server lines start with ``*`` (notices) or ``!`` (errors). Commands:
/who, /nick NEW, /me ACTION, /quit [MESSAGE], /help; ``//text`` sends a
line that starts with ``/``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NICK_MAX = 16
NICK_RULE = f"1-{NICK_MAX} letters, digits, _ or -, starting with a letter"
_NICK = re.compile(rf"[A-Za-z][A-Za-z0-9_-]{{0,{NICK_MAX - 1}}}")
STRIKES = 3  # over-long lines in a row before the client is dropped

HELP = (
    "* /who: who is here",
    "* /nick NEW: change your nickname",
    "* /me ACTION: say what you do (* nick ACTION)",
    "* /quit [MESSAGE]: leave",
    "* //text: send a line that starts with /",
)


@dataclass(frozen=True)
class Send:
    """Send ``text`` (one line, without its end of line) to client ``to``."""

    to: int
    text: str


@dataclass(frozen=True)
class Hangup:
    """Close client ``to``'s connection once what was sent to it has gone out."""

    to: int


Event = Send | Hangup


@dataclass
class _Client:
    nick: str | None = None  # None until its first line gave an accepted nickname
    strikes: int = 0


class Room:
    """Who is connected under which nickname, and what each line they send makes happen."""

    def __init__(self, max_clients: int, max_line: int) -> None:
        self.max_clients = max_clients
        self.max_line = max_line
        self._clients: dict[int, _Client] = {}
        self._by_nick: dict[str, int] = {}  # nickname (case-folded) -> client

    def nick(self, client: int) -> str | None:
        entry = self._clients.get(client)
        return entry.nick if entry else None

    def nicks(self) -> list[str]:
        """The nicknames of the clients who joined, in the order they joined (or renamed)."""
        return [self._clients[c].nick for c in self._by_nick.values()]

    def __len__(self) -> int:
        return len(self._clients)

    # -- what the server tells the room -----------------------------------------------------------
    def connect(self, client: int) -> list[Event]:
        """A new connection: the welcome, or a refusal when the room is full."""
        if len(self._clients) >= self.max_clients:
            return [Send(client, f"! the chat is full ({self.max_clients} clients); try again later"),
                    Hangup(client)]
        self._clients[client] = _Client()
        return [Send(client, f"* welcome to the chat ({len(self._by_nick)} here). Send your nickname "
                             f"({NICK_RULE}) first; then each line you send goes to everyone. /help for commands")]

    def line(self, client: int, text: str) -> list[Event]:
        """One line from ``client`` (its end of line removed)."""
        entry = self._clients.get(client)
        if entry is None:
            return []
        entry.strikes = 0
        if entry.nick is None:
            return self._quit(client, text[5:].strip()) if _is_command(text, "/quit") else self._first_nick(client, text)
        if not text:
            return []
        if text.startswith("//"):
            return self._say(client, text[1:])
        if text.startswith("/"):
            return self._command(client, text)
        return self._say(client, text)

    def overlong(self, client: int) -> list[Event]:
        """``client`` sent a line over the limit: refused; STRIKES of them in a row drop it."""
        entry = self._clients.get(client)
        if entry is None:
            return []
        entry.strikes += 1
        if entry.strikes < STRIKES:
            return [Send(client, f"! line too long (over {self.max_line} bytes): not sent")]
        return [Send(client, f"! {STRIKES} over-long lines in a row: disconnecting"), Hangup(client),
                *self.leave(client, "too many over-long lines")]

    def nickname_deadline(self, client: int, seconds: float) -> list[Event]:
        """``seconds`` have passed since ``client`` connected: without a nickname by now, it goes
        (so connections that never say who they are cannot fill the room)."""
        entry = self._clients.get(client)
        if entry is None or entry.nick is not None:
            return []
        del self._clients[client]
        return [Send(client, f"! no nickname within {seconds:g} s: disconnecting"), Hangup(client)]

    def leave(self, client: int, reason: str | None = None) -> list[Event]:
        """``client`` is gone (it closed, its connection broke, the server dropped it)."""
        entry = self._clients.pop(client, None)
        if entry is None or entry.nick is None:
            return []
        del self._by_nick[entry.nick.casefold()]
        notice = f"* {entry.nick} left" + (f" ({reason})" if reason else "")
        return self._to_others(client, notice)

    # -- inside the room --------------------------------------------------------------------------
    def _first_nick(self, client: int, text: str) -> list[Event]:
        problem = self._nick_problem(client, text)
        if problem:
            return [Send(client, f"! {problem}; try again")]
        self._set_nick(client, text)
        others = [n for n in self.nicks() if n != text]
        here = f"here: {', '.join(others)}" if others else "nobody else is here yet"
        return [Send(client, f"* hello {text}; {here}"), *self._to_others(client, f"* {text} joined")]

    def _nick_problem(self, client: int, text: str) -> str | None:
        if not _NICK.fullmatch(text):
            return f"bad nickname {text[:NICK_MAX * 2]!r}: use {NICK_RULE}"
        holder = self._by_nick.get(text.casefold())
        if holder is not None and holder != client:
            return f"nickname {text} is taken"
        return None

    def _set_nick(self, client: int, nick: str) -> None:
        entry = self._clients[client]
        if entry.nick is not None:
            del self._by_nick[entry.nick.casefold()]
        entry.nick = nick
        self._by_nick[nick.casefold()] = client

    def _command(self, client: int, text: str) -> list[Event]:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name == "/who":
            names = self.nicks()
            return [Send(client, f"* here ({len(names)}): {', '.join(names)}")]
        if name == "/nick":
            return self._rename(client, arg)
        if name == "/me":
            if not arg:
                return [Send(client, "! usage: /me ACTION")]
            return self._to_others(client, f"* {self.nick(client)} {arg}")
        if name == "/quit":
            return self._quit(client, arg)
        if name == "/help":
            return [Send(client, line) for line in HELP]
        return [Send(client, f"! unknown command {name[:NICK_MAX * 2]}; /help lists the commands")]

    def _rename(self, client: int, new: str) -> list[Event]:
        if not new:
            return [Send(client, "! usage: /nick NEW")]
        problem = self._nick_problem(client, new)
        if problem:
            return [Send(client, f"! {problem}")]
        old = self.nick(client)
        self._set_nick(client, new)
        notice = f"* {old} is now known as {new}"
        return [Send(client, notice), *self._to_others(client, notice)]

    def _quit(self, client: int, message: str) -> list[Event]:
        return [Send(client, "* bye"), Hangup(client), *self.leave(client, message or None)]

    def _say(self, client: int, text: str) -> list[Event]:
        return self._to_others(client, f"<{self.nick(client)}> {text}")

    def _to_others(self, client: int, text: str) -> list[Event]:
        return [Send(other, text) for other in self._by_nick.values() if other != client]


def _is_command(text: str, name: str) -> bool:
    return text == name or text.startswith(name + " ")
