"""TLS client: connect_secure() with certificate and hostname verification, and what a failure says.

What it shows: SecurityConfig (TLS 1.2 to 1.3, verification on by default),
a CA added with add_trusted_certificate(Certificate.from_pem_file(...)),
connect_secure(addr, hostname, config) returning a TlsSocket with the
socket calls (sendall, recv, close), the negotiated version and cipher, and
TlsVerificationError naming the reason when the hostname does not match
and when the CA is not trusted. TLS runs over the stack's own TCP through
Python's ssl with memory BIOs: no kernel socket is involved.

In the in-process lab the peer stack runs a TLS server (accept_secure) with
a CA and a certificate for "server.test" made at run time with the
`cryptography` package.

Run it:
    python examples/tls_client.py
    python examples/tls_client.py --nic vhost-user:/tmp/c.sock --ip 10.0.0.8/24 --server 10.0.0.254 \\
            --port 4433 --hostname server.test --ca ca.pem
        against a real TLS server that answers what it is sent (`openssl s_server -rev` reverses lines)
"""
from __future__ import annotations

import datetime
import tempfile
import threading
from pathlib import Path

import _lab
from echo_server import listening_socket
from stack import IpAddress, Socket
from stack.tls import Certificate, SecurityConfig, TlsVerificationError, TlsVersion, accept_secure, connect_secure

NAME = "server.test"


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for NAME that it signs: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Example lab CA")).issuer_name(name("Example lab CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name(NAME)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


def tls_server(listener: Socket, config: SecurityConfig) -> None:
    """The lab's server: each connection's handshake, then its lines sent back reversed."""
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            with accept_secure(raw, config) as tls:
                while data := tls.recv(4096):
                    tls.sendall(data.rstrip(b"\n")[::-1] + b"\n")
        except OSError as exc:  # the client refused our certificate: its alert ends the handshake
            print(f"server: handshake failed: {type(exc).__name__}", flush=True)


def try_connect(address: IpAddress, hostname: str, config: SecurityConfig) -> None:
    try:
        with connect_secure(address, hostname, config, timeout=5.0):
            print(f"connected to {hostname!r}?")
    except TlsVerificationError as exc:
        print(f"hostname {hostname!r}: refused, reason {exc.reason!r}")


def main() -> None:
    p = _lab.arguments(__doc__)
    p.add_argument("--server", metavar="IP", help="the TLS server (default: the in-process peer)")
    p.add_argument("--port", type=int, default=4433, help="its port (default 4433)")
    p.add_argument("--hostname", default=NAME, help=f"the name its certificate must carry (default {NAME})")
    p.add_argument("--ca", metavar="PEM", help="the CA to trust (default: the lab's, made now)")
    args = p.parse_args()
    with _lab.open_lab(args) as lab, tempfile.TemporaryDirectory() as tmp:
        if not lab.local and not args.ca:
            _lab.fail("with --nic, give the CA that signed the server's certificate: --ca PEM")
        address = IpAddress(lab.server_ip(args.server), args.port)
        if lab.local:
            ca_file, cert_file, key_file = make_pki(Path(tmp))
            server_config = SecurityConfig()
            server_config.set_identity(cert_file, key_file)
            listener = listening_socket(args.port, stack=lab.peer)
            threading.Thread(target=tls_server, args=(listener, server_config), daemon=True).start()
        config = SecurityConfig(min_version=TlsVersion.TLS1_2, max_version=TlsVersion.TLS1_3)
        config.add_trusted_certificate(Certificate.from_pem_file(args.ca or ca_file))
        with connect_secure(address, args.hostname, config, timeout=5.0) as tls:
            print(f"connected to {address} as {args.hostname!r}: {tls.version}, cipher {tls.cipher()[0]}")
            tls.sendall(b"hello over TLS\n")
            print(f"sent 'hello over TLS', got back {tls.recv(4096).decode().strip()!r}")
        if lab.local:
            try_connect(address, "other.test", config)  # a certificate for server.test, not other.test
            try_connect(address, NAME, SecurityConfig())  # trusts no CA at all
            listener.close()
    print("tls client: done")


if __name__ == "__main__":
    _lab.run(main)
