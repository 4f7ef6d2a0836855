"""The payload per segment leaves room for the options the segment carries.

The MSS counts data only (RFC 9293 3.7.1, RFC 6691): timestamps and SACK
blocks take from it. ``snd_mss`` allows for the timestamps every segment
carries; SACK blocks come and go with out-of-order data, so the engine takes
their bytes off for each segment it builds (as Linux's tcp_current_mss):
new data, retransmissions and TSO segments, whose pieces all repeat the
options. Every check here is on wire bytes: a segment is emitted and its
length compared with MSS + 20 (TCP header + options + payload) and the MTU.
"""
import hashlib
import random
from ipaddress import IPv4Address

import pytest

from stack.tcp.config import TcpConfig
from stack.tcp.glue import ANY, TcpLayer
from stack.tcp.seq import IsnGenerator, PortAllocator
from stack.tcp.testing import CLIENT, SERVER, established_driver, plain_config
from stack.testing.tcp_link import LayerPair, LinkConfig, LinkPair

MSS = 1460  # both ends: a 1500-byte MTU
SRC, DST = CLIENT[0], SERVER[0]


def wire_len(seg, payload) -> int:
    """TCP header + options + payload, as emitted."""
    return len(seg.emit(payload, SRC, DST))


def data_segments(d):
    return [(s, p) for s, p in d.poll() if p]


def driver_with_ooo(blocks: int, timestamps=True, peer_mss=MSS, gap=1000, size=100):
    """An established connection holding ``blocks`` disjoint out-of-order blocks from the peer."""
    d = established_driver(plain_config(sack=True, timestamps=timestamps, sndbuf=200_000), peer_mss=peer_mss)
    for k in range(blocks):
        d.feed(".", seq=1 + gap * (k + 1), ack=1, data=b"o" * size)
    assert len(d.conn.rx.ooo) == blocks
    d.poll()  # the dupACKs
    return d


@pytest.mark.parametrize("timestamps", [True, False], ids=["ts", "no-ts"])
@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
def test_full_segments_shrink_by_the_sack_blocks_they_carry(blocks, timestamps):
    d = driver_with_ooo(blocks, timestamps)
    base = MSS - 12 if timestamps else MSS
    assert d.conn.snd_mss == base
    sent_blocks = min(blocks, 3 if timestamps else 4)  # what fits in 40 option bytes
    expected = base - (4 + 8 * sent_blocks)
    d.conn.send(b"d" * (5 * base))
    out = data_segments(d)
    assert len(out) >= 5
    for seg, payload in out[:-1]:
        assert len(seg.sack_blocks) == sent_blocks
        assert len(payload) == expected, "a full segment is the MSS less every option it carries"
        assert wire_len(seg, payload) == MSS + 20, "exactly what the peer's MSS allows"
    assert all(wire_len(s, p) <= MSS + 20 and 20 + wire_len(s, p) <= 1500 for s, p in out)


def test_segments_grow_back_to_full_size_when_the_holes_are_filled():
    d = driver_with_ooo(2)  # the peer's 1001-1101 and 2001-2101
    c = d.conn
    c.send(b"a" * 3 * 1448)
    assert [len(p) for _, p in data_segments(d)][:2] == [1448 - 20, 1448 - 20]
    d.feed(".", seq=1, ack=1, data=b"f" * 1000)  # fills the first hole: one block left
    assert len(c.rx.ooo) == 1
    d.feed(".", seq=1101, ack=c.snd.nxt - c.iss)  # all acknowledged: room in cwnd
    c.send(b"b" * 3 * 1448)
    out = data_segments(d)
    assert [len(s.sack_blocks) for s, _ in out] == [1] * len(out)
    assert [len(p) for _, p in out][:3] == [1448 - 12] * 3
    d.feed(".", seq=1101, ack=c.snd.nxt - c.iss, data=b"f" * 900)  # the second hole
    assert not c.rx.ooo
    c.send(b"c" * 3 * 1448)
    out = data_segments(d)
    assert [len(p) for _, p in out][:3] == [1448] * 3 and all(not s.sack_blocks for s, _ in out)
    assert all(wire_len(s, p) == MSS + 20 for s, p in out[:3])


def test_a_dsack_goes_on_one_segment_and_the_next_is_full_again():
    d = established_driver(plain_config(sack=True, timestamps=True, sndbuf=200_000), peer_mss=MSS)
    d.feed(".", seq=1, ack=1, data=b"x" * 100)
    d.poll()
    d.feed(".", seq=1, ack=1, data=b"x" * 100)  # a duplicate: reported by D-SACK (RFC 2883)
    d.conn.send(b"y" * 3 * 1448)
    out = data_segments(d)
    assert [len(s.sack_blocks) for s, _ in out] == [1, 0, 0, 0]
    assert [len(p) for _, p in out] == [1448 - 12, 1448, 1448, 12]
    assert all(wire_len(s, p) <= MSS + 20 for s, p in out)


def next_timer(d):
    """Move to the connection's next timer; what it sent then."""
    d.now = d.conn.poll_at()
    return [(s, p) for s, p in d.poll() if p]


def test_retransmissions_are_cut_to_the_room_the_sack_blocks_leave():
    d = established_driver(plain_config(sack=True, timestamps=True, sndbuf=200_000), peer_mss=MSS)
    c = d.conn
    c.send(b"r" * 3 * 1448)
    assert [len(p) for _, p in data_segments(d)] == [1448] * 3  # sent before anything was out of order
    # Then the peer's data arrives with holes: our segments carry two SACK
    # blocks from here on, so the 1448-byte segments no longer fit as sent.
    d.feed(".", seq=1001, ack=1, data=b"o" * 100)
    d.feed(".", seq=3001, ack=1, data=b"o" * 100)
    d.poll()

    def brief(segs):
        return [(d.brief(s, p).split(" ts=")[0], len(s.sack_blocks), wire_len(s, p)) for s, p in segs]

    # The tail loss probe resends the last segment: in two pieces.
    assert brief(next_timer(d)) == [
        ("[.] seq=2897 ack=1 win=65535 len=1428", 2, MSS + 20),
        ("[P.] seq=4325 ack=1 win=65535 len=20", 2, 20 + 12 + 20 + 20),
    ]
    # The RTO resends from SND.UNA, one cut-down segment (cwnd is one MSS)...
    assert brief(next_timer(d)) == [("[.] seq=1 ack=1 win=65535 len=1428", 2, MSS + 20)]
    assert c.stats["timeouts"] == 1 and c.stats["tlp_probes"] == 1
    # ... and the rest as the ACKs come back, cut the same way.
    d.feed(".", seq=1, ack=1429)
    assert brief(d.poll()) == [
        ("[.] seq=1429 ack=1 win=65535 len=1428", 2, MSS + 20),
        ("[.] seq=2857 ack=1 win=65535 len=1428", 2, MSS + 20),
    ]
    d.feed(".", seq=1, ack=2857)
    assert brief(d.poll()) == [("[P.] seq=4285 ack=1 win=65535 len=60", 2, 20 + 12 + 20 + 60)]


def test_the_floor_is_eight_bytes_at_the_smallest_mss():
    # A peer MSS below 48 is raised to 48 (Linux's tcp_min_snd_mss), which is
    # 40 bytes of options and 8 of data: timestamps + 3 SACK blocks fill the 40.
    for peer_mss in (48, 20):
        d = driver_with_ooo(3, peer_mss=peer_mss, gap=100, size=10)
        assert d.conn.snd_mss == 48 - 12
        d.conn.send(b"z" * 100)
        out = data_segments(d)
        assert out and all(len(s.sack_blocks) == 3 for s, _ in out)
        assert [len(p) for _, p in out[:5]] == [8] * 5
        assert all(s.header_len == 60 and wire_len(s, p) <= 48 + 20 for s, p in out)


# -- TSO: the pieces repeat the options -----------------------------------------------------


class Layers(LayerPair):
    """Two TcpLayers joined directly; TSO segments are cut as the NIC would (split)."""

    def __init__(self, config: TcpConfig):
        super().__init__(TcpLayer(config, isn=IsnGenerator(bytes(32)), ports=PortAllocator(key=bytes(32))),
                         TcpLayer(config, isn=IsnGenerator(bytes(range(32)))))
        self.drop = None  # callable(name, piece) -> True to lose it
        self.sent = {"a": [], "b": []}  # OutSegments as polled (before the cut)
        self.pieces = 0

    def transmit(self, name, o, dst):
        self.sent[name].append(o)
        for piece in o.split():
            self.pieces += 1
            wire = piece.encode()
            n = len(wire)
            assert n <= MSS + 20 and 20 + n <= 1500, f"{name}: a {n}-byte piece (gso_size {o.gso_size})"
            if self.drop is None or not self.drop(name, piece):
                dst.receive(piece.src, piece.dst, wire, self.now)


def test_tso_segments_carrying_sack_blocks_are_cut_into_pieces_that_fit():
    w = Layers(TcpConfig(tso_max=65000))
    lst = w.b.listen(ANY, w.b.bind(ANY, 80), backlog=1)
    client = w.a.connect(IPv4Address("10.0.0.1"), (IPv4Address("10.0.0.2"), 80), w.now)
    w.exchange()
    server = w.b.accept(lst)
    assert server is not None and client.snd_mss == server.snd_mss == 1448

    # The first piece of a's data is lost: b holds the rest out of order.
    w.drop = lambda name, piece: name == "a" and len(piece.payload) and (piece.header.seq - client.iss) & 0xFFFFFFFF == 1
    client.send(b"u" * 5000)
    w.exchange()
    w.drop = None
    assert len(server.rx.ooo) == 1 and server.stats["retransmits"] == 0

    mark = len(w.sent["b"])
    server.send(b"v" * 40_000)
    w.exchange()
    tso = [o for o in w.sent["b"][mark:] if o.gso_size]
    assert tso, "b sent TSO segments"
    first = tso[0]
    assert len(first.header.sack_blocks) == 1
    assert first.gso_size == 1448 - 12, "each piece's payload leaves room for the SACK block"
    assert len(first.payload) % first.gso_size == 0 and len(first.payload) > first.gso_size

    # The hole is repaired: SACK blocks go away and the pieces are full MSS again.
    w.advance(2.0)
    assert client.all_acked and not server.rx.ooo and server.recv(10_000) == b"u" * 5000
    mark = len(w.sent["b"])
    server.send(b"w" * 40_000)
    w.exchange()
    tso = [o for o in w.sent["b"][mark:] if o.gso_size]
    assert tso and all(o.gso_size == 1448 and not o.header.sack_blocks for o in tso)
    assert client.recv(200_000) == b"v" * 40_000 + b"w" * 40_000


# -- a whole transfer -----------------------------------------------------------------------


def test_lossy_bidirectional_transfer_never_exceeds_the_mss():
    """Data both ways with loss: the receivers hold out-of-order data much of
    the time, so full-size data segments carry SACK blocks; none is too big."""
    link = dict(delay=0.005, loss=0.03, reorder=0.02)
    pair = LinkPair(up=LinkConfig(**link), down=LinkConfig(**link), seed=5)
    pair.keep_trace = True
    server = pair.establish()
    client = pair.client
    rnd = random.Random(9)
    up, down = rnd.randbytes(400_000), rnd.randbytes(400_000)
    pos = {"up": 0, "down": 0}
    got_up, got_down = bytearray(), bytearray()

    def progress():
        pos["up"] += client.send(up[pos["up"] : pos["up"] + 65536])
        pos["down"] += server.send(down[pos["down"] : pos["down"] + 65536])
        got_up.extend(server.recv(1 << 20))
        got_down.extend(client.recv(1 << 20))
        return len(got_up) == len(up) and len(got_down) == len(down)

    pair.run(progress, max_time=300)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()

    sizes = [(seg.header_len + n, len(seg.sack_blocks), n) for _, _, seg, n in pair.trace]
    assert max(total for total, _, _ in sizes) <= MSS + 20
    with_sack = [n for total, blocks, n in sizes if blocks and n]
    assert len(with_sack) > 20, "data segments carried SACK blocks"
    assert max(with_sack) < 1448
    assert max(n for total, blocks, n in sizes if not blocks) == 1448, "without SACK blocks: full size"
