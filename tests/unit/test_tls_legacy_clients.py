"""TLS 1.2 clients that send no signature_algorithms extension, as busybox wget's built-in TLS
(1.35) does: refused by default, served with ``allow_sha1_signatures``.

Without the extension RFC 5246 (7.4.1.4.1) has the server sign its ECDHE key
exchange with SHA-1, and OpenSSL makes no SHA-1 signature above security level
0, so its answer is "no shared cipher". The ClientHello here is the one
busybox 1.35's ssl_client sends (tests/support/legacy_tls_hello.py), fed to
the server's context through memory BIOs; the last test runs the real busybox
ssl_client against it.
"""
from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from stack.tls import Certificate, SecurityConfig
from support.legacy_tls_hello import (ALERT, BUSYBOX_GROUPS, ECDHE_ECDSA_AES128_GCM_SHA256,
                                      ECDHE_RSA_AES128_GCM_SHA256, ECDSA_SECP256R1_SHA256, ECDSA_SHA1,
                                      HANDSHAKE_FAILURE, SERVER_HELLO, SERVER_KEY_EXCHANGE, chosen_suite,
                                      client_hello, handshake_messages, key_exchange_signature, records)
from support.tls_certs import TestCa

pytest.importorskip("cryptography")

NAME = "server.test"
BUSYBOX = "/bin/busybox"


def first_flight(config: SecurityConfig, hello: bytes) -> tuple[bytes, ssl.SSLError | None]:
    """What the server answers ``hello`` with, and the error its handshake ended with (None: it waits)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = config.context(server_side=True).wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read(), None
    except ssl.SSLError as exc:
        return outgoing.read(), exc
    raise AssertionError("a handshake cannot end after the ClientHello alone")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = TestCa(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue(NAME)


def server_config(issued, **settings) -> SecurityConfig:
    config = SecurityConfig(**settings)
    config.set_identity(issued.cert_file, issued.key_file)
    return config


def test_by_default_a_client_without_signature_algorithms_gets_handshake_failure(pki):
    answer, error = first_flight(server_config(pki[1]), client_hello(NAME))
    assert error is not None and error.reason == "NO_SHARED_CIPHER", error
    assert records(answer) == [(ALERT, bytes([2, HANDSHAKE_FAILURE]))]  # fatal: what busybox reports


def test_allowed_it_gets_forward_secret_gcm_signed_with_sha1(pki):
    answer, error = first_flight(server_config(pki[1], allow_sha1_signatures=True), client_hello(NAME))
    assert error is None, error
    messages = handshake_messages(answer)
    assert chosen_suite(messages[SERVER_HELLO]) == ECDHE_ECDSA_AES128_GCM_SHA256
    group, signature = key_exchange_signature(messages[SERVER_KEY_EXCHANGE])
    assert group in BUSYBOX_GROUPS and signature == ECDSA_SHA1


def test_a_client_that_offers_signature_algorithms_still_gets_sha256(pki):
    hello = client_hello(NAME, signature_algorithms=(ECDSA_SECP256R1_SHA256, ECDSA_SHA1))
    answer, error = first_flight(server_config(pki[1], allow_sha1_signatures=True), hello)
    assert error is None, error
    assert key_exchange_signature(handshake_messages(answer)[SERVER_KEY_EXCHANGE])[1] == ECDSA_SECP256R1_SHA256


def test_the_suites_and_versions_stay_those_of_the_default(pki):
    default = server_config(pki[1]).context(server_side=True)
    allowed = server_config(pki[1], allow_sha1_signatures=True).context(server_side=True)
    assert [c["name"] for c in allowed.get_ciphers()] == [c["name"] for c in default.get_ciphers()]
    assert (allowed.minimum_version, allowed.maximum_version) == (default.minimum_version, default.maximum_version)


def _self_signed(directory, key) -> SecurityConfig:
    """A server config whose identity is a self-signed certificate for ``key``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "self.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "self.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    config = SecurityConfig(allow_sha1_signatures=True)
    config.set_identity(directory / "self.crt", directory / "self.key")
    return config


def test_a_weak_server_key_is_still_refused(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    config = _self_signed(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ssl.SSLError, match="KEY_TOO_SMALL"):
        config.context(server_side=True)


def test_a_p384_certificate_cannot_serve_busybox_even_so(tmp_path):
    # busybox offers secp256r1 and x25519 only: an ECDSA certificate on another curve fits no suite
    # (RFC 8422 section 5.1), and its RSA key exchange suites need an RSA certificate (docs/http.md).
    from cryptography.hazmat.primitives.asymmetric import ec

    _, error = first_flight(_self_signed(tmp_path, ec.generate_private_key(ec.SECP384R1())), client_hello(NAME))
    assert error is not None and error.reason == "NO_SHARED_CIPHER", error


def test_an_rsa_certificate_serves_busybox_with_ecdhe_rsa(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    config = _self_signed(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    answer, error = first_flight(config, client_hello(NAME))
    assert error is None, error
    assert chosen_suite(handshake_messages(answer)[SERVER_HELLO]) == ECDHE_RSA_AES128_GCM_SHA256


def test_it_is_refused_where_it_would_weaken_certificate_checks(pki):
    ca, issued = pki
    with pytest.raises(ValueError, match="allow_sha1_signatures is for a server"):
        SecurityConfig(allow_sha1_signatures=True).context(server_side=False)
    config = server_config(issued, allow_sha1_signatures=True)
    config.add_trusted_certificate(Certificate.from_pem_file(ca.cert_file))
    with pytest.raises(ValueError, match="checks no client certificates"):
        config.context(server_side=True)


def _serve_one_line(context: ssl.SSLContext, sock: socket.socket, result: dict) -> None:
    try:
        with context.wrap_socket(sock, server_side=True) as tls:
            result["cipher"] = tls.cipher()[0]
            tls.sendall(b"hello busybox\n")
            result["read"] = tls.recv(100)
    except (OSError, ssl.SSLError) as exc:
        result["error"] = exc


def test_busybox_ssl_client_completes_the_handshake(pki):
    assert os.access(BUSYBOX, os.X_OK) and shutil.which("timeout"), \
        f"{BUSYBOX} and timeout are needed: make setup installs busybox-static"
    server_end, client_end = socket.socketpair()
    server_end.settimeout(10)
    result: dict = {}
    context = server_config(pki[1], allow_sha1_signatures=True).context(server_side=True)
    thread = threading.Thread(target=_serve_one_line, args=(context, server_end, result))
    thread.start()
    try:
        with client_end:
            r = subprocess.run(["timeout", "10", BUSYBOX, "ssl_client", "-s", str(client_end.fileno()),
                                "-n", NAME], input=b"hello server\n", pass_fds=[client_end.fileno()],
                               capture_output=True, timeout=20)
    finally:
        thread.join(15)
    assert not thread.is_alive(), "the server thread did not finish"
    assert "error" not in result, (result, r.stderr)
    assert result == {"cipher": "ECDHE-ECDSA-AES128-GCM-SHA256", "read": b"hello server\n"}, result
    assert r.stdout == b"hello busybox\n", r
