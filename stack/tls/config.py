"""What a TLS endpoint trusts and presents: :class:`SecurityConfig`, :class:`Certificate`,
and the errors a handshake ends with (:class:`TlsError` and its subclasses).

Certificate validation and hostname verification are on by default, as the
socket guide asks: a client that should talk to a self-signed server adds
that server's CA with :meth:`SecurityConfig.add_trusted_certificate`; nothing
is trusted implicitly (the system's CA store is not loaded unless asked).

A server may also serve TLS 1.2 clients that send no signature_algorithms
extension (``allow_sha1_signatures``): RFC 5246 section 7.4.1.4.1 has it sign
their key exchange with SHA-1, which OpenSSL refuses above security level 0.
busybox wget's built-in TLS (1.35) is such a client.
"""
from __future__ import annotations

import enum
import errno
import ssl
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TlsVersion", "Certificate", "SecurityConfig", "TlsError", "TlsVerificationError",
           "TlsVersionError", "tls_error_from"]


class TlsVersion(enum.Enum):
    TLS1_2 = ssl.TLSVersion.TLSv1_2
    TLS1_3 = ssl.TLSVersion.TLSv1_3


@dataclass(frozen=True)
class Certificate:
    """One X.509 certificate in PEM form (``from_pem_file`` remembers where it came from)."""

    pem: str
    path: Path | None = None

    @classmethod
    def from_pem_file(cls, path) -> "Certificate":
        path = Path(path)
        text = path.read_text()
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(f"{path}: no PEM certificate in it")
        return cls(text, path)


@dataclass
class SecurityConfig:
    """TLS settings of one side: versions, verification, trust, and (for a server) its identity.

    ``certificate_file``/``key_file`` are this side's own chain and key
    (PEM files): required for a server, optional for a client.

    ``allow_sha1_signatures`` (server only, off by default) serves TLS 1.2
    clients that offer no signature algorithms, signing their key exchange with
    SHA-1 as RFC 5246 asks for them. The server's cipher suites stay the same
    (all forward-secret), its certificate is still checked at the default
    security level when it loads, clients that do offer algorithms keep
    SHA-256 or better, and TLS 1.3 is unchanged."""

    min_version: TlsVersion = TlsVersion.TLS1_2
    max_version: TlsVersion = TlsVersion.TLS1_3
    verify_hostname: bool = True
    verify_certificates: bool = True
    trusted: list[Certificate] = field(default_factory=list)
    load_system_cas: bool = False
    certificate_file: Path | None = None
    key_file: Path | None = None
    allow_sha1_signatures: bool = False

    def add_trusted_certificate(self, cert: Certificate) -> None:
        """Trust ``cert`` (a CA, or a self-signed server certificate) for peers' chains."""
        if not isinstance(cert, Certificate):
            raise TypeError(f"expected a Certificate, got {cert!r}")
        self.trusted.append(cert)

    def set_identity(self, certificate_file, key_file) -> None:
        """This side's certificate chain and private key (PEM files)."""
        self.certificate_file, self.key_file = Path(certificate_file), Path(key_file)

    def context(self, server_side: bool) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` these settings make (ValueError for impossible ones)."""
        if self.min_version.value > self.max_version.value:
            raise ValueError(f"min_version {self.min_version.name} is above max_version {self.max_version.name}")
        if self.verify_hostname and not self.verify_certificates and not server_side:
            raise ValueError("verify_hostname needs verify_certificates")
        if self.allow_sha1_signatures and (not server_side or self.trusted):
            raise ValueError("allow_sha1_signatures is for a server that checks no client certificates "
                             "(it would accept SHA-1 in the peer's certificates too)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version, ctx.maximum_version = self.min_version.value, self.max_version.value
        if not server_side:
            ctx.check_hostname = self.verify_hostname
            ctx.verify_mode = ssl.CERT_REQUIRED if self.verify_certificates else ssl.CERT_NONE
        elif self.trusted:
            ctx.verify_mode = ssl.CERT_REQUIRED  # a server that trusts CAs asks clients for certificates
        for cert in self.trusted:
            ctx.load_verify_locations(cadata=cert.pem)
        if self.load_system_cas:
            ctx.load_default_certs()
        if self.certificate_file is not None:
            ctx.load_cert_chain(self.certificate_file, self.key_file)
        elif server_side:
            raise ValueError("a server needs set_identity(certificate_file, key_file)")
        if self.allow_sha1_signatures:
            _allow_sha1_signatures(ctx)
        return ctx


def _allow_sha1_signatures(ctx: ssl.SSLContext) -> None:
    """The context's own TLS 1.2 suites again, at security level 0: the one level where OpenSSL makes
    a SHA-1 signature. Called after the certificate loaded, so its key was checked at the default level."""
    suites = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    if suites:  # (none when TLS 1.3 is the minimum: its clients always offer signature algorithms)
        ctx.set_ciphers(":".join(["@SECLEVEL=0", *suites]))


class TlsError(OSError):
    """A TLS failure on a stack socket (an ``OSError``, as every socket error of the stack)."""

    def __init__(self, message: str, *, code: int = errno.EPROTO) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TlsVerificationError(TlsError):
    """The peer's certificate was refused: ``reason`` is "wrong hostname", "untrusted CA",
    "expired certificate" or "certificate rejected"; ``verify_message`` is OpenSSL's."""

    def __init__(self, reason: str, verify_message: str, verify_code: int) -> None:
        super().__init__(f"TLS certificate verification failed: {reason} ({verify_message})")
        self.reason, self.verify_message, self.verify_code = reason, verify_message, verify_code


class TlsVersionError(TlsError):
    """The two sides share no TLS version."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"TLS version mismatch: no protocol version both sides allow ({detail})")
        self.reason = "version mismatch"


# X509_V_ERR_* codes (OpenSSL's x509_vfy.h) grouped into the reasons a user acts on.
_UNTRUSTED = {2, 18, 19, 20, 21, 27}  # unknown issuer, self-signed, untrusted chain, not trusted
_EXPIRED = {9, 10}  # not yet valid, expired
_HOSTNAME = {62, 64}  # hostname or IP address mismatch
_VERSION_REASONS = {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE",
                    "WRONG_SSL_VERSION", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"}


def tls_error_from(exc: ssl.SSLError) -> TlsError:
    """The stack's error for what the ``ssl`` module raised."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        reason = ("wrong hostname" if code in _HOSTNAME else "untrusted CA" if code in _UNTRUSTED
                  else "expired certificate" if code in _EXPIRED else "certificate rejected")
        return TlsVerificationError(reason, exc.verify_message, code)
    if exc.reason in _VERSION_REASONS:
        return TlsVersionError(exc.reason)
    return TlsError(f"TLS failure: {exc.reason or exc}")
