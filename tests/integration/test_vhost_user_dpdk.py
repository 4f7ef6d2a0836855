"""DPDK's testpmd as a second vhost-user implementation, on the front-end side.

`net_virtio_user` is DPDK's virtio driver talking vhost-user to a socket: to
it, our VhostUserPort is the vhost-user back-end. In txonly mode testpmd
fills its TX ring as fast as it can and our port must count what arrives,
as valid Ethernet frames; in rxonly mode we fill its RX ring and testpmd's
statistics must count our frames.

testpmd flags (see `dpdk-testpmd --help` and nicdev/vhost_user/testpmd.py):
--no-huge -m 256 --no-pci run it without hugepages or devices;
--total-num-mbufs keeps its mbuf pool inside those 256 MiB; a per-run
--file-prefix keeps runs apart; without a terminal it needs --stats-period
or it exits at once; SIGINT stops it and prints its final statistics.
"""
from __future__ import annotations

import re
import struct
import threading

import pytest

from nicdev.net.loop import EventLoop
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.vhost_user.testpmd import Testpmd, TestpmdError
from support.waiting import wait_for

pytestmark = pytest.mark.integration

RING_SIZE = 256     # virtio-user's default queue_size


class PortThread:
    """A VhostUserPort on its own event loop thread (the way the switch runs)."""

    def __init__(self, path: str) -> None:
        self.loop = EventLoop()
        self.port = VhostUserPort("dpdk", path)
        self.count = 0
        self.samples: list[bytes] = []
        self.bad: list[bytes] = []
        self.port.attach(self._sink)
        self.port.start(self.loop)
        self.thread = threading.Thread(target=self.loop.run, name="port-loop", daemon=True)
        self.thread.start()

    def _sink(self, port, frame: bytes, meta) -> None:
        self.count += 1
        if len(self.samples) < 256:
            self.samples.append(frame)
        if not _valid_udp_frame(frame) and len(self.bad) < 8:
            self.bad.append(frame)

    def call(self, fn, timeout: float = 10.0):
        done = threading.Event()
        result = {}

        def run():
            try:
                result["value"] = fn()
            except BaseException as e:   # handed back to the test thread
                result["error"] = e
            done.set()
        self.loop.call_soon_threadsafe(run)
        assert done.wait(timeout), "the port's loop did not answer"
        if "error" in result:
            raise result["error"]
        return result["value"]

    def status(self) -> str:
        return self.call(lambda: self.port.status)

    def close(self) -> None:
        try:
            self.call(self.port.close)
        finally:
            self.loop.stop()
            self.thread.join(10)
            self.loop.close()


def _valid_udp_frame(frame: bytes) -> bool:
    """testpmd's txonly frame: Ethernet II + IPv4 (good header checksum) + UDP."""
    if len(frame) != 64 or frame[12:14] != b"\x08\x00" or frame[14] != 0x45:
        return False
    ip = frame[14:34]
    total = sum(struct.unpack("!10H", ip))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF and struct.unpack("!H", ip[2:4])[0] == 50 and ip[9] == 17


def _rx_whereabouts(port: VhostUserPort) -> dict:
    """Where the frames our port accepted for the guest are: delivered into
    its ring (our used idx), waiting in the backlog or held chains, dropped
    (by reason), and the receive ring's notification state, as the guest
    sees it."""
    device = port.device
    datapath = device.datapath
    where = {"port": port.counters.as_dict(), "device": device.counters.as_dict(),
             "poll": device.poller.counters.as_dict(), "polling": device.poller.polling,
             "backlog": datapath.rx_waiting, "held_chains": len(datapath._rx_held)}
    ring = device.rx
    if ring is None or ring.queue is None or device.mem is None:
        return where | {"rx_ring": "not started"}
    queue, mem = ring.queue, device.mem
    avail = mem.view(queue.avail_gpa, 4 + 2 * queue.size + 2).cast("H")
    used = mem.view(queue.used_gpa, 4 + 8 * queue.size + 2).cast("H")
    where["rx_ring"] = {
        "size": queue.size, "event_idx": queue.event_idx, "next_avail": queue.next_avail,
        "avail_idx": avail[1], "avail_flags": avail[0], "used_event": avail[2 + queue.size],
        "used_idx": queue.used_idx, "used_idx_in_memory": used[1], "used_flags": used[0],
        "avail_event": used[2 + 4 * queue.size], "broken": ring.broken, "enabled": ring.enabled,
    }
    return where


def Pmd(path: str, mode: str, tmp_path, extra=()) -> Testpmd:
    """dpdk-testpmd as a virtio-user front-end on `path`."""
    return Testpmd.frontend(path, mode, tmp_path, tag=f"vu-{mode}", extra=extra)


@pytest.fixture
def port(tmp_path):
    p = PortThread(str(tmp_path / "vu.sock"))
    yield p
    p.close()


def txonly_stopped(port: PortThread, out: str) -> int:
    """What testpmd counted as sent (its forward statistics after SIGINT, `out`),
    once our port is back to waiting for the next front-end (bounded)."""
    sent = re.findall(r"TX-packets:\s+(\d+)\s+TX-dropped", out)
    assert sent, f"no final statistics from testpmd:\n{out}"
    wait_for(lambda: "waiting for frontend" in port.status(), "our port to wait for the next front-end", timeout=10)
    return int(sent[-1])


def test_testpmd_txonly_frames_arrive_at_our_port(port, tmp_path):
    pmd = Pmd(port.port.socket_path, "txonly", tmp_path, ["--txpkts=64"])
    try:
        pmd.wait_for(lambda: "rings running" in port.status(), "testpmd to start our rings")
        pmd.wait_for(lambda: port.count >= 100_000, "100000 frames at our port")
    finally:
        out = pmd.stop()
    try:
        sent = txonly_stopped(port, out)
        got = port.call(lambda: port.count)
        counters = port.call(lambda: port.port.counters.as_dict())
        # testpmd stops with SET_VRING_ENABLE 0, then GET_VRING_BASE. Frames
        # still in the ring then either stay there (GET_VRING_BASE stops, it
        # does not drain) or, when a turn of our loop comes between the two
        # messages, are drained from the disabled ring and dropped, as the
        # vhost-user spec asks: at most one ring's worth, each one counted.
        dropped = counters["rx_dropped"]
        assert counters["errors"] == ({"tx_ring_disabled": dropped} if dropped else {}), counters
        assert sent - RING_SIZE <= got + dropped <= sent and dropped <= RING_SIZE, \
            f"testpmd sent {sent}, our port got {got} and dropped {dropped}"
        assert port.bad == [], f"malformed frames: {[f.hex() for f in port.bad]}"
        assert len(port.samples) == 256
        assert counters["rx_frames"] == got, counters
        assert "waiting for frontend" in port.status()     # back to waiting, ready for the next
    except (AssertionError, pytest.fail.Exception):     # testpmd's output for the report
        print(out)
        raise


def test_frames_in_a_ring_testpmd_disables_are_drained_and_counted(port, tmp_path):
    """The case the test above allows, made certain: the device stalls its TX
    ring (a device mode), so testpmd's ring is full when it stops, and our
    loop takes a turn right when the ring is disabled. Every frame testpmd
    sent is then either delivered or counted as `tx_ring_disabled`, and the
    port is ready for the next front-end."""
    device = port.port.device
    disabled = []

    def enable_changed(ring, original=device.ring_enable_changed):
        original(ring)
        if ring.index == 1 and not ring.enabled:        # our loop's turn between the two messages
            port.port.set_fault(None)
            disabled.append(device.process_tx())

    device.ring_enable_changed = enable_changed
    pmd = Pmd(port.port.socket_path, "txonly", tmp_path, ["--txpkts=64"])
    try:
        pmd.wait_for(lambda: "rings running" in port.status(), "testpmd to start our rings")
        pmd.wait_for(lambda: port.count >= 10_000, "10000 frames at our port")
        port.call(lambda: port.port.set_fault("stall-tx"))
        stalled_at = port.call(lambda: port.count)
    finally:
        out = pmd.stop()
    try:
        sent = txonly_stopped(port, out)
        counters = port.call(lambda: port.port.counters.as_dict())
        got = port.call(lambda: port.count)
        assert disabled == [RING_SIZE], f"the disabled ring held {disabled} chains, not a full ring"
        assert got == stalled_at and got == counters["rx_frames"], (got, stalled_at, counters)
        assert counters["rx_dropped"] == RING_SIZE and counters["errors"] == {"tx_ring_disabled": RING_SIZE}, counters
        assert got + counters["rx_dropped"] == sent, f"testpmd sent {sent}; {got} arrived, {counters}"
        assert "waiting for frontend" in port.status()
    except (AssertionError, pytest.fail.Exception):     # testpmd's output for the report
        print(out)
        raise


def test_testpmd_rxonly_counts_our_frames(port, tmp_path):
    frame = bytes.fromhex("ffffffffffff" "020000000001" "0800") + bytes(50)
    target = 20_000
    state = {"sent": 0}

    def pump():
        # ~64 frames a millisecond, once the rings run; a full ring drops (counted)
        if "rings running" in port.port.status:
            for _ in range(64):
                if state["sent"] >= target:
                    return
                if port.port.transmit(frame):
                    state["sent"] += 1
        port.loop.call_later(0.001, pump)

    pmd = Pmd(port.port.socket_path, "rxonly", tmp_path)
    try:
        # Not before testpmd has started its port: virtio_dev_start fills the
        # RX ring and then flushes it, and frames we wrote in between would
        # be freed uncounted (as any NIC drops frames before it is started).
        pmd.wait_for(lambda: "rings running" in port.status(), "testpmd to start our rings")
        pmd.wait_for(lambda: "Port statistics" in pmd.output(), "testpmd to start forwarding")
        port.call(pump)
        pmd.wait_for(lambda: port.call(lambda: state["sent"]) >= target, f"{target} frames into testpmd's RX ring")
        # testpmd prints its port statistics every second
        try:
            pmd.wait_for(lambda: target in pmd.numbers("RX-packets"), f"testpmd to count {target} packets")
        except TestpmdError:
            raise AssertionError(f"testpmd counted {max(pmd.numbers('RX-packets'), default=0)} of {target} "
                                 f"frames; where ours are: {port.call(lambda: _rx_whereabouts(port.port))}") from None
        assert max(pmd.numbers("RX-packets")) == target
        assert max(pmd.numbers("RX-errors")) == 0
        counters = port.call(lambda: port.port.counters.as_dict())
        assert counters["tx_frames"] == target
        # drops, if any, are only "no receive buffers" while testpmd's ring was full
        assert set(counters["errors"]) <= {"no_rx_buffers"}, counters
    except AssertionError:
        print(pmd.output())
        raise
    finally:
        pmd.stop()
