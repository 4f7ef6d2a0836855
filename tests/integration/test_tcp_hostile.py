"""Hostile TCP input to the MultiOS stack: bad checksums, impossible flags,
blind in-window and out-of-window RST/SYN/data/ACK, SYN floods and forged
SYN-cookie ACKs. The stack must drop and count, answer exactly as RFC 9293
and RFC 5961 say, and keep serving its real clients.

One lab for the module: a switch on a thread of this process with
  port "stack"     vhost-user -> a MultiOS Stack on its VirtioNetNic    10.0.0.9
                   serving TCP echo on ports 7 and 80
  port "host"      TAP into a namespace this module creates: the Linux
                   kernel, the real client                              10.0.0.254
  port "attacker"  an in-process port (AttackerPort) that injects
                   hand-built frames at the switch and, as a capture port,
                   sees a copy of every frame the switch forwards. It
                   answers ARP for its own address                      10.0.0.66
"""
from __future__ import annotations

import random
import threading
import time
from ipaddress import IPv4Address

import pytest

from nicdev.net.port import Port
from support.tcplab import HOST_IP, STACK_IP, WAIT, KernelProgram, StackLab, assert_stack_healthy, kernel_run
from support.waiting import wait_for

pytestmark = pytest.mark.integration

ATTACKER_IP = "10.0.0.66"
ATTACKER_MAC = "02:66:66:66:66:66"
ECHO_PORT = 7
FLOOD_PORT = 80
FLOOD_BACKLOG = 8


# -- the attacker's port ---------------------------------------------------------------------------

class AttackerPort(Port):
    """Injects frames into the switch and records every frame it is given
    (its own and, as a capture port, everyone's). Answers ARP for its IP."""

    kind = "attacker"
    captures_all = True

    def __init__(self, name: str, mac: str, ip: str) -> None:
        super().__init__(name)
        from stack.wire import MacAddress

        self.mac = MacAddress(mac)
        self.ip = IPv4Address(ip)
        # Appended on the loop thread, read by the test's (list.append is atomic).
        # This module moves little data, so the whole capture is kept.
        self.frames: list[bytes] = []
        self.loop = None

    def start(self, loop) -> None:
        self.loop = loop

    def transmit(self, frame: bytes, meta=None) -> bool:
        from stack.wire import ArpOperation, ArpRepr, EthernetRepr, EtherType

        self.counters.tx_frames += 1
        self.frames.append(bytes(frame))
        if len(frame) >= 42 and frame[12:14] == b"\x08\x06":
            arp = ArpRepr.parse(frame[14:])
            if arp.operation == ArpOperation.REQUEST and arp.target_ip == self.ip:
                reply = ArpRepr(ArpOperation.REPLY, self.mac, self.ip, arp.sender_mac, arp.sender_ip)
                out = EthernetRepr(arp.sender_mac, self.mac, EtherType.ARP).emit(reply.emit(), pad=True)
                # Not from inside the switch's own call: on the loop's next turn.
                self.loop.call_later(0, lambda: self.deliver(out))
        return True

    def inject(self, frames: list[bytes]) -> None:
        """Called on the loop thread (through BackgroundSwitch.call)."""
        for frame in frames:
            self.deliver(frame)


def parse(frame: bytes):
    """(Ipv4Repr, TcpRepr, payload) of a TCP/IPv4 frame, else None."""
    from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr, MalformedPacket, TcpRepr

    try:
        eth, rest = EthernetRepr.parse(frame)
        if eth.ethertype != EtherType.IPV4:
            return None
        ip, payload = Ipv4Repr.parse(rest)
        if ip.protocol != IpProtocol.TCP:
            return None
        seg, data = TcpRepr.parse(payload, ip.src, ip.dst, verify_checksum=False)
    except MalformedPacket:
        return None
    return ip, seg, bytes(data)


class Attacker:
    """Builds segments and looks at what came back, from the test's thread."""

    def __init__(self, lab, port: AttackerPort) -> None:
        self.lab, self.port = lab, port
        self.stack_mac = lab.nic.mac

    def frame(self, seg, payload: bytes = b"", *, src: str = ATTACKER_IP, bad_tcp_checksum: bool = False,
              bad_ip_checksum: bool = False) -> bytes:
        from stack.wire import EthernetRepr, EtherType, IpProtocol, Ipv4Repr

        src_ip, dst_ip = IPv4Address(src), IPv4Address(STACK_IP)
        tcp = bytearray(seg.emit(payload, src_ip, dst_ip))
        if bad_tcp_checksum:
            tcp[16] ^= 0x5A
        ip = bytearray(Ipv4Repr(src_ip, dst_ip, IpProtocol.TCP, len(tcp), ident=random.randrange(65536)).emit(bytes(tcp)))
        if bad_ip_checksum:
            ip[10] ^= 0x5A
        return EthernetRepr(self.stack_mac, self.port.mac, EtherType.IPV4).emit(bytes(ip), pad=True)

    def send(self, *frames: bytes) -> None:
        self.lab.bg.call(lambda: self.port.inject(list(frames)))

    def send_paced(self, frames: list[bytes], burst: int = 50) -> None:
        """Send in bursts the stack's receive ring can hold (256 entries), each
        after the stack has taken the one before: nothing is lost on the way."""
        nic = self.lab.nic
        for i in range(0, len(frames), burst):
            part = frames[i:i + burst]
            target = nic.counters["rx_frames"] + len(part)
            self.send(*part)
            wait_for(lambda: nic.counters["rx_frames"] >= target, timeout=WAIT, what=f"the stack taking frames {i}..{i + len(part)}")

    def mark(self) -> int:
        """A position in the capture: what comes after it is new."""
        return len(self.port.frames)

    def since(self, mark: int, *, src: str | None = None, dst: str | None = None, dport: int | None = None,
              sport: int | None = None) -> list:
        """TCP segments captured after `mark`, filtered by addresses and ports."""
        frames = self.port.frames[mark:]
        out = []
        for f in frames:
            parsed = parse(f)
            if parsed is None:
                continue
            ip, seg, data = parsed
            if (src is None or str(ip.src) == src) and (dst is None or str(ip.dst) == dst) \
                    and (dport is None or seg.dst_port == dport) and (sport is None or seg.src_port == sport):
                out.append((ip, seg, data))
        return out

    def wait_segments(self, mark: int, count: int, what: str, timeout: float = WAIT, **filters) -> list:
        return wait_for(lambda: (lambda s: s if len(s) >= count else None)(self.since(mark, **filters)),
                        timeout=timeout, what=what)

    def wait_caught_up(self, what: str) -> None:
        """Wait until the capture holds every frame the stack has transmitted so far.

        The stack counts what it did before its frames reach the capture: it
        puts them on its transmit ring, and the switch's thread takes them
        from there later. Each frame the switch takes from the stack's port
        is counted by that port (or dropped and counted), then forwarded and
        copied to the capture in the same turn of the switch's loop; read on
        that thread, the port's count never runs ahead of the capture."""
        queued = self.lab.stack.counters()["nic"]["tx_frames"]
        bg = self.lab.bg

        def taken() -> int:
            port = bg.switch.ports["stack"]
            return port.counters.rx_frames + port.counters.rx_dropped

        wait_for(lambda: bg.call(taken) >= queued, timeout=WAIT,
                 what=f"the capture to hold the stack's first {queued} frames ({what})")


# -- servers on the stack ----------------------------------------------------------------------------

class EchoServer:
    """TCP echo on a stack port: an accept thread, a thread per connection."""

    def __init__(self, stack, port: int, backlog: int) -> None:
        from stack import IpAddress, SocketType

        self.sock = stack.socket(SocketType.STREAM)
        self.sock.bind(IpAddress.any(port))
        self.sock.listen(backlog)
        self.sock.set_timeout(0.2)
        self.served = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn) -> None:
        with conn:
            conn.set_timeout(60)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                self.served += 1
            except OSError:
                pass

    @property
    def listener_stats(self) -> dict:
        return self.sock.tcp_info().counters           # the listener's own counters (a snapshot)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


def count(stack, section: str, name: str) -> int:
    """One interface counter (sections appear with their first count)."""
    return stack.counters().get(section, {}).get(name, 0)


def connection_stats(stack, local_port: int, remote_port: int) -> tuple[str, dict]:
    """The engine's state and counters of one connection."""
    for info in stack.connections():
        if info.local[1] == local_port and info.remote[1] == remote_port:
            return info.state.name, info.counters
    raise AssertionError(f"no connection {local_port} <- {remote_port}")


KERNEL_ECHO_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b'before'); assert s.recv(100) == b'before'
print(s.getsockname()[1], flush=True)
assert sys.stdin.readline().strip() == 'go'
s.sendall(b'after'); print(s.recv(100).decode(), flush=True)
s.close()
"""

KERNEL_ONE_SHOT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b'real client'); print(s.recv(100).decode(), flush=True)
s.close()
"""


# -- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-tcph") as netns:
        lab = StackLab(tmp_path_factory.mktemp("tcph"), netns)
        servers = []
        try:
            lab.attacker_port = lab.bg.add_port(AttackerPort("attacker", ATTACKER_MAC, ATTACKER_IP))
            lab.echo = EchoServer(lab.stack, ECHO_PORT, 16)
            servers.append(lab.echo)
            lab.flood = EchoServer(lab.stack, FLOOD_PORT, FLOOD_BACKLOG)
            servers.append(lab.flood)
            yield lab
        finally:
            for server in servers:
                server.stop()
            lab.close()


@pytest.fixture
def attacker(lab):
    return Attacker(lab, lab.attacker_port)


def syn(sport: int, dport: int = ECHO_PORT, seq: int | None = None, flags=None, **options):
    from stack.wire import TcpFlags, TcpRepr

    return TcpRepr(sport, dport, random.getrandbits(32) if seq is None else seq, 0,
                   TcpFlags.SYN if flags is None else flags, 65535, mss=options.pop("mss", 1460), **options)


def reset_embryonic(attacker, answered) -> None:
    """RST each connection a SYN-ACK in `answered` opened (at SEG.ACK: exactly RCV.NXT)."""
    from stack.wire import TcpFlags, TcpRepr

    attacker.send_paced([attacker.frame(TcpRepr(seg.dst_port, seg.src_port, seg.ack, 0, TcpFlags.RST, 0))
                         for _, seg, _ in answered])


# -- checksums ----------------------------------------------------------------------------------------------

def test_segments_with_bad_checksums_are_dropped_and_counted(lab, attacker):
    from stack.wire import TcpFlags

    before = {s: count(lab.stack, s, "drop.bad checksum") for s in ("tcp", "ipv4")}
    mark = attacker.mark()
    attacker.send(attacker.frame(syn(40001), bad_tcp_checksum=True),
                  attacker.frame(syn(40002), bad_ip_checksum=True),
                  attacker.frame(syn(40003)))
    # The good SYN is answered; by then the two before it were handled.
    answered = attacker.wait_segments(mark, 1, "SYN-ACK for the good SYN", dst=ATTACKER_IP)
    assert [(seg.dst_port, seg.flags) for _, seg, _ in answered] == [(40003, TcpFlags.SYN | TcpFlags.ACK)]
    assert count(lab.stack, "tcp", "drop.bad checksum") == before["tcp"] + 1
    assert count(lab.stack, "ipv4", "drop.bad checksum") == before["ipv4"] + 1
    reset_embryonic(attacker, answered)
    wait_for(lambda: not any(i.remote[1] == 40003 for i in lab.stack.connections()), timeout=WAIT,
             what="the half-open connection gone after our RST")


# -- impossible flags ---------------------------------------------------------------------------------------

def test_impossible_flag_combinations_to_a_listener(lab, attacker):
    from stack.wire import TcpFlags, TcpRepr

    F = TcpFlags
    before = {name: count(lab.stack, "tcp", name) for name in ("drop.rst to listener", "drop.no syn to listener")}
    mark = attacker.mark()
    attacker.send(
        attacker.frame(syn(41001, flags=F.SYN | F.RST)),                       # dropped: a RST to a listener
        attacker.frame(TcpRepr(41002, ECHO_PORT, 1000, 0, F(0), 65535)),       # no flags at all: dropped
        attacker.frame(TcpRepr(41003, ECHO_PORT, 1000, 0, F.FIN, 65535)),      # FIN without ACK: dropped
        attacker.frame(TcpRepr(41004, ECHO_PORT, 1000, 0, F.FIN | F.PSH | F.URG, 65535, urgent=1), b"x"),  # "xmas"
        attacker.frame(TcpRepr(41005, ECHO_PORT, 1000, 777, F.SYN | F.ACK, 65535)),   # RST at SEG.ACK (3.10.7.2)
        attacker.frame(syn(41006)),                                            # the marker: a good SYN
    )
    replies = attacker.wait_segments(mark, 2, "answers to the flag test", dst=ATTACKER_IP)
    assert [(seg.dst_port, seg.flags) for _, seg, _ in replies] == [
        (41005, F.RST), (41006, F.SYN | F.ACK)], replies
    assert replies[0][1].seq == 777
    assert count(lab.stack, "tcp", "drop.rst to listener") == before["drop.rst to listener"] + 1
    assert count(lab.stack, "tcp", "drop.no syn to listener") == before["drop.no syn to listener"] + 3
    open_ports = {i.remote[1] for i in lab.stack.connections()}
    assert not open_ports & {41001, 41002, 41003, 41004, 41005}
    reset_embryonic(attacker, replies[1:])


def test_syn_fin_opens_at_most_a_half_open_connection_that_a_rst_clears(lab, attacker):
    """RFC 9293 3.10.7.2 takes a SYN in LISTEN and queues "any other control"
    for later, so SYN+FIN may be answered like a SYN (Linux drops it). What
    must hold: nothing reaches accept(), and the connection is cleaned up."""
    from stack.wire import TcpFlags

    mark = attacker.mark()
    attacker.send(attacker.frame(syn(41010, flags=TcpFlags.SYN | TcpFlags.FIN)), attacker.frame(syn(41011)))
    replies = attacker.wait_segments(mark, 1, "SYN-ACK for the marker SYN", dst=ATTACKER_IP, dport=41011)
    answered = attacker.since(mark, dst=ATTACKER_IP, dport=41010)
    print("answer to SYN+FIN:", [seg for _, seg, _ in answered])
    assert all(seg.flags & TcpFlags.SYN and seg.flags & TcpFlags.ACK for _, seg, _ in answered)
    assert lab.stack.tcp_listeners() and all(info.pending == 0 for info in lab.stack.tcp_listeners())
    reset_embryonic(attacker, replies + answered[:1])
    wait_for(lambda: not {41010, 41011} & {i.remote[1] for i in lab.stack.connections()}, timeout=WAIT,
             what="the half-open connections gone after our RSTs")


# -- blind attacks on a live connection -----------------------------------------------------------------------

def test_blind_rst_syn_data_and_ack_do_not_break_a_live_connection(lab, attacker):
    from stack.wire import TcpFlags, TcpRepr

    F = TcpFlags
    mark = attacker.mark()
    client = KernelProgram(lab.netns, KERNEL_ECHO_CLIENT, STACK_IP, ECHO_PORT, stdin=True)
    try:
        kport = int(client.line(WAIT, "the client's port after its first echo"))
        # What the wire shows of the connection (the attacker's capture port
        # sees both directions): the stack's RCV.NXT and SND.NXT, the kernel's
        # timestamps (needed: a segment without them would be dropped first).
        # (The switch hands a frame to its port before copying it to the
        # capture: wait until the echo shows there too.)
        from_stack = wait_for(lambda: (lambda segs: segs if any(d == b"before" for _, _, d in segs) else None)(
            attacker.since(mark, src=STACK_IP, dport=kport)), timeout=WAIT, what="the echo in the capture")
        rcv_nxt = from_stack[-1][1].ack
        snd_nxt = max((seg.seq + len(data) for _, seg, data in from_stack), key=lambda s: (s - rcv_nxt) % 2**32)

        def seg(seq, ack, flags, **kw):
            # Just after the kernel's newest TSval: not old for PAWS, and not so
            # new that the kernel's own next segments would look old.
            tsval = max(s.timestamps[0] for _, s, _ in attacker.since(mark, src=HOST_IP, sport=kport) if s.timestamps)
            return TcpRepr(kport, ECHO_PORT, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 1000,
                           timestamps=((tsval + 1) & 0xFFFFFFFF, 0), **kw)

        def stats():
            return connection_stats(lab.stack, ECHO_PORT, kport)

        def acks_to_kernel(since):
            return [s for _, s, d in attacker.since(since, src=STACK_IP, dport=kport) if s.flags == F.ACK and not d]

        state, s0 = stats()
        assert state == "ESTABLISHED"

        # 1. a RST far outside the window: dropped without a word
        m = attacker.mark()
        attacker.send(attacker.frame(seg(rcv_nxt + (1 << 30), 0, F.RST), src=HOST_IP))
        wait_for(lambda: stats()[1].get("drop_rst_out_of_window", 0) == s0.get("drop_rst_out_of_window", 0) + 1,
                 timeout=WAIT, what="the out-of-window RST counted")
        # 2. a RST inside the window but not at RCV.NXT: a challenge ACK, the connection stays
        attacker.send(attacker.frame(seg(rcv_nxt + 1000, 0, F.RST), src=HOST_IP))
        challenge = wait_for(lambda: acks_to_kernel(m), timeout=WAIT, what="challenge ACK for the in-window RST")
        assert challenge[0].seq == snd_nxt and challenge[0].ack == rcv_nxt
        # 3. a SYN on the established connection: a challenge ACK
        attacker.send(attacker.frame(seg(rcv_nxt + 5, 0, F.SYN, mss=1460), src=HOST_IP))
        wait_for(lambda: len(acks_to_kernel(m)) >= 2, timeout=WAIT, what="challenge ACK for the SYN")
        # 4. data beyond the window: dropped, answered by at most a rate-limited duplicate ACK
        attacker.send(attacker.frame(seg(rcv_nxt + (1 << 30), snd_nxt, F.ACK | F.PSH), b"INJECTED" * 10,
                                     src=HOST_IP))
        wait_for(lambda: stats()[1].get("drop_out_of_window", 0) > s0.get("drop_out_of_window", 0), timeout=WAIT,
                 what="the out-of-window data dropped")
        # 5. an ACK for data never sent: a challenge ACK, the segment dropped
        attacker.send(attacker.frame(seg(rcv_nxt, snd_nxt + (1 << 20), F.ACK), src=HOST_IP))
        wait_for(lambda: stats()[1].get("drop_ack_unsent", 0) > s0.get("drop_ack_unsent", 0), timeout=WAIT,
                 what="the ACK of unsent data dropped")
        # 6. a burst of 60 in-window RSTs: challenge ACKs are rate limited (burst 10, then 10/s)
        # (What steps 1-5 made the stack send is in the capture before the mark.)
        attacker.wait_caught_up("the answers to steps 1-5")
        m6 = attacker.mark()
        state, s6 = stats()
        t0 = time.monotonic()
        attacker.send(*(attacker.frame(seg(rcv_nxt + 100 + i, 0, F.RST), src=HOST_IP) for i in range(60)))
        wait_for(lambda: stats()[1].get("rst_challenged", 0) >= s6.get("rst_challenged", 0) + 60, timeout=WAIT,
                 what="all 60 RSTs seen")
        elapsed = time.monotonic() - t0
        state, s7 = stats()
        sent = s7["challenge_acks"] - s6["challenge_acks"]
        assert sent <= 10 + 10 * elapsed + 1 and s7["challenge_ack_suppressed"] > s6.get("challenge_ack_suppressed", 0)
        # Challenge ACKs owed by segments handled in one go leave as one ACK.
        # (The counters move before the ACKs reach the capture: count them once
        # the capture holds all the stack sent.)
        wait_for(lambda: acks_to_kernel(m6), timeout=WAIT, what="a challenge ACK for the RST burst in the capture")
        attacker.wait_caught_up("the challenge ACKs for the RST burst")
        assert 1 <= len(acks_to_kernel(m6)) <= sent
        print(f"60 RSTs in {elapsed:.3f} s -> {sent} challenge ACKs; connection stats {s7}")

        # The connection is intact: nothing was reset, nothing injected.
        assert state == "ESTABLISHED" and s7.get("rst_in", 0) == 0
        client.tell("go")
        assert client.line(WAIT, "the echo after the attacks") == "after"
    finally:
        client.stop()


# -- SYN floods and forged cookies ----------------------------------------------------------------------------

def test_syn_flood_beyond_the_backlog_while_a_real_client_is_served(lab, attacker):
    """600 SYNs from random ports fill the SYN queue (256) and go on as SYN
    cookies; the kernel then connects, gets a cookie, and is served."""
    from stack.wire import TcpFlags

    ports = random.sample(range(20000, 60000), 600)
    mark = attacker.mark()
    before = lab.flood.listener_stats
    cookies_before = count(lab.stack, "tcp", "tx_syn_cookie")
    # Waits count the ports answered, not the segments: a flood that takes
    # over a second on a loaded machine also brings the SYN-ACK
    # retransmissions (RTO 1 s) of its first half-open connections.
    def first_answers() -> dict:
        first = {}
        for item in attacker.since(mark, dst=ATTACKER_IP, sport=FLOOD_PORT):
            first.setdefault(item[1].dst_port, item)
        return first

    for i in range(0, len(ports), 50):        # in bursts the stack's receive ring can hold
        attacker.send(*(attacker.frame(syn(p, FLOOD_PORT)) for p in ports[i:i + 50]))
        wait_for(lambda: set(ports[:i + 50]) <= first_answers().keys(), timeout=WAIT,
                 what=f"SYN-ACKs for the first {i + 50} SYNs")
    answers = first_answers()
    assert answers.keys() == set(ports)
    assert all(seg.flags == TcpFlags.SYN | TcpFlags.ACK for _, seg, _ in attacker.since(mark, dst=ATTACKER_IP,
                                                                                         sport=FLOOD_PORT))
    answered = list(answers.values())         # one per port: a second RST would reach the listener
    stats = lab.flood.listener_stats
    embryonic = stats["syn_received"] - before.get("syn_received", 0)
    cookies = stats["syn_cookies_sent"] - before.get("syn_cookies_sent", 0)
    assert embryonic + cookies == 600 and cookies >= 600 - 256, stats
    assert stats["syn_drop_syn_queue_full"] - before.get("syn_drop_syn_queue_full", 0) == cookies
    info = next(i for i in lab.stack.tcp_listeners() if i.local[1] == FLOOD_PORT)
    assert info.embryonic <= 256 and info.pending == 0

    # The real client, while the SYN queue is full.
    r = kernel_run(lab.netns, KERNEL_ONE_SHOT, STACK_IP, FLOOD_PORT)
    assert r.returncode == 0 and r.stdout.strip() == "real client", r.stdout + r.stderr
    stats = lab.flood.listener_stats
    assert stats["cookie_established"] >= before.get("cookie_established", 0) + 1, stats
    assert count(lab.stack, "tcp", "tx_syn_cookie") >= cookies_before + cookies + 1
    print(f"flood: {embryonic} half-open, {cookies} cookies; listener {stats}")

    # Clean up: RST every half-open connection (those answered with a cookie
    # hold nothing: their RSTs reach the listener, which drops and counts them).
    rst_to_listener = count(lab.stack, "tcp", "drop.rst to listener")
    reset_embryonic(attacker, answered)
    wait_for(lambda: next(i for i in lab.stack.tcp_listeners() if i.local[1] == FLOOD_PORT).embryonic == 0,
             timeout=WAIT, what="the SYN queue empty after our RSTs")
    wait_for(lambda: count(lab.stack, "tcp", "drop.rst to listener") == rst_to_listener + cookies, timeout=WAIT,
             what="the RSTs for cookie SYN-ACKs dropped by the listener")


def test_forged_cookie_acks_open_nothing(lab, attacker):
    """ACKs with made-up SYN-cookie numbers (cookies are in use after the
    flood): each is refused with a RST and counted, none is accepted."""
    from stack.wire import TcpFlags, TcpRepr

    before = lab.flood.listener_stats
    mark = attacker.mark()
    forged = [TcpRepr(p, FLOOD_PORT, random.getrandbits(32), random.getrandbits(32), TcpFlags.ACK, 512)
              for p in random.sample(range(20000, 60000), 100)]
    attacker.send_paced([attacker.frame(s) for s in forged])
    rsts = attacker.wait_segments(mark, 100, "a RST for each forged ACK", dst=ATTACKER_IP, sport=FLOOD_PORT)
    assert all(seg.flags == TcpFlags.RST for _, seg, _ in rsts)
    stats = lab.flood.listener_stats
    refused = (stats.get("cookie_invalid", 0) - before.get("cookie_invalid", 0)) + \
        (stats.get("cookie_expired", 0) - before.get("cookie_expired", 0))
    assert refused == 100 and stats.get("cookie_established") == before.get("cookie_established"), stats
    info = next(i for i in lab.stack.tcp_listeners() if i.local[1] == FLOOD_PORT)
    assert info.pending == 0


def test_still_serving_and_nothing_went_wrong(lab):
    for port in (ECHO_PORT, FLOOD_PORT):
        r = kernel_run(lab.netns, KERNEL_ONE_SHOT, STACK_IP, port)
        assert r.returncode == 0 and r.stdout.strip() == "real client", r.stdout + r.stderr
    assert_stack_healthy(lab.stack)
    assert lab.nic.link_up
