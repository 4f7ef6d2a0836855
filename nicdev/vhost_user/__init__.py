"""vhost-user: messages (both directions), the back-end state machine, its I/O.

    from nicdev.vhost_user import VhostUserBackend, VhostUserServer, Message, Request

Modules: `protocol` (ids, flags, feature bits, wire layouts), `messages`
(parse/encode, typed payloads, ProtocolError), `backend` (the sans-IO
dispatcher and ring state), `connection` (framing with fds over a socket),
`server` (the listening socket), `testpmd` (DPDK's testpmd as a peer to
test against). See docs/vhost-user.md.
"""
from .backend import BackendDevice, RequestFailed, VhostUserBackend, Vring
from .connection import Connection, ConnectionClosed
from .messages import (
    ConfigSpace, LogArea, MemoryRegionDesc, MemoryTable, Message, ProtocolError, RarpMac, SingleMemoryRegion,
    VringAddr, VringFile, VringState, parse, parse_header,
)
from .protocol import BackendRequest, ProtocolFeature, Request
from .server import SocketInUseError, SocketPathError, VhostUserServer

__all__ = [
    "BackendDevice", "RequestFailed", "VhostUserBackend", "Vring", "Connection", "ConnectionClosed",
    "ConfigSpace", "LogArea", "MemoryRegionDesc", "MemoryTable", "Message", "ProtocolError", "RarpMac",
    "SingleMemoryRegion", "VringAddr", "VringFile", "VringState", "parse", "parse_header",
    "BackendRequest", "ProtocolFeature", "Request", "SocketInUseError", "SocketPathError", "VhostUserServer",
]
