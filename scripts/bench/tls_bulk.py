"""TLS on the MultiOS stack (stack.tls) against plain stack TCP, in one run: what
encryption through ssl's MemoryBIO costs over the stack's own TCP.

Two stacks in this process on a LoopbackNicPair (no device, no switch: the
stack and ssl are all that is measured). Cases:

  tcp      the anchor: plain STREAM sockets
  tls1.2   the same sockets under TLS 1.2 (stack.tls, ECDSA P-256 certificate)
  tls1.3   the same under TLS 1.3

Tests per case: bulk (client -> server, --mbytes in 64 KiB writes, Mbit/s timed
by the receiver from the first byte to the end) and connect (connections set
up and closed per second for --seconds; for TLS with a full handshake each,
no resumption). Prints one JSON line per case and test with the anchor's
figure from the same run and the ratio; with --rounds N the figure is the
median. The certificate is made with `openssl req` in a temporary directory.

    .venv/bin/python scripts/bench/tls_bulk.py [--mbytes 50] [--seconds 3] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CHUNK = 64 * 1024
NAME = "bench.test"
CASES = ("tcp", "tls1.2", "tls1.3")


def make_configs(directory: Path, case: str):
    """(server config, client config) for a TLS case, None for the anchor."""
    from stack.tls import Certificate, SecurityConfig, TlsVersion

    if case == "tcp":
        return None, None
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={NAME}",
                        "-addext", f"subjectAltName=DNS:{NAME}"], check=True, capture_output=True)
    version = TlsVersion.TLS1_2 if case == "tls1.2" else TlsVersion.TLS1_3
    server = SecurityConfig(min_version=version, max_version=version)
    server.set_identity(cert, key)
    client = SecurityConfig(min_version=version, max_version=version)
    client.add_trusted_certificate(Certificate.from_pem_file(cert))
    return server, client


def connect(a, b_listener, configs):
    """(client, server) connected, wrapped in TLS when configs are given."""
    from stack import SocketType
    from stack.tls import TlsSocket, accept_secure

    server_config, client_config = configs
    raw = a.socket(SocketType.STREAM)
    raw.set_timeout(30)
    raw.connect("10.0.0.2:4433")
    conn, _ = b_listener.accept()
    conn.set_timeout(30)
    if server_config is None:
        return raw, conn
    server = accept_secure(conn, server_config, handshake=False)
    client = TlsSocket(raw, client_config, server_side=False, hostname=NAME)
    worker = threading.Thread(target=server.do_handshake)
    worker.start()
    client.do_handshake()
    worker.join()
    return client, server


def bulk(a, lst, configs, size: int) -> float:
    client, server = connect(a, lst, configs)
    payload = bytes(CHUNK)
    result = {}

    def receive():
        got, start = 0, None
        while got < size:
            data = server.recv(1 << 20)
            if not data:
                break
            start = start or time.perf_counter()
            got += len(data)
        result["rate"] = got * 8 / (time.perf_counter() - start) / 1e6

    worker = threading.Thread(target=receive)
    worker.start()
    for _ in range(size // CHUNK):
        client.sendall(payload)
    worker.join()
    client.close()
    server.close()
    return result["rate"]


def connects(a, lst, configs, seconds: float) -> float:
    done, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        client, server = connect(a, lst, configs)
        client.close()
        server.close()
        done += 1
    return done / (time.perf_counter() - start)


def run_case(case: str, directory: Path, args) -> dict:
    from stack import LoopbackNicPair, SocketOption, SocketType, Stack

    pair = LoopbackNicPair()
    with Stack(pair.a, "10.0.0.1/24") as a, Stack(pair.b, "10.0.0.2/24") as b:
        lst = b.socket(SocketType.STREAM)
        lst.set_option(SocketOption.REUSE_ADDR, True)
        lst.bind("0.0.0.0:4433")
        lst.listen(64)
        lst.set_timeout(30)
        configs = make_configs(directory, case)
        return {"bulk": bulk(a, lst, configs, args.mbytes * 1_000_000 // CHUNK * CHUNK),
                "connect": connects(a, lst, configs, args.seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbytes", type=int, default=50, help="bulk transfer size (MB)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the connect test")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, interleaved; figures are medians")
    args = parser.parse_args()
    rounds: dict = {(c, t): [] for c in CASES for t in ("bulk", "connect")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for case in CASES:
                for test, figure in run_case(case, Path(tmp), args).items():
                    rounds[(case, test)].append(figure)
    for (case, test), figures in rounds.items():
        figure, anchor = statistics.median(figures), statistics.median(rounds[("tcp", test)])
        print(json.dumps({"case": case, "test": test, "unit": "Mbit/s" if test == "bulk" else "connections/s",
                          "figure": round(figure, 1), "anchor": round(anchor, 1), "ratio": round(figure / anchor, 3),
                          "rounds": [round(f, 1) for f in figures], "mbytes": args.mbytes,
                          "cpu": cpu_model(), "source": source_version()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
