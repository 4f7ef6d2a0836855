"""The MultiOS stack's virtio-net driver against DPDK's vhost-user back-end.

testpmd with `--vdev net_vhost0,iface=SOCK` is the back-end (it creates the
socket and listens); our `VirtioNetNic` is the front-end, as a QEMU guest
would be. In icmpecho mode testpmd answers ARP requests for any address and
echo requests to any address, so a stack in 10.0.0.0/24 can ping 10.0.0.77
through a RAW socket. rxonly counts what we send; txonly floods us with
64-byte UDP frames.

testpmd flags (nicdev/vhost_user/testpmd.py): --no-huge -m 256 --no-pci,
--total-num-mbufs to fit those 256 MiB, a per-run --file-prefix, --stats-period (without a
terminal it would exit at once), SIGINT to stop; --lcores '0@0,1@1' puts
its busy-polling forwarding lcore on CPU 1.
"""
from __future__ import annotations

import re
import time

import pytest

from nicdev.vhost_user.testpmd import Testpmd
from nicdev.virtio.features import VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, has
from stack import IpAddress, SocketType, Stack
from stack.arp_cache import ArpCache
from stack.drivers import VirtioNetNic
from stack.wire import EchoReply, EchoRequest, IpProtocol, Ipv4Repr, emit_icmpv4, parse_icmpv4

pytestmark = pytest.mark.integration

WAIT = 10.0


@pytest.fixture
def pmds(tmp_path):
    started: list[Testpmd] = []

    def start(mode, extra=(), path=None):
        pmd = Testpmd.backend(path or str(tmp_path / "vhost.sock"), mode, tmp_path, tag=f"stack-{mode}", extra=extra)
        started.append(pmd)
        return pmd
    yield start
    for pmd in started:
        pmd.stop()


def ping(sock, dst: str, seq: int, data: bytes) -> EchoReply:
    request = emit_icmpv4(EchoRequest(0x4D4F, seq, data))
    sock.send_to(request, IpAddress(dst, 0))
    while True:
        packet, sender = sock.recv_from(65535)
        ip, payload = Ipv4Repr.parse(packet)
        msg = parse_icmpv4(payload)
        if isinstance(msg, EchoReply) and str(ip.src) == dst:
            return msg


def test_stack_pings_through_testpmd_icmpecho(pmds):
    pmd = pmds("icmpecho")
    nic = VirtioNetNic(pmd.path, timeout=WAIT)
    try:
        assert has(nic.features, VIRTIO_F_VERSION_1) and has(nic.features, VIRTIO_NET_F_MRG_RXBUF), nic.describe()
        with Stack(nic, "10.0.0.2/24", privileged=True, arp_cache=ArpCache(retry_interval=0.2)) as st:
            sock = st.socket(SocketType.RAW, IpProtocol.ICMP)
            sock.set_timeout(WAIT)
            for seq, dst in enumerate(["10.0.0.77", "10.0.0.77", "10.0.0.200"]):
                data = f"multios ping {seq}".encode() * 8
                try:
                    reply = ping(sock, dst, seq, data)
                except TimeoutError:
                    pytest.fail(f"no echo reply from {dst}; nic {dict(nic.counters)}; stack {st.counters()}\n"
                                f"testpmd output:\n{pmd.output()}")
                assert reply == EchoReply(0x4D4F, seq, data)
        assert nic.counters["rx_frames"] >= 5 and nic.drops == {}, dict(nic.counters)
    finally:
        nic.close()
    out = pmd.stop()
    forwarded = re.findall(r"TX-packets:\s+(\d+)\s+TX-dropped", out)
    assert forwarded and int(forwarded[-1]) >= 5, out


def test_testpmd_rxonly_counts_our_frames(pmds):
    pmd = pmds("rxonly")
    nic = VirtioNetNic(pmd.path, timeout=WAIT)
    target = 20_000
    frame = b"\xff" * 6 + bytes(nic.mac) + b"\x88\xb5" + bytes(46)
    try:
        sent = 0
        deadline = time.monotonic() + 30
        while sent < target and time.monotonic() < deadline:
            sent += nic.transmit([(frame, None)] * min(64, target - sent))
        assert sent == target, f"sent {sent}; {dict(nic.counters)}"
        pmd.wait_for(lambda: target in pmd.numbers("RX-packets"), f"testpmd to count {target} packets")
        assert max(pmd.numbers("RX-packets")) == target
        # the ring was never lost: frames it did not take are counted, not vanished
        assert nic.counters["tx_frames"] == target
        assert set(nic.drops) <= {"tx_drop_ring_full"}, nic.drops
        assert nic.counters["tx_kicks"] < target // 10, "DPDK polls: kicks are suppressed"
    except AssertionError:
        print(pmd.output())
        raise
    finally:
        nic.close()


def test_testpmd_txonly_floods_us_with_udp(pmds):
    pmd = pmds("txonly", ["--txpkts=64"])
    nic = VirtioNetNic(pmd.path, timeout=WAIT)
    try:
        got = 0
        bad = []
        deadline = time.monotonic() + 30
        while got < 5000 and time.monotonic() < deadline:
            for frame, _ in nic.receive(256):
                got += 1
                if len(frame) != 64 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                    bad.append(frame.hex())
        assert got >= 5000, f"received {got}; {dict(nic.counters)}\n{pmd.output()}"
        assert bad == [], bad[:4]
        assert nic.link_up and not {k for k in nic.drops if k.startswith("rx_")}, nic.drops
    finally:
        nic.close()


def test_reconnects_when_testpmd_restarts(pmds):
    first = pmds("icmpecho")
    nic = VirtioNetNic(first.path, timeout=WAIT, reconnect_interval=0.2)
    try:
        with Stack(nic, "10.0.0.2/24", privileged=True, arp_cache=ArpCache(retry_interval=0.2)) as st:
            sock = st.socket(SocketType.RAW, IpProtocol.ICMP)
            sock.set_timeout(WAIT)
            assert ping(sock, "10.0.0.9", 1, b"before").data == b"before"
            first.stop()
            first.wait_for(lambda: not nic.link_up, "the NIC to see testpmd go", WAIT)
            assert "closed the connection" in nic.last_error
            second = pmds("icmpecho", path=first.path)
            second.wait_for(lambda: nic.link_up, "the NIC to reconnect to the new testpmd", WAIT)
            try:
                assert ping(sock, "10.0.0.9", 2, b"after").data == b"after"
            except TimeoutError:
                pytest.fail(f"no echo reply after the restart; {dict(nic.counters)}\n{second.output()}")
            assert nic.counters["reconnects"] == 1
    finally:
        nic.close()
