"""Bulk TCP between two stacks on a LoopbackNicPair: BULK_BYTES each way at once, SHA-256 checked,
on a clean link and on one that loses, reorders and duplicates frames (seeded).

Measured on this 2-core machine (both directions at once, figures are the sum):
clean 50 MB each way in about 3 s (about 30 MB/s); with 5 % loss, 2 % reordering
and 1 % duplication in both directions, about 10 s with the default settings
(Linux's 200 ms minimum RTO). Before the window-growth fix (8797a8d) that run
took about 72 s, and the test used a 50 ms minimum RTO to fit (31 s). Each test
prints its rate (pytest -s).
"""
import hashlib
import random
import threading
import time

import pytest

from stack import Impairment, LoopbackNicPair, NicOffloads, Shutdown, SocketType, Stack
from stack.tcp import TcpConfig

BULK_BYTES = 50_000_000  # each way, clean link
IMPAIRED_BYTES = 50_000_000  # each way, 5 % loss + 2 % reordering + 1 % duplication
OFFLOAD_BYTES = 10_000_000  # each way, with checksum offload on the NICs
CHUNK = 1 << 20
LOSS, REORDER, DUPLICATE = 0.05, 0.02, 0.01
# The defaults, as an application gets them (200 ms minimum RTO, like Linux).
LOSSY_CONFIG = TcpConfig()


def impairment(seed: int) -> Impairment:
    """Seeded loss, reordering and duplication for one direction of the pair."""
    rng = random.Random(seed)  # one direction is always driven under its stack's lock
    return Impairment(loss=lambda frame: rng.random() < LOSS,
                      duplicate=lambda frame: rng.random() < DUPLICATE,
                      reorder=lambda frame: rng.random() < REORDER)


def transfer_both_ways(pair: LoopbackNicPair, size: int, config: TcpConfig | None = None, deadline: float = 150.0):
    """Send ``size`` pseudo-random bytes each way at once; returns (seconds, client info, server info)."""
    a = Stack(pair.a, "10.0.0.1/24", tcp_config=config).start()
    b = Stack(pair.b, "10.0.0.2/24", tcp_config=config).start()
    try:
        lst = b.socket(SocketType.STREAM)
        lst.bind("0.0.0.0:5001")
        lst.listen(1)
        lst.set_timeout(30)
        client = a.socket(SocketType.STREAM)
        client.set_timeout(30)
        client.connect("10.0.0.2:5001")
        server, _ = lst.accept()
        data = {client: random.Random(1).randbytes(size), server: random.Random(2).randbytes(size)}
        got: dict = {}
        errors: list = []

        def send(sock):
            try:
                view = memoryview(data[sock])
                for i in range(0, size, CHUNK):
                    sock.sendall(view[i:i + CHUNK])
                sock.shutdown(Shutdown.WRITE)
            except OSError as exc:
                errors.append(exc)

        def receive(sock):
            digest, n = hashlib.sha256(), 0
            try:
                sock.set_timeout(30)  # no progress for 30 s is a failure, not a hang
                while chunk := sock.recv(CHUNK):
                    digest.update(chunk)
                    n += len(chunk)
            except OSError as exc:
                errors.append(exc)
            got[sock] = (n, digest.hexdigest())

        threads = [threading.Thread(target=f, args=(s,)) for f in (send, receive) for s in (client, server)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, started + deadline - time.monotonic()))
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads), f"not done after {deadline} s: {client.tcp_info()}"
        assert errors == []
        assert got[server] == (size, hashlib.sha256(data[client]).hexdigest()), "client -> server"
        assert got[client] == (size, hashlib.sha256(data[server]).hexdigest()), "server -> client"
        return elapsed, client.tcp_info(), server.tcp_info()
    finally:
        a.stop()
        b.stop()


def report(name: str, size: int, elapsed: float, *infos) -> None:
    retrans = "/".join(str(i.retransmits) for i in infos)
    timeouts = "/".join(str(i.timeouts) for i in infos)
    print(f"\n{name}: {size / 1e6:.0f} MB each way in {elapsed:.1f} s, {2 * size / elapsed / 1e6:.1f} MB/s total,"
          f" retransmits {retrans}, timeouts {timeouts}")


@pytest.mark.timeout(180)
def test_bulk_both_ways_on_a_clean_link():
    pair = LoopbackNicPair()
    try:
        elapsed, ci, si = transfer_both_ways(pair, BULK_BYTES)
    finally:
        pair.close()
    report("clean", BULK_BYTES, elapsed, ci, si)
    assert pair.a.counters["rx_drop_queue_full"] == 0 and pair.b.counters["rx_drop_queue_full"] == 0


@pytest.mark.timeout(300)
def test_bulk_both_ways_with_loss_reordering_and_duplication():
    pair = LoopbackNicPair()
    pair.a.impairment = impairment(1)
    pair.b.impairment = impairment(2)
    try:
        elapsed, ci, si = transfer_both_ways(pair, IMPAIRED_BYTES, LOSSY_CONFIG, deadline=240.0)
    finally:
        pair.close()
    report("5% loss, 2% reorder, 1% duplicate", IMPAIRED_BYTES, elapsed, ci, si)
    for nic in (pair.a, pair.b):
        assert nic.counters["tx_impaired_drop"] > 0.03 * IMPAIRED_BYTES / 1448
        assert nic.counters["tx_impaired_reorder"] > 0 and nic.counters["tx_impaired_duplicate"] > 0
    assert ci.retransmits > 0 and si.retransmits > 0


@pytest.mark.timeout(180)
def test_bulk_both_ways_with_checksum_offload():
    # b trusts the "hardware" (DATA_VALID); a checks every checksum a's peer left to its NIC.
    pair = LoopbackNicPair(offloads=NicOffloads.TX_CSUM)
    pair.b.offloads |= NicOffloads.RX_CSUM_TRUSTED
    offloaded = {"a": 0, "b": 0}

    def counting(nic, name):
        transmit = nic.transmit

        def wrapper(frames):
            frames = list(frames)
            offloaded[name] += sum(1 for _, meta in frames if meta is not None and meta.needs_csum)
            return transmit(frames)
        return wrapper

    pair.a.transmit = counting(pair.a, "a")
    pair.b.transmit = counting(pair.b, "b")
    try:
        elapsed, ci, si = transfer_both_ways(pair, OFFLOAD_BYTES)
    finally:
        pair.close()
    report("checksum offload", OFFLOAD_BYTES, elapsed, ci, si)
    segments = OFFLOAD_BYTES // 1448
    assert offloaded["a"] > segments and offloaded["b"] > segments, offloaded
