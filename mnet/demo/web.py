"""HTTP and HTTPS: the stack serves a directory made here; curl (host) and busybox wget (guest) fetch it.

The HTTPS certificate is made at run time for the stack's name by a CA made
with it (certs.py); curl trusts that CA alone (--cacert) and checks the name.
busybox wget's TLS checks no certificate and offers no signature algorithms,
which is why the https service says sha1_signatures=yes (docs/http.md).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from .dns import NAME
from .lab import STACK_IP
from .report import CheckFailed, detail

HTTP_PORT = 80
HTTPS_PORT = 443
PAGE = "hello from the MultiOS stack over a Python virtio-net device\n"
BIG_BYTES = 1_000_000


def make_site(root: Path) -> Path:
    """index.html and big.bin (random bytes, for a figure and a hash)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(PAGE)
    (root / "big.bin").write_bytes(os.urandom(BIG_BYTES))
    return root


def _curl(lab, url: str, out: Path, *options: str) -> tuple[int, int, float]:
    """(status, bytes, seconds) of one curl in the namespace, the body written to `out`."""
    r = lab.host(f"curl -sS --max-time 60 {' '.join(options)} -o {out} "
                 f"-w '%{{http_code}} %{{size_download}} %{{time_total}}' {url}", timeout=90)
    fields = r.stdout.decode(errors="replace").split()
    if r.returncode != 0 or len(fields) != 3:
        raise CheckFailed(f"curl exit status {r.returncode}: {r.stderr.decode(errors='replace').strip()[-300:]}")
    return int(fields[0]), int(float(fields[1])), float(fields[2])


def _fetch_big(lab, url: str, *options: str) -> str:
    site = lab.workdir / "www"
    out = lab.workdir / "fetched.bin"
    status, size, seconds = _curl(lab, url, out, *options)
    want = hashlib.sha256((site / "big.bin").read_bytes()).hexdigest()
    got = hashlib.sha256(out.read_bytes()).hexdigest()
    detail(f"HTTP {status}, {size} bytes, sha256 {got[:16]}...")
    if (status, size, got) != (200, BIG_BYTES, want):
        raise CheckFailed(f"HTTP {status}, {size} bytes, sha256 {got[:12]} (the file's is {want[:12]})")
    return f"GET /big.bin: 200, {size} bytes in {seconds:.2f} s, sha256 matches"


def host_http(lab) -> str:
    return _fetch_big(lab, f"http://{STACK_IP}:{HTTP_PORT}/big.bin")


def host_https(lab) -> str:
    """curl checks the chain against the demo's CA and the name multios.test (--resolve: no DNS needed)."""
    ca = lab.workdir / "pki" / "ca.crt"
    figure = _fetch_big(lab, f"https://{NAME}:{HTTPS_PORT}/big.bin", "--cacert", str(ca),
                        "--resolve", f"{NAME}:{HTTPS_PORT}:{STACK_IP}")
    return figure + f", certificate verified for {NAME}"


def _guest_fetch_big(lab, url: str) -> float:
    """busybox wget in the guest fetches big.bin: seconds taken (CheckFailed unless size and sha256 match)."""
    started = time.monotonic()
    r = lab.vm.run(f"timeout 90 wget -q -O /tmp/big.bin {url} && wc -c < /tmp/big.bin && sha256sum < /tmp/big.bin; "
                   "status=$?; rm -f /tmp/big.bin; exit $status", timeout=120)
    seconds = time.monotonic() - started
    lines = r.output.strip().splitlines()   # (an https fetch first notes that busybox checks no certificate)
    if r.status != 0 or len(lines) < 2:
        raise CheckFailed(f"exit status {r.status}: {r.output.strip()[-200:]!r}")
    want = hashlib.sha256((lab.workdir / "www" / "big.bin").read_bytes()).hexdigest()
    size, got = int(lines[-2]), lines[-1].split()[0]
    detail(f"{size} bytes, sha256 {got[:16]}...")
    if (size, got) != (BIG_BYTES, want):
        raise CheckFailed(f"big.bin: {size} bytes, sha256 {got[:12]} (the file's is {want[:12]})")
    return seconds


def guest_http(lab) -> str:
    started = time.monotonic()
    r = lab.vm.run(f"timeout 30 wget -q -O - http://{STACK_IP}:{HTTP_PORT}/", timeout=60)
    if r.status != 0 or r.output.strip() != PAGE.strip():
        raise CheckFailed(f"exit status {r.status}: {r.output.strip()[-200:]!r}")
    detail(r.output.strip())
    _guest_fetch_big(lab, f"http://{STACK_IP}:{HTTP_PORT}/big.bin")
    return (f"GET / and /big.bin: {len(PAGE)} + {BIG_BYTES} bytes in {time.monotonic() - started:.2f} s, "
            "sha256 matches")


def guest_https(lab) -> str:
    """busybox's own TLS: TLS 1.2, no signature_algorithms offered, so the demo's https service is
    started with sha1_signatures=yes (docs/http.md); busybox checks no certificate."""
    seconds = _guest_fetch_big(lab, f"https://{STACK_IP}:{HTTPS_PORT}/big.bin")
    return (f"GET /big.bin: {BIG_BYTES} bytes in {seconds:.2f} s, sha256 matches "
            "(TLS 1.2; busybox verifies no certificate)")
