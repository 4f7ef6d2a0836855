"""The sans-IO interface driven by hand: fake wire, fake clock (stack.testing.Link)."""
import errno
from ipaddress import IPv4Address as A

import pytest

from nicdev.virtio.offload import DATA_VALID, FrameMeta, complete_checksum
from stack.arp_cache import ArpCache
from stack.iface import Interface, MAX_UDP_PAYLOAD
from stack.ratelimit import KeyedRateLimiter
from stack.testing import IP_A, IP_B, MAC_A, MAC_B, Link
from stack.wire import (
    ArpOperation,
    ArpRepr,
    DestUnreachable,
    DestUnreachableCode,
    EchoReply,
    EchoRequest,
    EthernetRepr,
    EtherType,
    IpProtocol,
    Ipv4Repr,
    MacAddress,
    TimeExceeded,
    TimeExceededCode,
    UdpRepr,
    emit_icmpv4,
    error_payload,
    parse_icmpv4,
)

ANY = A("0.0.0.0")


def ip_frames(frames):
    """(Ipv4Repr, payload) of every IPv4 frame in ``frames``."""
    return [Ipv4Repr.parse(p) for eth, p in frames if eth.ethertype == EtherType.IPV4]


def arp_frames(frames):
    return [ArpRepr.parse(p) for eth, p in frames if eth.ethertype == EtherType.ARP]


def frame_to(dst_mac, ip: Ipv4Repr, payload: bytes, src_mac=MAC_A) -> bytes:
    return EthernetRepr(dst_mac, src_mac, EtherType.IPV4).emit(ip.emit(payload))


def udp_frame(payload=b"x", sport=1000, dport=53, src=IP_A, dst=IP_B, dst_mac=MAC_B, **ip_kw) -> bytes:
    udp = UdpRepr(sport, dport).emit(payload, src, dst)
    return frame_to(dst_mac, Ipv4Repr(src, dst, IpProtocol.UDP, len(udp), **ip_kw), udp)


def bound_socket(iface, port, ip=ANY):
    sock = iface.udp_open()
    iface.udp_bind(sock, ip, port)
    return sock


# -- start-up and ARP ------------------------------------------------------------
def test_gratuitous_arp_on_start():
    link = Link()
    link.a.start(link.now)
    link.exchange()
    (eth, payload), = link.take_a()
    assert eth.dst.is_broadcast and eth.ethertype == EtherType.ARP
    arp = ArpRepr.parse(payload)
    assert arp.operation == ArpOperation.REQUEST
    assert arp.sender_ip == arp.target_ip == IP_A and arp.sender_mac == MAC_A
    assert link.b.arp.lookup(IP_A, link.now) is None, "a gratuitous ARP only updates known entries"
    assert link.b_sent == [], "nobody answers an announcement"


def test_gratuitous_arp_updates_an_existing_entry():
    link = Link()
    new_mac = MacAddress("02:00:00:00:00:99")
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    announce = ArpRepr(ArpOperation.REQUEST, new_mac, IP_A, MacAddress(bytes(6)), IP_A).emit()
    link.b.receive_frame(EthernetRepr(MacAddress.broadcast(), new_mac, EtherType.ARP).emit(announce), 1.0)
    assert link.b.arp.lookup(IP_A, 1.0) == new_mac


def test_arp_resolution_then_queued_datagram_goes_out():
    link = Link()
    server = bound_socket(link.b, 53)
    client = link.a.udp_open()
    link.a.udp_send(client, b"query", (IP_B, 53), link.now)
    link.exchange()
    sent = link.take_a()
    request = arp_frames(sent)[0]
    assert (request.operation, request.target_ip, request.sender_ip) == (ArpOperation.REQUEST, IP_B, IP_A)
    reply, = arp_frames(link.take_b())
    assert (reply.operation, reply.sender_mac, reply.target_mac) == (ArpOperation.REPLY, MAC_B, MAC_A)
    (ip, _), = ip_frames(sent)
    assert ip.dst == IP_B
    data, source = server.pop()
    assert data == b"query" and source == (IP_A, client.local[1])
    assert link.b.arp.lookup(IP_A, link.now) == MAC_A, "the request taught b a's address"
    # Resolved now: the next datagram goes straight out, no ARP.
    link.a.udp_send(client, b"again", (IP_B, 53), link.now)
    link.exchange()
    assert arp_frames(link.take_a()) == []


def test_arp_retries_three_times_then_ehostunreach():
    link = Link(b_connected=False)
    sock = link.a.udp_open()
    link.a.udp_send(sock, b"hello?", (A("10.0.0.77"), 9), link.now)
    link.a.udp_send(sock, b"anyone?", (A("10.0.0.77"), 9), link.now)
    link.exchange()
    assert len(arp_frames(link.take_a())) == 1
    assert link.a.poll_at() == pytest.approx(1.0)
    link.advance(1.0)
    link.advance(1.0)
    assert len(arp_frames(link.take_a())) == 2, "retried 1 s apart"
    assert sock.error is None
    link.advance(1.0)
    assert arp_frames(link.take_a()) == [], "no fourth request"
    assert sock.error == errno.EHOSTUNREACH
    assert link.a.counters.get("arp", "resolution_failed") == 1
    assert link.a.counters.get("ipv4", "drop.neighbour unreachable") == 2
    assert link.a.poll_at() is None


def test_arp_entries_age_out_and_are_resolved_again():
    link = Link(a_kwargs={"arp_cache": ArpCache(reachable_time=30.0)})
    sock = link.a.udp_open()
    link.a.udp_send(sock, b"1", (IP_B, 9), link.now)
    link.exchange()
    assert len(arp_frames(link.take_a())) == 1
    link.advance(31.0)
    link.a.udp_send(sock, b"2", (IP_B, 9), link.now)
    link.exchange()
    assert len(arp_frames(link.take_a())) == 1, "aged out: asked again"


def test_a_steady_flow_keeps_its_arp_entry_without_queueing():
    # A flow that runs past the entry's reachable time: a unicast probe renews it in time,
    # so no packet waits behind a new broadcast request (and none is dropped for a full queue).
    link = Link(a_kwargs={"arp_cache": ArpCache(reachable_time=30.0, queue_len=1)})
    sock = link.a.udp_open()
    link.a.udp_send(sock, b"0", (IP_B, 9), link.now)
    link.exchange()
    assert len(arp_frames(link.take_a())) == 1  # the first resolution
    for n in range(1, 90):  # 45 s, a datagram every half second
        link.advance(0.5)
        link.a.udp_send(sock, b"%d" % n, (IP_B, 9), link.now)
        link.a.udp_send(sock, b"%d" % n, (IP_B, 9), link.now)  # two: a queue of one would overflow
        link.exchange()
    sent = link.take_a()
    probes = [(eth, arp) for eth, arp in ((e, ArpRepr.parse(p)) for e, p in sent if e.ethertype == EtherType.ARP)]
    assert probes and all(eth.dst == MAC_B and arp.operation == ArpOperation.REQUEST for eth, arp in probes)
    assert link.a.counters.get("arp", "tx_request") == 1  # never a broadcast again
    assert link.a.counters.get("arp", "tx_probe") == len(probes)
    assert link.a.counters.get("arp", "drop.queue full") == 0
    assert sum(e.ethertype == EtherType.IPV4 and e.dst == MAC_B for e, _ in sent) >= 2 * 89


def test_arp_request_for_other_hosts_is_ignored_and_bad_arp_counted():
    link = Link()
    ask = ArpRepr(ArpOperation.REQUEST, MAC_A, IP_A, MacAddress(bytes(6)), A("10.0.0.3")).emit()
    link.b.receive_frame(EthernetRepr(MacAddress.broadcast(), MAC_A, EtherType.ARP).emit(ask), 0.0)
    assert link.b.poll(0.0) == []
    # An ARP packet claiming b's own address from another MAC is a conflict, not learnt.
    claim = ArpRepr(ArpOperation.REPLY, MAC_A, IP_B, MAC_B, IP_B).emit()
    link.b.receive_frame(EthernetRepr(MAC_B, MAC_A, EtherType.ARP).emit(claim), 0.0)
    assert link.b.counters.get("arp", "address_conflict") == 1
    off_link = ArpRepr(ArpOperation.REQUEST, MAC_A, A("192.0.2.1"), MacAddress(bytes(6)), IP_B).emit()
    link.b.receive_frame(EthernetRepr(MacAddress.broadcast(), MAC_A, EtherType.ARP).emit(off_link), 0.0)
    assert link.b.counters.get("arp", "drop.sender not on link") == 1
    link.b.receive_frame(EthernetRepr(MAC_B, MAC_A, EtherType.ARP).emit(b"\x00\x01\x08\x00\x06\x04"), 0.0)
    assert link.b.counters.get("arp", "drop.truncated") == 1


# -- ICMP ------------------------------------------------------------------------
def test_echo_request_is_answered():
    link = Link()
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    echo = emit_icmpv4(EchoRequest(0x1234, 7, b"ping!"))
    link.b.receive_frame(frame_to(MAC_B, Ipv4Repr(IP_A, IP_B, IpProtocol.ICMP, len(echo)), echo), 0.0)
    (eth, payload), = [(e, p) for e, p in (EthernetRepr.parse(f) for f, _ in link.b.poll(0.0))]
    ip, icmp = Ipv4Repr.parse(payload)
    assert (ip.src, ip.dst, eth.dst) == (IP_B, IP_A, MAC_A)
    assert parse_icmpv4(icmp) == EchoReply(0x1234, 7, b"ping!")
    assert link.b.counters.get("icmpv4", "tx_echo_reply") == 1


def test_echo_to_broadcast_is_ignored():
    link = Link()
    echo = emit_icmpv4(EchoRequest(1, 1, b""))
    bcast = Ipv4Repr(IP_A, A("10.0.0.255"), IpProtocol.ICMP, len(echo))
    link.b.receive_frame(frame_to(MacAddress.broadcast(), bcast, echo), 0.0)
    assert link.b.poll(0.0) == []
    assert link.b.counters.get("icmpv4", "drop.echo to broadcast ignored") == 1


def test_port_unreachable_for_closed_port_quotes_the_datagram():
    link = Link()
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    frame = udp_frame(b"knock", sport=4000, dport=9)
    link.b.receive_frame(frame, 0.0)
    (eth, payload), = [EthernetRepr.parse(f) for f, _ in link.b.poll(0.0)]
    ip, icmp = Ipv4Repr.parse(payload)
    msg = parse_icmpv4(icmp)
    assert isinstance(msg, DestUnreachable) and msg.code == DestUnreachableCode.PORT
    assert msg.header == error_payload(frame[14:])
    assert link.b.counters.get("udp", "drop.no socket") == 1


def test_port_unreachable_is_rate_limited_per_sender():
    link = Link(b_kwargs={"icmp_rate_limiter": KeyedRateLimiter(burst=3, rate=1.0)})
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    for _ in range(10):
        link.b.receive_frame(udp_frame(dport=9), 0.0)
    assert len(link.b.poll(0.0)) == 3
    assert link.b.counters.get("icmpv4", "tx_error_rate_limited") == 7
    link.b.receive_frame(udp_frame(dport=9), 1.0)
    assert len(link.b.poll(1.0)) == 1, "one more token a second later"


def test_no_icmp_error_about_broadcasts_icmp_errors_or_fragments():
    link = Link()
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    # to the subnet broadcast, closed port
    link.b.receive_frame(udp_frame(dst=A("10.0.0.255"), dst_mac=MacAddress.broadcast()), 0.0)
    # unicast IP inside a link-level broadcast
    link.b.receive_frame(udp_frame(dst_mac=MacAddress.broadcast()), 0.0)
    # an ICMP error about something unknown must not trigger an error back
    err = emit_icmpv4(DestUnreachable(DestUnreachableCode.PORT, error_payload(udp_frame()[14:])))
    link.b.receive_frame(frame_to(MAC_B, Ipv4Repr(IP_A, IP_B, IpProtocol.ICMP, len(err)), err), 0.0)
    # an unknown ICMP type
    other = bytes([13, 0, 0, 0]) + bytes(16)
    link.b.receive_frame(frame_to(MAC_B, Ipv4Repr(IP_A, IP_B, IpProtocol.ICMP, len(other)), other), 0.0)
    assert link.b.poll(0.0) == []
    assert link.b.counters.get("udp", "drop.no socket") == 2
    assert link.b.counters.get("icmpv4", "drop.bad checksum") == 1, "the hand-made unknown type had no checksum"


def test_protocol_unreachable_for_a_protocol_the_stack_does_not_handle():
    link = Link()
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    seg = bytes(20)
    link.b.receive_frame(frame_to(MAC_B, Ipv4Repr(IP_A, IP_B, 132, len(seg)), seg), 0.0)  # SCTP
    (eth, payload), = [EthernetRepr.parse(f) for f, _ in link.b.poll(0.0)]
    msg = parse_icmpv4(Ipv4Repr.parse(payload)[1])
    assert isinstance(msg, DestUnreachable) and msg.code == DestUnreachableCode.PROTOCOL


def test_icmp_error_reaches_connected_socket_only():
    link = Link()
    connected = link.a.udp_open()
    link.a.udp_connect(connected, IP_B, 9)
    loose = link.a.udp_open()
    link.a.udp_send(connected, b"a", None, link.now)
    link.a.udp_send(loose, b"b", (IP_B, 9), link.now)
    link.exchange()
    assert connected.error == errno.ECONNREFUSED
    assert loose.error is None, "unconnected sockets do not hear ICMP errors (Linux without IP_RECVERR)"
    assert link.a.counters.get("udp", "icmp_error_ignored_unconnected") == 1


@pytest.mark.parametrize(
    "msg,expected",
    [
        (lambda q: DestUnreachable(DestUnreachableCode.HOST, q), errno.EHOSTUNREACH),
        (lambda q: DestUnreachable(DestUnreachableCode.NET, q), errno.ENETUNREACH),
        (lambda q: DestUnreachable(DestUnreachableCode.FRAG_NEEDED, q, 576), errno.EMSGSIZE),
        (lambda q: TimeExceeded(TimeExceededCode.TTL_EXPIRED, q), errno.EHOSTUNREACH),
    ],
)
def test_icmp_error_codes_map_to_errno(msg, expected):
    link = Link()
    sock = link.a.udp_open()
    link.a.udp_connect(sock, IP_B, 7000)
    quoted = error_payload(Ipv4Repr(IP_A, IP_B, IpProtocol.UDP, 8).emit(UdpRepr(sock.local[1], 7000).emit(b"", IP_A, IP_B)))
    err = emit_icmpv4(msg(quoted))
    link.a.receive_frame(frame_to(MAC_A, Ipv4Repr(IP_B, IP_A, IpProtocol.ICMP, len(err)), err, src_mac=MAC_B), 0.0)
    assert sock.error == expected


def test_icmp_error_with_garbage_quote_is_counted():
    link = Link()
    err = emit_icmpv4(DestUnreachable(DestUnreachableCode.PORT, b"\x60" + bytes(27)))
    link.a.receive_frame(frame_to(MAC_A, Ipv4Repr(IP_B, IP_A, IpProtocol.ICMP, len(err)), err, src_mac=MAC_B), 0.0)
    assert link.a.counters.get("icmpv4", "drop.bad quoted packet") == 1


# -- UDP delivery details -----------------------------------------------------------
def test_rx_csum_valid_skips_checksum_check():
    link = Link()
    sock = bound_socket(link.b, 53)
    bad = bytearray(udp_frame(b"payload"))
    bad[14 + 20 + 6] ^= 0xFF  # break the UDP checksum
    link.b.receive_frame(bytes(bad), 0.0, FrameMeta())
    assert sock.pop() is None
    assert link.b.counters.get("udp", "drop.bad checksum") == 1
    link.b.receive_frame(bytes(bad), 0.0, DATA_VALID)
    assert sock.pop()[0] == b"payload", "the NIC vouched for it (DATA_VALID)"


def test_tx_checksum_offload_hands_partial_checksum_to_nic():
    link = Link(a_kwargs={"tx_csum_offload": True})
    link.a.arp.learn(IP_B, MAC_B, 0.0, create=True)
    sock = link.a.udp_open()
    link.a.udp_send(sock, b"offloaded", (IP_B, 53), 0.0)
    (item,) = link.a.poll(0.0)
    frame, meta = item
    assert meta.needs_csum and meta.csum_start == 34 and meta.csum_offset == 6
    done = complete_checksum(frame, meta)
    ip, udp = Ipv4Repr.parse(done[14:])
    assert UdpRepr.parse(udp, ip.src, ip.dst)[1] == b"offloaded"


def test_receive_buffer_limit_drops_and_counts():
    link = Link()
    sock = bound_socket(link.b, 53)
    sock.rcvbuf = 300
    for _ in range(5):
        link.b.receive_frame(udp_frame(b"x" * 100), 0.0)
    assert sock.queued == 2, "accepted while below the limit (100+64 bytes charged each)"
    assert link.b.counters.get("udp", "drop.receive buffer full") == 3


def test_broadcast_needs_the_option_and_reaches_peer_and_self():
    link = Link()
    here = bound_socket(link.a, 67)
    there = bound_socket(link.b, 67)
    sender = link.a.udp_open()
    with pytest.raises(OSError) as exc:
        link.a.udp_send(sender, b"offer", (A("255.255.255.255"), 67), 0.0)
    assert exc.value.errno == errno.EACCES
    sender.broadcast = True
    link.a.udp_send(sender, b"offer", (A("10.0.0.255"), 67), 0.0)
    link.exchange()
    assert there.pop()[0] == b"offer"
    assert here.pop()[0] == b"offer", "broadcasts loop back to local sockets too"
    (eth, _), = link.take_a()
    assert eth.dst.is_broadcast
    assert link.b_sent == [], "no ICMP error about a broadcast"


# -- routes and loopback ----------------------------------------------------------------
def test_loopback_to_own_address_and_127_never_touches_the_nic():
    link = Link()
    server = bound_socket(link.a, 5000)
    client = link.a.udp_open()
    link.a.udp_send(client, b"to self", (IP_A, 5000), 0.0)
    link.a.udp_send(client, b"to lo", (A("127.0.0.1"), 5000), 0.0)
    assert link.a.poll_at() == 0.0
    link.exchange()
    assert link.a_sent == []
    assert server.pop() == (b"to self", (IP_A, client.local[1]))
    assert server.pop() == (b"to lo", (A("127.0.0.1"), client.local[1]))
    # a closed port on loopback gives port unreachable to a connected socket
    link.a.udp_connect(client, A("127.0.0.1"), 5001)
    link.a.udp_send(client, b"?", None, 0.0)
    link.exchange()
    assert client.error == errno.ECONNREFUSED
    assert link.a_sent == []


def test_packets_from_the_wire_to_127_or_from_our_address_are_dropped():
    link = Link()
    bound_socket(link.b, 53)
    link.b.receive_frame(udp_frame(dst=A("127.0.0.1")), 0.0)
    link.b.receive_frame(udp_frame(src=IP_B), 0.0)
    assert link.b.counters.get("ipv4", "drop.not for us") == 1
    assert link.b.counters.get("ipv4", "drop.bad source address") == 1


def test_gateway_route_arps_for_the_gateway():
    link = Link(a_kwargs={"gateway": "10.0.0.2"})
    sock = link.a.udp_open()
    link.a.udp_send(sock, b"far", (A("192.0.2.50"), 53), 0.0)
    link.exchange()
    sent = link.take_a()
    assert arp_frames(sent)[0].target_ip == IP_B
    (ip, _), = ip_frames(sent)
    assert ip.dst == A("192.0.2.50")
    assert link.b.counters.get("ipv4", "drop.not for us") == 1, "b does not forward"


def test_send_errors():
    link = Link()
    sock = link.a.udp_open()
    with pytest.raises(OSError) as exc:
        link.a.udp_send(sock, b"x", (A("192.0.2.1"), 53), 0.0)
    assert exc.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as exc:
        link.a.udp_send(sock, bytes(MAX_UDP_PAYLOAD + 1), (IP_B, 53), 0.0)
    assert exc.value.errno == errno.EMSGSIZE
    with pytest.raises(OSError) as exc:
        link.a.udp_send(sock, b"x", None, 0.0)
    assert exc.value.errno == errno.EDESTADDRREQ
    with pytest.raises(OSError) as exc:
        link.a.udp_send(sock, b"x", (IP_B, 0), 0.0)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        link.a.udp_bind(link.a.udp_open(), A("10.0.0.9"), 53)
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_interface_rejects_bad_configuration():
    with pytest.raises(ValueError):
        Interface(MAC_A, ["10.0.0.1/24"], mtu=40)
    with pytest.raises(ValueError):
        Interface(MAC_A, ["10.0.0.1/24"], gateway="10.9.9.9")


# -- fragmentation and reassembly ---------------------------------------------------------
def test_big_datagram_is_fragmented_and_reassembled_out_of_order():
    link = Link()
    link.a.arp.learn(IP_B, MAC_B, 0.0, create=True)
    server = bound_socket(link.b, 53)
    sock = link.a.udp_open()
    data = bytes(range(256)) * 32  # 8192 bytes
    link.a.udp_send(sock, data, (IP_B, 53), 0.0)
    link.a_filter = lambda frames: list(reversed(frames))
    link.exchange()
    frames = link.take_a()
    assert len(frames) == 6 and all(len(p) <= 1500 for _, p in frames)
    assert server.pop() == (data, (IP_A, sock.local[1]))
    assert link.b.counters.get("ipv4", "reassembled") == 1


def test_dont_fragment_too_big_is_emsgsize():
    link = Link()
    route = link.a.routes.lookup(IP_B)
    with pytest.raises(OSError) as exc:
        link.a._send_ip(route, IP_B, IpProtocol.UDP, bytes(3000), 0.0, dont_frag=True)
    assert exc.value.errno == errno.EMSGSIZE


def test_lost_fragment_times_out_with_icmp_time_exceeded():
    link = Link()
    link.a.arp.learn(IP_B, MAC_B, 0.0, create=True)
    bound_socket(link.b, 53)
    sock = link.a.udp_open()
    link.a.udp_send(sock, bytes(4000), (IP_B, 53), 0.0)
    link.a_filter = lambda frames: frames[:-1]  # lose the last fragment
    link.exchange()
    link.a_filter = None
    link.take_b()
    deadline = link.b.poll_at()
    assert deadline == pytest.approx(30.0), "reassembly timer drives poll_at"
    link.advance(30.0)
    (ip, icmp), = ip_frames(link.take_b())
    msg = parse_icmpv4(icmp)
    assert isinstance(msg, TimeExceeded) and msg.code == TimeExceededCode.FRAG_REASSEMBLY
    assert link.b.counters.get("ipv4", "reassembly_timeout") == 1


# -- layer filters -------------------------------------------------------------------------
def test_frames_for_other_macs_and_unknown_ethertypes_are_counted():
    link = Link()
    link.b.receive_frame(udp_frame(dst_mac=MacAddress("02:00:00:00:00:99")), 0.0)
    link.b.receive_frame(EthernetRepr(MAC_B, MAC_A, EtherType.IPV6).emit(bytes(40)), 0.0)
    link.b.receive_frame(EthernetRepr(MAC_B, MacAddress("01:00:00:00:00:01"), EtherType.IPV4).emit(bytes(40)), 0.0)
    assert link.b.counters.get("ethernet", "drop.not for us") == 1
    assert link.b.counters.get("ethernet", "drop.unknown ethertype") == 1
    assert link.b.counters.get("ethernet", "drop.multicast source") == 1


def test_malformed_ipv4_counted_by_reason():
    link = Link()
    good = bytearray(udp_frame())
    bad_csum = bytes(good[:24]) + bytes([good[24] ^ 0xFF]) + bytes(good[25:])
    link.b.receive_frame(bad_csum, 0.0)
    link.b.receive_frame(bytes(good[:20]), 0.0)
    link.b.receive_frame(b"\x01", 0.0)
    c = link.b.counters
    assert c.get("ipv4", "drop.bad checksum") == 1
    assert c.get("ipv4", "drop.truncated") == 1
    assert c.get("ethernet", "drop.truncated") == 1
    assert c.drops("iface") == 0


def test_no_time_exceeded_for_an_incomplete_broadcast_datagram():
    link = Link()
    link.b.arp.learn(IP_A, MAC_A, 0.0, create=True)
    bcast = A("10.0.0.255")
    first = Ipv4Repr(IP_A, bcast, IpProtocol.UDP, 16, ident=9, more_frags=True)
    link.b.receive_frame(frame_to(MacAddress.broadcast(), first, bytes(16)), 0.0)
    assert link.b.poll_at() == pytest.approx(30.0)
    assert link.b.poll(30.0) == []
    assert link.b.counters.get("ipv4", "reassembly_timeout") == 1
