"""The tour's certificates, made at run time with the openssl program: a CA of
its own and a server certificate it signs for the stack's name and address."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class DemoPki:
    ca_file: Path      # what a client trusts (curl --cacert)
    cert_file: Path    # the server's certificate ...
    key_file: Path     # ... and its key


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.strip().splitlines()[-1:]}")


def make_pki(directory: Path, hostname: str, ip: str) -> DemoPki:
    """A CA valid for a day, and a server certificate for `hostname` and `ip` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *CURVE, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=MultiOS demo CA", cwd=directory)
    _openssl("req", *CURVE, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={hostname}",
             cwd=directory)
    (directory / "server.ext").write_text(f"subjectAltName=DNS:{hostname},IP:{ip}\n"
                                          "basicConstraints=critical,CA:FALSE\n"
                                          "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "server.ext", cwd=directory)
    return DemoPki(directory / "ca.crt", directory / "server.crt", directory / "server.key")
