"""Request/response through stack.ConnectionPool against a new connection per request, in one run.

Two stacks in this process on a LoopbackNicPair, an echo server (a thread per
connection) on the second. Cases, each for --seconds:

  connect-per-request  the anchor: connect, send 64 bytes, read the echo, close
  pool                 the same requests through a ConnectionPool (one thread)
  pool-4-threads       four threads sharing a ConnectionPool with max_per_host=2

Prints one JSON line per case: requests per second, the anchor's from the same
run and the ratio; with --rounds N (cases interleaved) the figure is the median.

    .venv/bin/python scripts/bench/pool_rr.py [--seconds 3] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CASES = ("connect-per-request", "pool", "pool-4-threads")
SERVER = "10.0.0.2:7"
REQUEST = bytes(64)


def echo_server(listener) -> None:
    def echo(conn):
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass  # the stack stopping at the end of the case

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def exchange(sock) -> None:
    sock.sendall(REQUEST)
    got = 0
    while got < len(REQUEST):
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("the echo server closed the connection")
        got += len(data)


def connect_per_request(a, seconds: float) -> int:
    from stack import SocketType

    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        with a.socket(SocketType.STREAM) as sock:
            sock.set_timeout(30)
            sock.connect(SERVER)
            exchange(sock)
        done += 1
    return done


def pooled(a, seconds: float, threads: int) -> int:
    from stack import ConnectionPool

    counts = [0] * threads
    end = time.perf_counter() + seconds

    def worker(i: int, pool) -> None:
        while time.perf_counter() < end:
            with pool.connection(SERVER) as sock:
                exchange(sock)
            counts[i] += 1

    with ConnectionPool(a, max_per_host=2, wait_timeout=30) as pool:
        workers = [threading.Thread(target=worker, args=(i, pool)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return sum(counts)


def run_case(case: str, seconds: float) -> float:
    from stack import LoopbackNicPair, SocketOption, SocketType, Stack

    pair = LoopbackNicPair()
    with Stack(pair.a, "10.0.0.1/24") as a, Stack(pair.b, "10.0.0.2/24") as b:
        listener = b.socket(SocketType.STREAM)
        listener.set_option(SocketOption.REUSE_ADDR, True)
        listener.bind("0.0.0.0:7")
        listener.listen(128)
        threading.Thread(target=echo_server, args=(listener,), daemon=True).start()
        start = time.perf_counter()
        if case == "connect-per-request":
            done = connect_per_request(a, seconds)
        else:
            done = pooled(a, seconds, 4 if case == "pool-4-threads" else 1)
        rate = done / (time.perf_counter() - start)
        listener.close()
    pair.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each case")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, interleaved; figures are medians")
    args = parser.parse_args()
    rounds: dict[str, list[float]] = {c: [] for c in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            rounds[case].append(run_case(case, args.seconds))
    anchor = statistics.median(rounds[CASES[0]])
    for case, figures in rounds.items():
        figure = statistics.median(figures)
        print(json.dumps({"case": case, "unit": "requests/s", "figure": round(figure, 1), "anchor": round(anchor, 1),
                          "ratio": round(figure / anchor, 3), "rounds": [round(f, 1) for f in figures],
                          "seconds": args.seconds, "cpu": cpu_model(), "source": source_version()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
