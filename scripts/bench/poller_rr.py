"""One message at a time through an echo server waiting in stack.socket_api.Poller (as the
service loop of `mnet stack --serve` waits), against a blocking echo thread, in one run.

Two stacks in this process on a LoopbackNicPair; the client on the first sends
100 bytes and reads them back, again and again, from an echo server on the
second. Cases, each for --seconds:

  blocking  the anchor: the server's thread blocks in recv() on its socket
  poller    the server's thread waits in a Poller (non-blocking socket), so each
            message costs a wake-up of the Poller by the socket's change

Prints one JSON line per case: milliseconds per round trip (median over the
round trips), the anchor's from the same run and the ratio; with --rounds N
(cases interleaved) the figure is the median of the rounds.

    .venv/bin/python scripts/bench/poller_rr.py [--seconds 2] [--rounds 3]
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

from stack import LoopbackNicPair, PollEvent, SocketType, Stack  # noqa: E402
from stack.socket_api import Poller  # noqa: E402

CASES = ("blocking", "poller")
MESSAGE = bytes(100)
POLL_MS = 100  # how long one wait of the Poller lasts before it looks at the stop flag


def echo_blocking(conn, stop: threading.Event) -> None:
    try:
        while data := conn.recv(4096):
            conn.sendall(data)
    except OSError:
        pass  # closed at the end of the case


def echo_poller(conn, stop: threading.Event) -> None:
    conn.set_nonblocking(True)
    poller = Poller()
    poller.register(conn, PollEvent.READ)
    try:
        while not stop.is_set():
            for sock, _ in poller.poll(POLL_MS):
                data = sock.recv(4096)
                if not data:
                    return
                sock.sendall(data)  # (100 bytes: the send buffer always has room)
    except OSError:
        pass  # closed at the end of the case
    finally:
        poller.close()


def measure(a: Stack, listener, serve, seconds: float) -> float:
    """Median milliseconds per round trip for ``seconds``."""
    client = a.socket(SocketType.STREAM)
    client.set_timeout(10.0)
    client.connect(("10.0.0.2", 7))
    conn, _ = listener.accept()
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(conn, stop), daemon=True)
    server.start()
    trips = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        client.sendall(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            data = client.recv(4096)
            if not data:
                raise ConnectionError("the echo server closed the connection")
            got += len(data)
        trips.append((time.monotonic() - start) * 1000.0)
    stop.set()
    client.close()
    server.join(5)
    conn.close()
    return statistics.median(trips)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24").start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    listener = b.socket(SocketType.STREAM)
    listener.bind(("10.0.0.2", 7))
    listener.listen(8)
    serves = {"blocking": echo_blocking, "poller": echo_poller}
    rounds: dict[str, list[float]] = {case: [] for case in CASES}
    try:
        for _ in range(args.rounds):
            for case in CASES:
                rounds[case].append(measure(a, listener, serves[case], args.seconds))
    finally:
        listener.close()
        a.stop()
        b.stop()
        pair.close()
    anchor = statistics.median(rounds["blocking"])
    for case in CASES:
        figure = statistics.median(rounds[case])
        print(json.dumps({"case": case, "unit": "ms/round trip (median)", "figure": round(figure, 3),
                          "anchor": round(anchor, 3), "ratio": round(figure / anchor, 2),
                          "rounds": [round(f, 3) for f in rounds[case]], "seconds": args.seconds,
                          "cpu": cpu_model(), "source": source_version()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
