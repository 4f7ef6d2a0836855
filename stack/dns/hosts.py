"""A hosts table (the /etc/hosts format): names answered without asking a server."""
from __future__ import annotations

from ipaddress import ip_address

from stack.dns.errors import DnsError

__all__ = ["HostsTable"]


class HostsTable:
    """``add("db.lan", "10.0.0.5")``, or :meth:`parse` hosts(5) text; :meth:`lookup` by type."""

    def __init__(self) -> None:
        self._by_name: dict[tuple[str, str], list[str]] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.rstrip(".").lower()

    def add(self, name: str, address: str) -> None:
        try:
            ip = ip_address(address)
        except ValueError:
            raise DnsError(f"hosts table: {address!r} is not an IP address") from None
        rtype = "A" if ip.version == 4 else "AAAA"
        found = self._by_name.setdefault((self._key(name), rtype), [])
        if str(ip) not in found:
            found.append(str(ip))

    @classmethod
    def parse(cls, text: str) -> "HostsTable":
        """Lines of ``ADDRESS NAME [ALIAS...]``; ``#`` starts a comment."""
        table = cls()
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) < 2:
                raise DnsError(f"hosts table line {number}: expected 'ADDRESS NAME...', got {line.strip()!r}")
            for name in fields[1:]:
                table.add(name, fields[0])
        return table

    def lookup(self, name: str, rtype: str) -> list[str] | None:
        """The addresses of ``name`` of type "A" or "AAAA", or None if the table has none."""
        found = self._by_name.get((self._key(name), rtype))
        return list(found) if found else None
