"""Network namespace helpers on pyroute2, for TAP ports, tests and the demo.

A named namespace is a bind mount under /run/netns, the same place
`ip netns` uses, so `ip netns exec NAME ...` works on ours and vice versa.
Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import subprocess
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from .errors import PortError

__all__ = [
    "NetnsError", "NETNS_DIR", "check_netns_name", "netns_exists", "create_netns", "remove_netns",
    "iproute", "link_index", "move_link", "link_up", "set_address", "run_in_netns", "temporary_netns",
]

NETNS_DIR = "/run/netns"
# pyroute2 treats a name containing "/" as a path, so names are kept to what
# `ip netns` accepts in practice.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class NetnsError(PortError):
    """A namespace is missing, already there, or could not be changed."""


def check_netns_name(name: str) -> str:
    """Return `name` if it is a usable namespace name, else raise NetnsError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise NetnsError(f"bad network namespace name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return name


def netns_exists(name: str) -> bool:
    """True if /run/netns/NAME is there (created by us or by `ip netns add`)."""
    check_netns_name(name)
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create_netns(name: str) -> None:
    """Create the named namespace; NetnsError if it exists already."""
    if netns_exists(name):
        raise NetnsError(f"network namespace {name!r} already exists")
    try:
        _pr_netns.create(name)
    except OSError as exc:
        raise NetnsError(f"cannot create network namespace {name!r}: {exc.strerror or exc}") from None


def remove_netns(name: str) -> None:
    """Remove the named namespace (processes still inside keep it alive, unnamed)."""
    if not netns_exists(name):
        raise NetnsError(f"network namespace {name!r} does not exist")
    try:
        _pr_netns.remove(name)
    except OSError as exc:
        raise NetnsError(f"cannot remove network namespace {name!r}: {exc.strerror or exc}") from None


def _where(netns: str | None) -> str:
    return "the host namespace" if netns is None else f"network namespace {netns!r}"


def iproute(netns: str | None = None) -> IPRoute:
    """An IPRoute socket in `netns` (None: ours). The caller closes it.

    Never creates the namespace: pyroute2 would by default, which would hide
    a typo in a name.
    """
    if netns is None:
        return IPRoute()
    if not netns_exists(netns):
        raise NetnsError(f"network namespace {netns!r} does not exist")
    try:
        return IPRoute(netns=netns, flags=0)
    except OSError as exc:
        raise NetnsError(f"cannot enter network namespace {netns!r}: {exc.strerror or exc}") from None


def link_index(ipr: IPRoute, ifname: str, netns: str | None = None) -> int:
    """The interface index of `ifname` as seen through `ipr`."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetnsError(f"no interface {ifname!r} in {_where(netns)}")
    return found[0]


def move_link(ifname: str, netns: str) -> None:
    """Move host interface `ifname` into the named namespace."""
    with iproute() as ipr:
        index = link_index(ipr, ifname)
        if not netns_exists(netns):
            raise NetnsError(f"network namespace {netns!r} does not exist")
        try:
            ipr.link("set", index=index, net_ns_fd=netns)
        except NetlinkError as exc:
            raise NetnsError(f"cannot move {ifname!r} into network namespace {netns!r}: {_nl_reason(exc)}") from None


def link_up(ifname: str, netns: str | None = None) -> None:
    """Set `ifname` administratively up."""
    with iproute(netns) as ipr:
        index = link_index(ipr, ifname, netns)
        try:
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise NetnsError(f"cannot bring {ifname!r} up in {_where(netns)}: {_nl_reason(exc)}") from None


def set_address(ifname: str, cidr: str, netns: str | None = None) -> None:
    """Add an address such as "10.0.0.1/24" (or an IPv6 one) to `ifname`."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError:
        raise NetnsError(f"bad address {cidr!r}: expected ADDRESS/PREFIXLEN such as 10.0.0.1/24") from None
    with iproute(netns) as ipr:
        index = link_index(ipr, ifname, netns)
        try:
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            raise NetnsError(f"cannot add {cidr} to {ifname!r} in {_where(netns)}: {_nl_reason(exc)}") from None


def _nl_reason(exc: NetlinkError) -> str:
    return os.strerror(exc.code) if exc.code else str(exc)


def run_in_netns(name: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start `argv` inside the named namespace (through `ip netns exec`); returns the Popen.

    For tests and the demo: the product itself does its namespace work with
    pyroute2.
    """
    if not netns_exists(name):
        raise NetnsError(f"network namespace {name!r} does not exist")
    return subprocess.Popen(["ip", "netns", "exec", name, *argv], **popen_kwargs)


@contextlib.contextmanager
def temporary_netns(prefix: str = "mnet") -> Iterator[str]:
    """Create a uniquely named namespace, yield its name, always remove it."""
    name = check_netns_name(f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}")
    create_netns(name)
    try:
        yield name
    finally:
        if netns_exists(name):
            remove_netns(name)
