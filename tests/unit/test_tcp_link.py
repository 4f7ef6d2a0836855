"""Two connections on a simulated link: bulk data both ways, clean and impaired, checked by SHA-256.

Everything runs on a virtual clock with seeded randomness, so each case is
deterministic; the segments cross as real wire bytes (emit, then parse with
checksum verification).
"""
import hashlib
import random

import pytest

from stack.tcp.config import TcpConfig
from stack.tcp.state import TcpState
from stack.testing.tcp_link import LinkConfig, LinkPair

S = TcpState


def payload(n, seed):
    return random.Random(seed).randbytes(n)


def transfer(pair, up: bytes, down: bytes, max_time=600.0, read_every=None):
    """Send ``up`` client->server and ``down`` server->client at once; return what arrived."""
    server = pair.establish()
    client = pair.client
    state = {"up": 0, "down": 0, "next_read": 0.0}
    got_up, got_down = bytearray(), bytearray()

    def progress():
        if state["up"] < len(up):
            state["up"] += client.send(up[state["up"] : state["up"] + 65536])
        if state["down"] < len(down):
            state["down"] += server.send(down[state["down"] : state["down"] + 65536])
        if read_every is None or pair.now >= state["next_read"]:
            got_up.extend(server.recv(1 << 20))
            got_down.extend(client.recv(1 << 20))
            if read_every is not None:
                state["next_read"] = pair.now + read_every
        assert client.error is None and server.error is None, (client.error, server.error)
        return len(got_up) == len(up) and len(got_down) == len(down)

    if read_every is None:
        pair.run(progress, max_time=max_time)
    else:
        # The application wakes up on its own clock: let time pass between reads.
        deadline = pair.now + max_time
        while not progress():
            assert pair.now < deadline, "transfer did not finish"
            pair.advance(read_every)
    return server, bytes(got_up), bytes(got_down)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_clean_link_moves_megabytes_both_ways():
    pair = LinkPair(up=LinkConfig(delay=0.01), down=LinkConfig(delay=0.01))
    up, down = payload(4_000_000, 1), payload(4_000_000, 2)
    server, got_up, got_down = transfer(pair, up, down)
    assert sha(got_up) == sha(up) and sha(got_down) == sha(down)
    pair.run(lambda: pair.client.all_acked and server.all_acked)
    info = pair.client.info()
    assert info.retransmits == 0 and info.bytes_acked == len(up) and info.bytes_received == len(down)
    assert info.srtt == pytest.approx(0.02, rel=0.2)


IMPAIRED = dict(delay=0.01, loss=0.05, reorder=0.02, duplicate=0.01)


@pytest.mark.parametrize(
    "name,config",
    [
        ("cubic+sack", TcpConfig()),
        ("newreno+sack", TcpConfig(congestion="newreno")),
        ("newreno", TcpConfig(congestion="newreno", sack=False)),
        ("cubic no options", TcpConfig(sack=False, timestamps=False, window_scaling=False)),
    ],
)
def test_lossy_reordering_duplicating_link(name, config):
    pair = LinkPair(config, config, up=LinkConfig(**IMPAIRED), down=LinkConfig(**IMPAIRED), seed=7)
    up, down = payload(2_000_000, 3), payload(2_000_000, 4)
    server, got_up, got_down = transfer(pair, up, down)
    assert sha(got_up) == sha(up) and sha(got_down) == sha(down)
    assert pair.up.dropped > 50 and pair.down.dropped > 50
    assert pair.client.info().retransmits > 0 and server.info().retransmits > 0


def test_same_seed_same_run():
    def run():
        pair = LinkPair(up=LinkConfig(**IMPAIRED), down=LinkConfig(**IMPAIRED), seed=11)
        transfer(pair, payload(300_000, 5), b"")
        return pair.now, pair.client.info().retransmits

    assert run() == run()


def test_bottleneck_with_a_drop_tail_queue():
    link = dict(delay=0.01, rate=5e6, queue_bytes=60_000)
    for cc in ("cubic", "newreno"):
        cfg = TcpConfig(congestion=cc)
        pair = LinkPair(cfg, cfg, up=LinkConfig(**link), down=LinkConfig(delay=0.01))
        up = payload(5_000_000, 6)
        _, got_up, _ = transfer(pair, up, b"")
        assert got_up == up
        assert pair.up.dropped > 0  # slow start overran the queue: congestion control had work
        assert pair.now < 2.0  # 5 MB at 5 MB/s: at least half the link's capacity was used


def test_corrupted_segments_are_dropped_by_the_checksum_and_repaired():
    pair = LinkPair(up=LinkConfig(corrupt=0.02), down=LinkConfig(corrupt=0.02), seed=3)
    up = payload(1_000_000, 7)
    _, got_up, _ = transfer(pair, up, b"")
    assert got_up == up and pair.up.corrupted > 0


def test_slow_reader_closes_the_window_and_probing_keeps_going():
    cfg = TcpConfig(rcvbuf=20_000)
    pair = LinkPair(TcpConfig(), cfg, up=LinkConfig(delay=0.005), down=LinkConfig(delay=0.005))
    up = payload(300_000, 8)
    _, got_up, _ = transfer(pair, up, b"", read_every=0.5)
    assert got_up == up
    assert pair.now > 5.0  # the reader, not the link, set the pace
    assert pair.client.error is None and pair.client.info().timeouts == 0
    assert pair.client.stats["window_probes"] > 0  # the window closed and was probed


def test_lost_syn_and_syn_ack_are_retransmitted():
    dropped = {"syn": 0, "synack": 0}

    def drop_first_syn(seg, data):
        if seg.flags & 0x02 and not dropped["syn"]:
            dropped["syn"] += 1
            return True
        return False

    def drop_first_synack(seg, data):
        if seg.flags & 0x02 and not dropped["synack"]:
            dropped["synack"] += 1
            return True
        return False

    pair = LinkPair(up=LinkConfig(drop_filter=drop_first_syn), down=LinkConfig(drop_filter=drop_first_synack))
    server = pair.establish()
    assert dropped == {"syn": 1, "synack": 1}
    assert pair.now == pytest.approx(1.0 + 0.005 + 1.0 + 0.005, abs=0.05)  # two 1 s RTOs
    assert server.state is S.ESTABLISHED


def test_orderly_close_over_the_link():
    pair = LinkPair()
    server = pair.establish()
    pair.client.send(b"request")
    pair.client.shutdown_write()
    pair.run(lambda: server.eof and server.recv_queue == 0 or server.recv(100) == b"x")
    server.send(b"response")
    server.close()
    got = bytearray()

    def done():
        got.extend(pair.client.recv(100))
        return pair.client.eof and server.state is S.CLOSED

    pair.run(done)
    assert bytes(got) == b"response" and pair.client.state is S.TIME_WAIT
    pair.advance(61)
    assert pair.client.state is S.CLOSED


def test_simultaneous_close_over_the_link():
    pair = LinkPair()
    server = pair.establish()
    pair.client.close()
    server.close()
    pair.run(lambda: pair.client.state is S.TIME_WAIT and server.state is S.TIME_WAIT, max_time=5)
