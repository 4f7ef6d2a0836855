"""DNS for the stack: messages, the resolver's state machine, the cache and
the hosts table (all sans-IO). :class:`stack.dns.client.DnsClient` runs them
over the stack's sockets; it sits above the sockets and is imported from
``stack.dns.client`` (this package stays on the protocol floor)."""
from stack.dns.cache import DnsCache
from stack.dns.errors import DnsError, DnsTimeout, MalformedMessage, NameNotFound, NoData, ServerFailure
from stack.dns.hosts import HostsTable
from stack.dns.message import RecordType, build_query, parse_message
from stack.dns.resolver import Answer, Query, Resolution

__all__ = ["DnsCache", "DnsError", "DnsTimeout", "MalformedMessage", "NameNotFound", "NoData",
           "ServerFailure", "HostsTable", "RecordType", "build_query", "parse_message", "Answer",
           "Query", "Resolution"]
