"""DNS client: resolve names with the stack's resolver (stack.dns.client.DnsClient).

What it shows: DnsClient.resolve/lookup (A and AAAA, a CNAME followed to its
end, an answer for NXDOMAIN as a clear error, the cache answering the second
time without a packet, with the TTL that is left and the same CNAME chain,
NXDOMAIN cached too for the SOA's minimum TTL, a hosts table). In the
in-process lab the server is a tiny DNS responder on the peer stack, written
here with stack.dns.message: it reads the question and builds the answer the
way the guide's DNS chapter lays it out (header, the question repeated,
records whose owner is a compression pointer to the question's name; an SOA
record in the authority section of a negative answer).

Run it:
    python examples/dns_client.py
        in-process lab: the responder on the peer stack knows *.example.test
    python examples/dns_client.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 \\
            [--port 53] NAME [NAME...]
        against a real DNS server (dnsmasq, unbound, a router)
"""
from __future__ import annotations

import struct
import threading
from ipaddress import IPv4Address, IPv6Address

import _lab
from stack import IpAddress, Socket, SocketType
from stack.dns.client import DnsClient
from stack.dns.errors import DnsError
from stack.dns.hosts import HostsTable
from stack.dns.message import CLASS_IN, HEADER, MalformedMessage, Rcode, RecordType, encode_name, parse_message

# The lab's zone: name -> (type, value). A CNAME's value is another name of the zone.
ZONE = {
    "www.example.test": [(RecordType.A, "192.0.2.10"), (RecordType.AAAA, "2001:db8::10")],
    "alias.example.test": [(RecordType.CNAME, "www.example.test")],
    "mail.example.test": [(RecordType.A, "192.0.2.25")],
}
LAB_NAMES = [("www.example.test", "A"), ("www.example.test", "AAAA"), ("alias.example.test", "A"),
             ("mail.example.test", "A"), ("missing.example.test", "A"), ("www.example.test", "A"),
             ("alias.example.test", "A"), ("missing.example.test", "A"), ("printer.lan", "A")]
POINTER_TO_QUESTION = 0xC00C  # the question's name starts right after the 12-byte header
TTL = 300
NEGATIVE_TTL = 60  # the SOA's MINIMUM: how long resolvers may cache "no such name" (RFC 2308)


def rdata(rtype: int, value: str) -> bytes:
    if rtype == RecordType.A:
        return IPv4Address(value).packed
    if rtype == RecordType.AAAA:
        return IPv6Address(value).packed
    return encode_name(value)  # CNAME


def answer(query: bytes) -> bytes:
    """The responder's answer to one query: CNAMEs followed inside the zone, NXDOMAIN otherwise."""
    message = parse_message(query)
    question = message.questions[0]
    name, records = question.name.lower().rstrip("."), []
    owner = struct.pack("!H", POINTER_TO_QUESTION)
    while name in ZONE:
        found = [(t, v) for t, v in ZONE[name] if t in (question.rtype, RecordType.CNAME)]
        for rtype, value in found:
            data = rdata(rtype, value)
            records.append(owner + struct.pack("!HHIH", rtype, CLASS_IN, TTL, len(data)) + data)
        cname = [v for t, v in found if t == RecordType.CNAME]
        if not cname:
            break
        name, owner = cname[0], encode_name(cname[0])
    rcode = Rcode.NOERROR if question.name.lower().rstrip(".") in ZONE else Rcode.NXDOMAIN
    flags = 0x8000 | 0x0400 | (message.header.flags & 0x0100) | 0x0080 | rcode  # QR, AA, RD copied, RA
    question_wire = encode_name(question.name) + struct.pack("!HH", question.rtype, question.rclass)
    authority = [] if records else [soa_record()]  # a negative answer says how long to remember it
    return (HEADER.pack(message.header.ident, flags, 1, len(records), len(authority), 0) + question_wire
            + b"".join(records) + b"".join(authority))


def soa_record() -> bytes:
    """The zone's SOA: primary server, mailbox, serial, refresh, retry, expire, minimum."""
    data = (encode_name("ns.example.test") + encode_name("hostmaster.example.test")
            + struct.pack("!IIIII", 2026120701, 3600, 600, 86400, NEGATIVE_TTL))
    return encode_name("example.test") + struct.pack("!HHIH", RecordType.SOA, CLASS_IN, TTL, len(data)) + data


def responder(sock: Socket) -> None:
    """Answer queries until the socket is closed; a query we cannot read is dropped."""
    while True:
        try:
            query, client = sock.recv_from(512)
        except OSError:
            return
        try:
            sock.send_to(answer(query), client)
        except MalformedMessage:
            continue


WHERE = {"server": "ttl {ttl}", "cache": "no query: from the cache, ttl {ttl} left",
         "hosts": "no query: hosts table", "literal": "an address literal"}


def show(dns: DnsClient, name: str, rtype: str) -> None:
    queries_before = len(dns.source_ports)
    try:
        found = dns.lookup(name, rtype)
    except DnsError as exc:  # NXDOMAIN, no data, SERVFAIL, timeout, malformed: one clear message
        cached = " (no query: from the cache)" if len(dns.source_ports) == queries_before else ""
        print(f"{exc}{cached}")
        return
    for alias, target in zip(found.aliases, found.aliases[1:] + (found.canonical_name,)):
        print(f"{alias} is an alias for {target}.")
    kind = "address" if rtype == "A" else "IPv6 address"
    where = WHERE[found.origin].format(ttl=found.ttl)
    for address in found.addresses:
        print(f"{found.canonical_name} has {kind} {address} ({where})")


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", action="append", help="a DNS server (repeat for several)")
    p.add_argument("--port", type=int, default=53, help="the servers' port (default 53)")
    p.add_argument("--type", choices=["A", "AAAA"], default="A", help="record type of the names given")
    p.add_argument("names", nargs="*", help="names to resolve (default: the lab's names)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab:
        servers = args.server or [lab.server_ip(None)]
        if lab.local:
            server_sock = Socket(SocketType.DATAGRAM, stack=lab.peer)
            server_sock.bind(IpAddress.any(args.port))
            threading.Thread(target=responder, args=(server_sock,), daemon=True).start()
        hosts = HostsTable.parse("10.0.0.50 printer.lan\n")  # like /etc/hosts: asked before any server
        dns = DnsClient(lab.stack, servers, port=args.port, timeout=2.0, attempts=2, hosts=hosts)
        names = [(n, args.type) for n in args.names] or LAB_NAMES
        for name, rtype in names:
            show(dns, name, rtype)
        print(f"dns client: {len(names)} lookups, {len(dns.source_ports)} queries sent "
              f"(the rest answered by the cache or the hosts table)")
        if lab.local:
            server_sock.close()


if __name__ == "__main__":
    _lab.run(main)
