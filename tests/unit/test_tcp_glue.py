"""TcpLayer: demultiplexing, listeners, ports, RST replies, ICMP errors, the connection table."""
import errno
from ipaddress import IPv4Address

import pytest

from nicdev.virtio.offload import FrameMeta, complete_checksum
from stack.tcp.config import TcpConfig
from stack.tcp.glue import ANY, TcpLayer, format_table, icmp_is_hard
from stack.tcp.seq import IsnGenerator, PortAllocator
from stack.tcp.state import TcpState
from stack.testing.tcp_link import LayerPair
from stack.wire import MalformedPacket
from stack.wire.tcp import TcpFlags, TcpRepr

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")
S = TcpState


class Wire(LayerPair):
    """Two TcpLayers joined directly, logging (from, header) of everything that crossed."""

    def __init__(self, **kw):
        super().__init__(TcpLayer(isn=IsnGenerator(bytes(32)), ports=PortAllocator(key=bytes(32)), **kw),
                         TcpLayer(isn=IsnGenerator(bytes(range(32))), **kw))
        self.log = []

    def transmit(self, name, o, dst):
        self.log.append((name, o.header))
        super().transmit(name, o, dst)


def test_listen_connect_accept_transfer_close():
    w = Wire()
    port = w.b.bind(ANY, 80)
    lst = w.b.listen(ANY, port, backlog=5)
    client = w.a.connect(A, (B, 80), w.now)
    assert 32768 <= client.local[1] <= 60999
    w.exchange()
    server = w.b.accept(lst)
    assert server is not None and client.state is S.ESTABLISHED and server.local == (B, 80)
    client.send(b"hello over the glue")
    w.exchange()
    assert server.recv(100) == b"hello over the glue"
    client.close()
    w.exchange()
    assert server.eof
    server.close()
    w.exchange()
    assert client.state is S.TIME_WAIT and server.state is S.CLOSED
    assert len(w.b.connections()) == 0  # the finished one left the table
    w.advance(61)
    assert client.state is S.CLOSED and w.a.connections() == []


def test_syn_to_a_closed_port_is_refused():
    w = Wire()
    client = w.a.connect(A, (B, 81), w.now)
    w.exchange()
    assert client.state is S.CLOSED and client.error == errno.ECONNREFUSED
    rst = [h for who, h in w.log if who == "b"][0]
    assert rst.flags == TcpFlags.RST | TcpFlags.ACK and rst.seq == 0 and rst.ack == (client.iss + 1) & 0xFFFFFFFF
    assert w.b.counters["rx_no_socket"] == 1 and w.b.counters["tx_rst"] == 1


def _raw(layer, flags, sport=5555, dport=80, seq=1000, ack=0, src=A, dst=B, payload=b""):
    seg = TcpRepr(sport, dport, seq, ack, TcpFlags(flags), 1000).emit(payload, src, dst)
    layer.receive(src, dst, seg, 0.0)


def test_ack_to_a_listener_gets_a_reset_and_rst_gets_nothing():
    layer = TcpLayer()
    layer.listen(ANY, 80, 1)
    _raw(layer, TcpFlags.ACK, ack=4242)
    _raw(layer, TcpFlags.RST)
    _raw(layer, TcpFlags.RST, dport=99)
    _raw(layer, TcpFlags.FIN, dport=80)  # neither SYN nor ACK: dropped
    out = layer.poll(0.0)
    assert len(out) == 1 and out[0].header.flags == TcpFlags.RST and out[0].header.seq == 4242
    assert (out[0].src, out[0].dst) == (B, A) and out[0].owner is None


def test_syn_from_or_to_bad_addresses_is_dropped():
    layer = TcpLayer()
    lst = layer.listen(ANY, 80, 5)
    _raw(layer, TcpFlags.SYN, src=IPv4Address("224.0.0.1"))
    _raw(layer, TcpFlags.SYN, src=IPv4Address("0.0.0.0"))
    _raw(layer, TcpFlags.SYN, dst=IPv4Address("255.255.255.255"))
    seg = TcpRepr(5555, 80, 1, 0, TcpFlags.SYN, 1000).emit(b"", A, B)
    layer.receive(A, B, seg, 0.0, broadcast=True)  # sent to a broadcast MAC or address
    assert lst.embryonic == 0 and layer.poll(0.0) == []


def test_bad_checksum_raises_malformed_and_csum_valid_skips_it():
    layer = TcpLayer()
    layer.listen(ANY, 80, 5)
    seg = bytearray(TcpRepr(5555, 80, 1, 0, TcpFlags.SYN, 1000).emit(b"", A, B))
    seg[16] ^= 0xFF
    with pytest.raises(MalformedPacket) as exc:
        layer.receive(A, B, bytes(seg), 0.0)
    assert exc.value.reason == "tcp: bad checksum"
    layer.receive(A, B, bytes(seg), 0.0, csum_valid=True)  # the NIC vouched for it
    assert len(layer.connections()) == 1


def test_wildcard_listener_takes_syns_and_blocks_a_specific_bind():
    layer = TcpLayer()
    wild = layer.listen(ANY, 80, 5)
    with pytest.raises(OSError) as exc:  # binding B:80 beside a listening 0.0.0.0:80
        layer.bind(B, 80)
    assert exc.value.errno == errno.EADDRINUSE
    _raw(layer, TcpFlags.SYN)
    assert wild.embryonic == 1


def test_bind_rules():
    layer = TcpLayer(ports=PortAllocator((50000, 50001), key=bytes(32)))
    assert layer.bind(A, 8080) == 8080
    with pytest.raises(OSError):
        layer.bind(ANY, 8080)
    with pytest.raises(OSError):
        layer.bind(A, 70000)
    assert layer.bind(B, 8080) == 8080  # different specific addresses do not overlap
    p1 = layer.bind(A, 0)
    p2 = layer.bind(A, 0)
    assert {p1, p2} == {50000, 50001}
    with pytest.raises(OSError) as exc:
        layer.bind(A, 0)
    assert exc.value.errno == errno.EADDRNOTAVAIL
    layer.unbind(A, p1)
    assert layer.bind(A, 0) == p1


def test_connect_picks_distinct_ports_and_refuses_bad_peers():
    layer = TcpLayer()
    c1 = layer.connect(A, (B, 80), 0.0)
    c2 = layer.connect(A, (B, 80), 0.0)
    assert c1.local[1] != c2.local[1]
    for bad in ((B, 0), (IPv4Address("224.1.1.1"), 80), (IPv4Address("255.255.255.255"), 80)):
        with pytest.raises(OSError):
            layer.connect(A, bad, 0.0)
    port = layer.bind(A, 0)
    c3 = layer.connect(A, (B, 80), 0.0, local_port=port)
    assert c3.local == (A, port)
    with pytest.raises(OSError) as exc:
        layer.connect(A, (B, 80), 0.0, local_port=port)
    assert exc.value.errno == errno.EADDRINUSE


def test_reuse_addr_allows_binding_over_time_wait():
    w = Wire()
    w.b.listen(ANY, 80, 5)
    port = w.a.bind(A, 7000)
    client = w.a.connect(A, (B, 80), w.now, local_port=port)
    w.exchange()
    client.close()
    w.exchange()
    server = w.b.connections()[0]
    server.close()
    w.exchange()
    assert client.state is S.TIME_WAIT
    with pytest.raises(OSError):
        w.a.bind(A, 7000)
    assert w.a.bind(A, 7000, reuse_addr=True) == 7000


def test_time_wait_is_reopened_by_a_newer_syn():
    w = Wire()
    lst = w.b.listen(ANY, 80, 5)
    client = w.a.connect(A, (B, 80), w.now, local_port=w.a.bind(A, 7001))
    w.exchange()
    server = w.b.accept(lst)
    server.close()  # the server closes first: it holds TIME-WAIT
    w.exchange()
    client.close()
    w.exchange()
    assert server.state is S.TIME_WAIT
    w.advance(1.0)
    again = w.a.connect(A, (B, 80), w.now, local_port=w.a.bind(A, 7001, reuse_addr=True))
    w.exchange()
    assert again.state is S.ESTABLISHED and w.b.counters["time_wait_reopened"] == 1
    new_server = w.b.accept(lst)
    assert new_server is not None
    # RFC 1122 4.2.2.13: the new incarnation's ISN lies beyond the old SND.NXT.
    from stack.tcp.seq import seq_gt

    assert seq_gt(new_server.iss, server.snd.nxt & 0xFFFFFFFF)


def test_icmp_errors_reach_the_right_connection():
    layer = TcpLayer()
    conn = layer.connect(A, (B, 80), 0.0)
    layer.poll(0.0)  # the SYN goes out
    quoted = TcpRepr(conn.local[1], 80, conn.iss, 0, TcpFlags.SYN, 0).emit(b"", A, B)[:8]
    wrong_seq = TcpRepr(conn.local[1], 80, conn.iss + 5000, 0, TcpFlags.SYN, 0).emit(b"", A, B)[:8]
    assert not layer.icmp_error(A, B, wrong_seq, errno.ECONNREFUSED, hard=True)  # RFC 5927
    assert not layer.icmp_error(A, B, quoted[:4], errno.ECONNREFUSED, hard=True)
    assert not layer.icmp_error(A, IPv4Address("10.9.9.9"), quoted, errno.ECONNREFUSED, hard=True)
    assert layer.icmp_error(A, B, quoted, errno.EHOSTUNREACH, hard=False)
    assert conn.state is S.SYN_SENT  # soft: MUST-56
    assert layer.icmp_error(A, B, quoted, errno.ECONNREFUSED, hard=True)
    assert conn.state is S.CLOSED and conn.error == errno.ECONNREFUSED
    assert icmp_is_hard(3) and icmp_is_hard(2) and not any(icmp_is_hard(c) for c in (0, 1, 5))  # MUST-56


def test_fragmentation_needed_lowers_the_mss_and_resends():
    w = Wire()
    lst = w.b.listen(ANY, 80, 5)
    client = w.a.connect(A, (B, 80), w.now)
    w.exchange()
    w.b.accept(lst)
    client.send(b"m" * 3000)
    out = w.a.poll(w.now)  # sent, but "lost" on a smaller-MTU path
    assert [len(o.payload) for o in out] == [1448, 1448, 104]
    quoted = out[0].encode()[:8]
    assert w.a.icmp_error(A, B, quoted, errno.EMSGSIZE, mtu=1000)
    resent = w.a.poll(w.now)
    assert [len(o.payload) for o in resent] == [948, 948, 948, 156]
    assert client.stats["pmtu_reductions"] == 1 and client.cc.cwnd >= 10 * 948


def test_arp_failure_fails_an_opening_connection_at_once():
    layer = TcpLayer()
    conn = layer.connect(A, (B, 80), 0.0)
    out = layer.poll(0.0)
    out[0].owner.set_error(errno.EHOSTUNREACH)  # what the interface does when ARP gives up
    assert conn.state is S.CLOSED and conn.error == errno.EHOSTUNREACH


def test_partial_checksum_encoding_completes_to_a_valid_segment():
    layer = TcpLayer()
    layer.connect(A, (B, 80), 0.0)
    o = layer.poll(0.0)[0]
    seg, start, offset = o.encode(partial_checksum=True)
    done = complete_checksum(seg, FrameMeta(True, start, offset))
    assert done == o.encode()
    TcpRepr.parse(done, A, B)


def test_connection_table():
    w = Wire()
    lst = w.b.listen(ANY, 80, 5)
    client = w.a.connect(A, (B, 80), w.now)
    w.exchange()
    client.send(b"x" * 100)
    w.advance(0.1)  # the delayed ACK comes back
    rows = w.a.table()
    assert len(rows) == 1 and rows[0].state is S.ESTABLISHED and rows[0].bytes_acked == 100
    text = format_table(w.b.table(), w.b.listeners())
    assert "LISTEN" in text and "ESTABLISHED" in text and "10.0.0.2:80" in text and "cubic" in text
    assert w.b.listeners()[0].pending == 1
    w.b.close_listener(lst)
    w.exchange()
    assert client.state is S.CLOSED and client.error == errno.ECONNRESET  # queued, never accepted


def test_a_removed_connection_leaves_its_counters_behind():
    w = Wire()
    lst = w.b.listen(ANY, 80, 5)
    client = w.a.connect(A, (B, 80), w.now)
    w.exchange()
    w.b.accept(lst).abort()
    w.exchange()
    assert w.a.connections() == [] and w.b.connections() == []
    # Gone from the table, their resets are still counted (the monitor's tcp line shows them).
    assert w.b.counters["closed.rst_out"] == 1 and w.a.counters["closed.rst_in"] == 1
    assert client.state is S.CLOSED


def test_the_listen_line_shows_the_queues_and_the_listeners_counters():
    w = Wire()
    lst = w.b.listen(ANY, 80, 5)
    w.a.connect(A, (B, 80), w.now)
    w.exchange()
    w.b.accept(lst)
    (line,) = [ln for ln in format_table([], w.b.listeners()).splitlines() if ln.startswith("LISTEN")]
    assert line.split()[1:4] == ["0", "5", "0.0.0.0:80"]
    assert "syn-queue:0/8 accepted:1 established:1 syn_received:1" in line, line


def test_poll_at_tracks_the_earliest_timer():
    layer = TcpLayer(TcpConfig())
    assert layer.poll_at() is None
    layer.connect(A, (B, 80), 5.0)
    assert layer.poll_at() == 0.0
    layer.poll(5.0)
    assert layer.poll_at() == 6.0  # the SYN's retransmission


def test_ttl_is_configurable():  # MUST-49
    layer = TcpLayer(TcpConfig(ttl=7))
    layer.connect(A, (B, 80), 0.0)
    assert layer.poll(0.0)[0].ttl == 7
    conn = layer.connect(A, (B, 81), 0.0, config=TcpConfig(ttl=200))
    assert [o.ttl for o in layer.poll(0.0) if o.owner is conn] == [200]


def test_options_need_not_be_word_aligned():  # MUST-64
    layer = TcpLayer()
    lst = layer.listen(ANY, 80, 5)
    # SYN with options NOP, MSS 1000, WS 2, NOP, NOP, NOP: MSS starts at byte 21 and
    # the window scale right after it, no 32-bit alignment anywhere.
    opts = bytes([1, 2, 4, 0x03, 0xE8, 3, 3, 2, 1, 1, 1, 0])
    header = bytearray(20 + len(opts))
    header[0:2] = (5555).to_bytes(2, "big")
    header[2:4] = (80).to_bytes(2, "big")
    header[4:8] = (1234).to_bytes(4, "big")
    header[12] = ((20 + len(opts)) // 4) << 4
    header[13] = int(TcpFlags.SYN)
    header[14:16] = (4096).to_bytes(2, "big")
    header[20:] = opts
    from stack.wire.tcp import TcpSegment

    TcpSegment(header).fill_checksum(A, B)
    layer.receive(A, B, bytes(header), 0.0)
    child = layer.connections()[0]
    assert child.snd_mss == 1000 and child.snd.wscale == 2 and lst.embryonic == 1


def test_a_reset_connection_leaves_the_table_and_frees_its_port():
    w = Wire()
    lst = w.b.listen(ANY, 80, 5)
    port = w.a.bind(A, 7002)
    client = w.a.connect(A, (B, 80), w.now, local_port=port)
    w.exchange()
    w.b.accept(lst).abort()
    w.exchange()
    assert client.state is S.CLOSED and client.error == errno.ECONNRESET
    assert w.a.connections() == [] and w.b.connections() == []
    assert w.a.bind(A, 7002) == 7002


def test_syn_flood_does_not_lock_out_a_real_client():
    import random

    w = Wire(max_syn_backlog=4)
    lst = w.b.listen(ANY, 80, 16)
    rng = random.Random(3)
    for _ in range(2000):  # spoofed SYNs that never complete
        sport = rng.randrange(1024, 65536)
        seg = TcpRepr(sport, 80, rng.randrange(1 << 32), 0, TcpFlags.SYN, 1000, mss=1460)
        w.b.receive(IPv4Address("10.9.0.1"), B, seg.emit(b"", IPv4Address("10.9.0.1"), B), w.now)
    flood_replies = w.b.poll(w.now)  # cookie SYN-ACKs to the spoofed source, no state kept
    assert lst.embryonic == 4 and len(w.b.connections()) == 4
    assert len(flood_replies) >= 1990 and w.b.counters["tx_syn_cookie"] >= 1990  # (a few ports repeat)
    client = w.a.connect(A, (B, 80), w.now)
    w.exchange()
    assert client.state is S.ESTABLISHED
    server = w.b.accept(lst)
    assert server is not None and server.stats["from_syn_cookie"] == 1
    client.send(b"still serving")
    w.exchange()
    assert server.recv(100) == b"still serving"
