"""One lookup as a sans-IO state machine: queries out, datagrams and timeouts in.

``Resolution(name, "A", servers).start(now)`` gives the first
:class:`Query` (which server, UDP or TCP, the bytes, until when to wait).
The caller sends it and hands back what comes: :meth:`Resolution.receive`
with a datagram (or a TCP message), :meth:`Resolution.timed_out` when the
deadline passes. Each returns the next :class:`Query` to send, an
:class:`Answer` (done), or None (the datagram was ignored: keep waiting);
failures raise a :class:`stack.dns.errors.DnsError`.

What it checks (RFC 5452): every query has a fresh random 16-bit id; an
answer must come from the server asked, carry that id, have QR set and
repeat the question (name, type, class). Anything else is ignored and
counted in :attr:`Resolution.ignored`, never accepted. A truncated UDP
answer (TC) is asked again over TCP; CNAME chains are followed, at most
``max_cnames`` links.

EDNS(0) (RFC 6891): every query carries an OPT record advertising
``edns_payload`` bytes (1232 by default, the DNS flag day 2020 size that
fits an IPv6 minimum MTU) unless it is None; a server answering FORMERR or
NOTIMP to a query with OPT is asked again without it (and from then on, in
this lookup). NXDOMAIN and NODATA errors carry the TTL a negative answer
may be cached for (RFC 2308 5), from the SOA record of the authority section.
"""
from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass

from stack.dns.errors import DnsError, DnsTimeout, MalformedMessage, NameNotFound, NoData, ServerFailure
from stack.dns.message import (CLASS_IN, Message, Rcode, RecordType, build_query, encode_name, parse_message,
                               rcode_name, read_header, read_questions, same_name, soa_minimum)

__all__ = ["Query", "Answer", "Resolution", "ADDRESS_TYPES", "EDNS_PAYLOAD", "tcp_frame", "TcpMessageReader"]

ADDRESS_TYPES = {"A": RecordType.A, "AAAA": RecordType.AAAA}
DNS_PORT = 53
EDNS_PAYLOAD = 1232  # bytes of UDP answer we accept by default (DNS flag day 2020)
EDNS_REFUSED = (Rcode.FORMERR, Rcode.NOTIMP)  # what a server without EDNS answers to an OPT record


@dataclass(frozen=True)
class Query:
    server: str
    port: int
    tcp: bool
    ident: int
    wire: bytes          # the DNS message (for TCP without its length prefix: see tcp_frame)
    deadline: float      # when to call Resolution.timed_out
    edns: bool = False   # the query carries an OPT record


@dataclass(frozen=True)
class Answer:
    name: str            # the name asked for
    canonical_name: str  # where its CNAME chain ended
    addresses: list[str]
    ttl: int             # the smallest TTL of the records used (from the cache: what is left of it)
    aliases: tuple[str, ...] = ()  # the CNAME chain: each name that was an alias, in order
    origin: str = "server"         # where it came from: "server", "cache", "hosts" or "literal"


def tcp_frame(wire: bytes) -> bytes:
    """A message as sent over TCP: a 2-byte length, then the message (RFC 1035 4.2.2)."""
    if len(wire) > 0xFFFF:
        raise DnsError(f"message of {len(wire)} bytes is too long for TCP's 2-byte length")
    return struct.pack("!H", len(wire)) + wire


class TcpMessageReader:
    """Reassembles one length-prefixed message from a TCP byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """Add received bytes; the whole message once it is there, else None."""
        self._buf += data
        if len(self._buf) < 2:
            return None
        size = struct.unpack_from("!H", self._buf)[0]
        if len(self._buf) < 2 + size:
            return None
        return bytes(self._buf[2:2 + size])

    def missing(self) -> int:
        """Bytes still to read before :meth:`feed` can return the message (at least 1)."""
        if len(self._buf) < 2:
            return 2 - len(self._buf)
        return max(1, 2 + struct.unpack_from("!H", self._buf)[0] - len(self._buf))


class Resolution:
    """Resolve ``name`` to addresses of ``rtype`` ("A" or "AAAA") with ``servers``.

    The servers are asked in order, the whole list ``attempts`` times, each
    query waiting ``timeout`` seconds; a server answering SERVFAIL, REFUSED
    or another error code passes the turn to the next one.
    """

    def __init__(self, name: str, rtype: str, servers: list[str], *, port: int = DNS_PORT,
                 timeout: float = 2.0, attempts: int = 2, max_cnames: int = 8,
                 edns_payload: int | None = EDNS_PAYLOAD, rng: random.Random | None = None) -> None:
        if rtype not in ADDRESS_TYPES:
            raise DnsError(f"record type {rtype!r}: only A and AAAA lookups are supported")
        if not servers:
            raise DnsError("no DNS servers given")
        if timeout <= 0 or attempts < 1 or max_cnames < 0:
            raise ValueError("timeout must be > 0, attempts >= 1 and max_cnames >= 0")
        if edns_payload is not None and not 512 <= edns_payload <= 0xFFFF:
            raise ValueError(f"EDNS payload size must be 512..65535 or None, got {edns_payload}")
        encode_name(name)  # a bad name fails here, before anything is sent
        self.name = name.rstrip(".") or "."
        self.rtype = rtype
        self.servers = list(servers)
        self.port = port
        self.timeout = timeout
        self.attempts = attempts
        self.max_cnames = max_cnames
        self.edns_payload = edns_payload
        self._rng = rng or random.SystemRandom()
        self._target = self.name
        self._chain_ttl: list[int] = []
        self._aliases: list[str] = []
        self._cnames = 0
        self._turn = 0                  # index into servers * attempts
        self._failures: dict[str, str] = {}  # server -> the error code it answered
        self.query: Query | None = None
        self.ignored: Counter[str] = Counter()
        self.queries_sent = 0
        self.without_edns: set[str] = set()  # servers that refused our OPT record

    # -- the caller's calls --------------------------------------------------------------------
    def start(self, now: float) -> Query:
        return self._ask(self.servers[0], tcp=False, now=now)

    def timed_out(self, now: float) -> Query:
        """The current query got no usable answer in time: the next one, or :class:`DnsTimeout`."""
        return self._next_server(now)

    def receive(self, data: bytes, source: tuple[str, int] | None, now: float) -> "Query | Answer | None":
        """A datagram from ``source`` (None: the TCP connection to the server asked)."""
        query = self._current()
        if source is not None and (str(source[0]), int(source[1])) != (query.server, query.port):
            self.ignored["wrong source"] += 1
            return None
        reason = self._header_mismatch(data, query)
        if reason:
            self.ignored[reason] += 1
            return None
        try:
            message = parse_message(data)
        except MalformedMessage as exc:
            if self._truncated_answer_to(query, data):
                # Cut short mid-record by the server (TC): what is there is not needed.
                return self._ask(query.server, tcp=True, now=now)
            raise MalformedMessage(f"malformed answer from {query.server}: {exc}") from None
        if not self._repeats_the_question(message):
            self.ignored["wrong question"] += 1
            return None
        if message.header.truncated and not query.tcp:
            return self._ask(query.server, tcp=True, now=now)
        return self._on_rcode(message, now)

    # -- inside --------------------------------------------------------------------------------
    def _current(self) -> Query:
        if self.query is None:
            raise RuntimeError("call start() first")
        return self.query

    def _ask(self, server: str, tcp: bool, now: float) -> Query:
        ident = self._rng.randrange(0x10000)
        payload = None if server in self.without_edns else self.edns_payload
        wire = build_query(ident, self._target, ADDRESS_TYPES[self.rtype], edns_payload=payload)
        self.query = Query(server, self.port, tcp, ident, wire, now + self.timeout, payload is not None)
        self.queries_sent += 1
        return self.query

    def _next_server(self, now: float) -> Query:
        self._turn += 1
        if self._turn >= len(self.servers) * self.attempts:
            if self._failures:
                codes = sorted(set(self._failures.values()))
                raise ServerFailure(self._target, "/".join(codes), list(self._failures))
            raise DnsTimeout(self.name, self.servers, self.attempts)
        return self._ask(self.servers[self._turn % len(self.servers)], tcp=False, now=now)

    @staticmethod
    def _header_mismatch(data: bytes, query: Query) -> str | None:
        try:
            header = read_header(data)
        except MalformedMessage:
            return "too short"
        if header.ident != query.ident:
            return "wrong id"
        if not header.is_response or header.opcode != 0:
            return "not a response"
        return None

    def _is_the_question(self, questions) -> bool:
        if len(questions) != 1:
            return False
        q = questions[0]
        return same_name(q.name, self._target) and q.rtype == ADDRESS_TYPES[self.rtype] and q.rclass == CLASS_IN

    def _repeats_the_question(self, message: Message) -> bool:
        if not message.questions and message.header.rcode in EDNS_REFUSED:
            return True  # a server that could not read the query may not repeat it (RFC 6891 7)
        return self._is_the_question(message.questions)

    def _truncated_answer_to(self, query: Query, data: bytes) -> bool:
        """``data`` has TC set, answers a UDP query and repeats its question."""
        if query.tcp or not read_header(data).truncated:
            return False
        try:
            return self._is_the_question(read_questions(data))
        except MalformedMessage:
            return False

    def _on_rcode(self, message: Message, now: float) -> "Query | Answer":
        rcode = message.rcode
        query = self._current()
        if rcode == Rcode.NXDOMAIN:
            self._walk_chain(message)  # the name that does not exist is the chain's end (RFC 6604)
            raise NameNotFound(self._target, self._negative_ttl(message))
        if rcode in EDNS_REFUSED and query.edns:
            self.without_edns.add(query.server)  # an old server: ask it again the RFC 1035 way
            return self._ask(query.server, tcp=query.tcp, now=now)
        if rcode != Rcode.NOERROR:
            self._failures[query.server] = rcode_name(rcode)
            return self._next_server(now)
        return self._follow(message, now)

    def _negative_ttl(self, message: Message) -> int | None:
        """RFC 2308 5: the smaller of the SOA's TTL and MINIMUM (and of the CNAMEs that led
        here); None without an SOA in the authority section (then the answer is not cached)."""
        soas = [r for r in message.authority if r.rtype == RecordType.SOA and r.rclass == CLASS_IN]
        if not soas:
            return None
        return min([soas[0].ttl, soa_minimum(soas[0])] + self._chain_ttl)

    def _walk_chain(self, message: Message) -> list:
        """Follow the answer's CNAMEs from the current target (moving it along); the
        address records of the name where the chain ends, if the answer has them."""
        wanted = ADDRESS_TYPES[self.rtype]
        while True:
            records = [r for r in message.answers if same_name(r.name, self._target) and r.rclass == CLASS_IN]
            addresses = [r for r in records if r.rtype == wanted]
            if addresses:
                return addresses
            cname = next((r for r in records if r.rtype == RecordType.CNAME), None)
            if cname is None:
                return []
            self._cnames += 1
            if self._cnames > self.max_cnames:
                raise DnsError(f"{self.name}: CNAME chain longer than {self.max_cnames} links")
            self._chain_ttl.append(cname.ttl)
            self._aliases.append(self._target)
            self._target = cname.value

    def _follow(self, message: Message, now: float) -> "Query | Answer":
        """Walk the answer from the name asked through its CNAMEs to the addresses."""
        start = self._target
        addresses = self._walk_chain(message)
        if addresses:
            ttl = min([r.ttl for r in addresses] + self._chain_ttl)
            return Answer(self.name, self._target, [r.value for r in addresses], ttl, tuple(self._aliases))
        if same_name(start, self._target):
            raise NoData(self._target, self.rtype, self._negative_ttl(message))
        # The server gave the chain but not its end: ask for the end, starting again with the first server.
        self._turn = 0
        return self._ask(self.servers[0], tcp=False, now=now)
