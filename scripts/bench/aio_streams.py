"""asyncio on the MultiOS stack (stack.aio) against the stack's blocking sockets, in one run:
what the asyncio transports cost over the socket API they are built on.

Two stacks in this process on a LoopbackNicPair (no device, no switch). Cases:

  sockets  the anchor: blocking STREAM sockets, one thread per side
  aio      stack.aio streams (StreamReader/StreamWriter) on one asyncio loop

Tests per case: bulk (client -> server, --mbytes in 64 KiB writes, Mbit/s
timed by the receiver from the first byte to the end), rr (64-byte request,
64-byte answer, one connection, round trips per second for --seconds) and
connect (connections opened and closed per second for --seconds). Prints one
JSON line per case and test with the anchor's figure from the same run and
the ratio; with --rounds N the figure is the median of interleaved rounds.

    .venv/bin/python scripts/bench/aio_streams.py [--mbytes 30] [--seconds 3] [--rounds 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from machine import cpu_model, source_version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CHUNK = 64 * 1024
MESSAGE = 64
PORT = 7000
CASES = ("sockets", "aio")
TESTS = ("bulk", "rr", "connect")
UNITS = {"bulk": "Mbit/s", "rr": "round trips/s", "connect": "connections/s"}


# -- the anchor: blocking sockets, a thread per side -----------------------------------------------

def _serve_blocking(lst, test: str) -> None:
    """The server side of one test, on its own thread: until its listener is closed."""
    while True:
        try:
            conn, _ = lst.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(1 << 20):
                if test == "rr":
                    conn.sendall(data)


def blocking_case(a, b, test: str, args) -> float:
    from stack import SocketType

    lst = b.socket(SocketType.STREAM)
    lst.bind(f"0.0.0.0:{PORT}")
    lst.listen(64)
    worker = threading.Thread(target=_serve_blocking, args=(lst, test), daemon=True)
    worker.start()
    try:
        return BLOCKING[test](a, args)
    finally:
        lst.close()
        worker.join(10)


def _connected(a):
    from stack import SocketType

    sock = a.socket(SocketType.STREAM)
    sock.set_timeout(30)
    sock.connect(f"10.0.0.2:{PORT}")
    return sock


def _blocking_bulk(a, args) -> float:
    from stack import Shutdown

    size = args.mbytes * 1_000_000 // CHUNK * CHUNK
    with _connected(a) as sock:
        start = time.perf_counter()
        payload = bytes(CHUNK)
        for _ in range(size // CHUNK):
            sock.sendall(payload)
        sock.shutdown(Shutdown.WRITE)
        sock.recv(1)  # the server's close: everything was read
        return size * 8 / (time.perf_counter() - start) / 1e6


def _blocking_rr(a, args) -> float:
    with _connected(a) as sock:
        done, start = 0, time.perf_counter()
        end = start + args.seconds
        request = bytes(MESSAGE)
        while time.perf_counter() < end:
            sock.sendall(request)
            got = 0
            while got < MESSAGE:
                got += len(sock.recv(MESSAGE - got))
            done += 1
        return done / (time.perf_counter() - start)


def _blocking_connect(a, args) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() < start + args.seconds:
        _connected(a).close()
        done += 1
    return done / (time.perf_counter() - start)


BLOCKING = {"bulk": _blocking_bulk, "rr": _blocking_rr, "connect": _blocking_connect}


# -- stack.aio: one loop for both sides ----------------------------------------------------------------

async def _serve_aio(reader, writer, answer: bool) -> None:
    while data := await reader.read(1 << 20):
        if answer:
            writer.write(data)
            await writer.drain()
    writer.close()
    await writer.wait_closed()


async def aio_case(a, b, test: str, args) -> float:
    import stack.aio

    server = await stack.aio.start_server(lambda r, w: _serve_aio(r, w, test == "rr"), None, PORT, stack=b)
    async with server:
        return await AIO[test](a, args)


async def _aio_bulk(a, args) -> float:
    import stack.aio

    size = args.mbytes * 1_000_000 // CHUNK * CHUNK
    reader, writer = await stack.aio.open_connection("10.0.0.2", PORT, stack=a)
    start = time.perf_counter()
    payload = bytes(CHUNK)
    for _ in range(size // CHUNK):
        writer.write(payload)
        await writer.drain()
    writer.write_eof()
    await reader.read()  # the server's close: everything was read
    rate = size * 8 / (time.perf_counter() - start) / 1e6
    writer.close()
    await writer.wait_closed()
    return rate


async def _aio_rr(a, args) -> float:
    import stack.aio

    reader, writer = await stack.aio.open_connection("10.0.0.2", PORT, stack=a)
    done, start = 0, time.perf_counter()
    request = bytes(MESSAGE)
    while time.perf_counter() < start + args.seconds:
        writer.write(request)
        await reader.readexactly(MESSAGE)
        done += 1
    rate = done / (time.perf_counter() - start)
    writer.close()
    await writer.wait_closed()
    return rate


async def _aio_connect(a, args) -> float:
    import stack.aio

    done, start = 0, time.perf_counter()
    while time.perf_counter() < start + args.seconds:
        _, writer = await stack.aio.open_connection("10.0.0.2", PORT, stack=a)
        writer.close()
        await writer.wait_closed()
        done += 1
    return done / (time.perf_counter() - start)


AIO = {"bulk": _aio_bulk, "rr": _aio_rr, "connect": _aio_connect}


def run_case(case: str, test: str, args) -> float:
    from stack import LoopbackNicPair, Stack

    pair = LoopbackNicPair()
    try:
        with Stack(pair.a, "10.0.0.1/24") as a, Stack(pair.b, "10.0.0.2/24") as b:
            if case == "sockets":
                return blocking_case(a, b, test, args)
            return asyncio.run(aio_case(a, b, test, args))
    finally:
        pair.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbytes", type=int, default=30, help="bulk transfer size (MB)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the rr and connect tests")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, interleaved; figures are medians")
    args = parser.parse_args()
    rounds: dict = {(c, t): [] for c in CASES for t in TESTS}
    for _ in range(args.rounds):
        for test in TESTS:
            for case in CASES:
                rounds[(case, test)].append(run_case(case, test, args))
    for (case, test), figures in rounds.items():
        figure, anchor = statistics.median(figures), statistics.median(rounds[("sockets", test)])
        print(json.dumps({"case": case, "test": test, "unit": UNITS[test], "figure": round(figure, 1),
                          "anchor": round(anchor, 1), "ratio": round(figure / anchor, 3),
                          "rounds": [round(f, 1) for f in figures], "mbytes": args.mbytes,
                          "seconds": args.seconds, "cpu": cpu_model(), "source": source_version()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
