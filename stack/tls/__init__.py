"""TLS for the stack's STREAM sockets (the socket guide's ``SecurityConfig``,
``Certificate.from_pem_file``, ``connect_secure``), client and server side,
with Python's ``ssl`` over ``MemoryBIO`` (no kernel socket)."""
from stack.tls.config import (Certificate, SecurityConfig, TlsError, TlsVerificationError,
                              TlsVersion, TlsVersionError)
from stack.tls.socket import TlsSocket, TlsWantRead, TlsWantWrite, accept_secure, connect_secure

__all__ = ["Certificate", "SecurityConfig", "TlsError", "TlsVerificationError", "TlsVersion",
           "TlsVersionError", "TlsSocket", "TlsWantRead", "TlsWantWrite", "accept_secure",
           "connect_secure"]
