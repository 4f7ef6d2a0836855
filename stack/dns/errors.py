"""The resolver's errors: every failure of a lookup is a :class:`DnsError`."""
from __future__ import annotations

__all__ = ["DnsError", "MalformedMessage", "NameNotFound", "NoData", "ServerFailure", "DnsTimeout"]


class DnsError(Exception):
    """A DNS lookup failed; the message says why in one line."""


class MalformedMessage(DnsError):
    """A DNS message that cannot be read (truncated, a bad label, a compression loop...)."""


class NameNotFound(DnsError):
    """NXDOMAIN: the name does not exist.

    ``negative_ttl``: how long the answer may be cached (RFC 2308 5: the
    smaller of the SOA record's TTL and its MINIMUM field), None when the
    answer had no SOA record (then it is not cached).
    """

    def __init__(self, name: str, negative_ttl: int | None = None) -> None:
        super().__init__(f"{name}: no such name (NXDOMAIN)")
        self.name = name
        self.negative_ttl = negative_ttl

    def again(self, negative_ttl: int) -> "NameNotFound":
        """The same error, raised anew from the cache with the TTL left."""
        return NameNotFound(self.name, negative_ttl)


class NoData(DnsError):
    """The name exists but has no records of the type asked for (NODATA;
    ``negative_ttl`` as for :class:`NameNotFound`)."""

    def __init__(self, name: str, rtype: str, negative_ttl: int | None = None) -> None:
        super().__init__(f"{name}: no {rtype} records")
        self.name = name
        self.rtype = rtype
        self.negative_ttl = negative_ttl

    def again(self, negative_ttl: int) -> "NoData":
        """The same error, raised anew from the cache with the TTL left."""
        return NoData(self.name, self.rtype, negative_ttl)


class ServerFailure(DnsError):
    """Every server answered with an error code (SERVFAIL, REFUSED, ...)."""

    def __init__(self, name: str, rcode: str, servers: list[str]) -> None:
        super().__init__(f"{name}: {rcode} from {', '.join(servers)}")
        self.name = name
        self.rcode = rcode
        self.servers = servers


class DnsTimeout(DnsError):
    """No usable answer from any server within the attempts allowed."""

    def __init__(self, name: str, servers: list[str], attempts: int) -> None:
        super().__init__(f"{name}: no answer from {', '.join(servers)} ({attempts} attempts each)")
        self.name = name
        self.servers = servers
