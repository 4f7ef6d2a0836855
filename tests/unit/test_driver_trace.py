"""The stack's virtio driver traces its side of the rings (side "driver"),
on both data paths, against a real vhost-user port of our switch: set-up
(vhost-user messages, features, ring start), chains added with their
descriptors, used entries reaped, index moves, kicks sent and suppressed,
interrupts received, drops, and nothing when tracing is off."""
from __future__ import annotations

import collections
import os

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.virtio.trace import validate_record
from stack.drivers import VirtioNetNic
from stack.drivers.virtio_link import HDR_LEN, RX_RING, TX_RING

from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("datapath")

QS = 16


@pytest.fixture
def bg():
    switch = BackgroundSwitch()
    yield switch
    switch.close()


@pytest.fixture
def nics(bg, tmp_path):
    made = []

    def make(name, **kwargs):
        port = bg.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock")))
        nic = VirtioNetNic(port.socket_path, queue_size=QS, reconnect_interval=0.05, **kwargs)
        made.append(nic)
        return nic
    yield make
    for nic in made:
        nic.close()


def frame(src, dst, n):
    return bytes(dst.mac) + bytes(src.mac) + b"\x88\xb5" + os.urandom(n - 14)


def receive(nic, count):
    got = []
    wait_for(lambda: got.extend(nic.receive(64)) or len(got) >= count, f"{count} frames at {nic.name}")
    return got


def of(records, kind, queue=None):
    return [r for r in records if r["kind"] == kind and (queue is None or r["queue"] == queue)]


def test_set_up_is_traced_from_the_start(nics):
    records = []
    a = nics("a", trace_sink=records.append)
    for r in records:
        validate_record(r)
        assert r["side"] == "driver" and r["port"] == a.name
    msgs = [r["request"] for r in of(records, "vhost_msg")]
    assert msgs[:2] == ["GET_FEATURES", "GET_PROTOCOL_FEATURES"] and "SET_MEM_TABLE" in msgs
    mem_table = of(records, "vhost_msg")[msgs.index("SET_MEM_TABLE")]
    assert mem_table["fds"] == 1 and mem_table["size"] > 0 and mem_table["queue"] is None
    kicks = [(r["queue"], r["dir"], r["fds"]) for r in of(records, "vhost_msg") if r["request"] == "SET_VRING_KICK"]
    assert kicks == [(0, "rx", 1), (1, "tx", 1)]
    features = of(records, "features")
    assert [f["protocol"] for f in features] == [True, False] and features[1]["value"] == a.features
    assert [(r["queue"], r["dir"], r["state"]) for r in of(records, "ring")] == [
        (0, "rx", "start"), (1, "tx", "start"), (0, "rx", "enable"), (1, "tx", "enable")]
    # Every receive buffer offered once and published with one index store.
    chains = of(records, "chain", RX_RING)
    assert len(chains) == QS and len({c["head"] for c in chains}) == QS
    assert all(len(c["descs"]) == 1 and c["descs"][0][2] == 2 and not c["indirect"] for c in chains)
    assert [(r["old"], r["new"]) for r in of(records, "avail_idx", RX_RING)] == [(0, QS)]
    a.close()
    assert [(r["queue"], r["state"]) for r in of(records, "ring")[4:]] == [
        (0, "disable"), (0, "stop"), (1, "disable"), (1, "stop")]


def test_chains_and_used_entries_match_the_frames_both_ways(nics):
    ta, tb = [], []
    a = nics("a", trace_sink=ta.append)
    b = nics("b", trace_sink=tb.append)
    del ta[:], tb[:]
    frames = [frame(a, b, n) for n in (60, 61, 1000, 1514) * 10]      # 40 frames, 16 TX slots
    sent = 0
    got = []
    while sent < len(frames):
        sent += a.transmit([(f, None) for f in frames[sent:sent + 8]])
        got += receive(b, min(sent, len(frames)) - len(got))
    assert [f for f, _ in got] == frames
    for r in ta + tb:
        validate_record(r)
    # a's TX chains: one descriptor each, header and frame, device-readable.
    tx_chains = of(ta, "chain", TX_RING)
    assert [c["bytes"] for c in tx_chains] == [HDR_LEN + len(f) for f in frames]
    assert all(c["dir"] == "tx" and len(c["descs"]) == 1 and c["descs"][0][2] == 0 for c in tx_chains)
    # Reaped TX entries name chains that were added; the index moves add up.
    added = {c["head"] for c in tx_chains}
    assert {u["id"] for u in of(ta, "used", TX_RING)} <= added and of(ta, "used", TX_RING)
    assert sum((r["new"] - r["old"]) & 0xFFFF for r in of(ta, "avail_idx", TX_RING)) == len(frames)
    assert sum((r["new"] - r["old"]) & 0xFFFF for r in of(ta, "used_idx", TX_RING)) == len(of(ta, "used", TX_RING))
    # b reaped one used RX entry per frame, its written length header + frame,
    # naming a buffer b had offered, and gave it straight back.
    used = of(tb, "used", RX_RING)
    assert [u["len"] for u in used] == [HDR_LEN + len(f) for f in frames]
    assert len(of(tb, "chain", RX_RING)) == len(frames)
    assert of(tb, "call", RX_RING) or b.counters["rx_interrupts"] == 0
    assert len(of(tb, "call", RX_RING)) == b.counters["rx_interrupts"]
    kicks = of(ta, "kick", TX_RING) + of(ta, "kick_suppressed", TX_RING)
    assert len(of(ta, "kick", TX_RING)) == a.counters["tx_kicks"] and kicks
    assert all(k["reason"] == "event_idx" for k in of(ta, "kick_suppressed"))


def chains(records, port, direction):
    return [(r["head"], r["descs"], r["indirect"], r["bytes"]) for r in records
            if r["kind"] == "chain" and r["port"] == port and r["dir"] == direction]


def used(records, port, direction):
    return [(r["id"], r["len"]) for r in records
            if r["kind"] == "used" and r["port"] == port and r["dir"] == direction]


def test_driver_and_device_records_agree_for_the_same_chains(bg, tmp_path):
    """Both halves of the same rings traced: the driver (the stack's NIC) and
    the device (a real switch port) tell the same story."""
    device, driver, nics = [], [], []
    ports = [bg.add_port(VhostUserPort(name, str(tmp_path / f"{name}.sock"))) for name in ("a", "b")]
    bg.call(lambda: [port.tracer.add_sink(device.append) for port in ports])
    try:
        for port in ports:
            nics.append(VirtioNetNic(port.socket_path, queue_size=QS, trace_sink=driver.append))
        a, b = nics
        for src, dst, count in ((a, b, 40), (b, a, 7)):
            frames = [frame(src, dst, (60, 1514, 300, 999)[k % 4]) for k in range(count)]
            got, sent = [], 0
            while sent < count:
                sent += src.transmit([(f, None) for f in frames[sent:sent + 8]])
                wait_for(lambda: got.extend(dst.receive(64)) or len(got) >= sent, f"{sent} frames at {dst.name}")
        device_seen = bg.call(lambda: list(device))
        driver_seen = list(driver)
    finally:
        for nic in nics:
            nic.close()
    for port, nic in {"a": a.name, "b": b.name}.items():
        # The set-up: every vhost-user message the driver sent, the device got, in order.
        sent_msgs = [(r["request"], r["queue"], r["dir"], r["fds"]) for r in driver_seen
                     if r["kind"] == "vhost_msg" and r["port"] == nic]
        got_msgs = [(r["request"], r["queue"], r["dir"], r["fds"]) for r in device_seen
                    if r["kind"] == "vhost_msg" and r["port"] == port]
        assert got_msgs == sent_msgs and ("SET_MEM_TABLE", None, None, 1) in sent_msgs
        assert [(r["value"], r["protocol"]) for r in driver_seen if r["kind"] == "features" and r["port"] == nic] == \
            [(r["value"], r["protocol"]) for r in device_seen if r["kind"] == "features" and r["port"] == port]
        # TX: the device popped exactly the chains the driver added, in order,
        # with the same descriptors; the driver reaped what the device used.
        assert chains(device_seen, port, "tx") == chains(driver_seen, nic, "tx") and chains(driver_seen, nic, "tx")
        pushed = used(device_seen, port, "tx")
        assert used(driver_seen, nic, "tx") == pushed[:len(used(driver_seen, nic, "tx"))]
        # RX: the device popped the buffers the driver offered, in order, and
        # wrote the used entries (id, length) the driver reaped.
        offered, popped = chains(driver_seen, nic, "rx"), chains(device_seen, port, "rx")
        assert popped == offered[:len(popped)] and popped
        assert used(driver_seen, nic, "rx") == used(device_seen, port, "rx")
        # Notifications coalesce in the eventfd: never more received than sent.
        kicks_sent = len([r for r in driver_seen if r["kind"] == "kick" and r["port"] == nic])
        kicks_got = len([r for r in device_seen if r["kind"] == "kick" and r["port"] == port])
        assert 0 < kicks_got <= kicks_sent
        calls_sent = len([r for r in device_seen if r["kind"] == "call" and r["port"] == port and r["dir"] == "rx"])
        calls_got = len([r for r in driver_seen if r["kind"] == "call" and r["port"] == nic])
        assert calls_got <= calls_sent


def test_drops_are_traced_with_their_reason(nics):
    records = []
    a = nics("a", trace_sink=records.append)
    b = nics("b")
    a.transmit([(frame(a, b, 60)[:10], None), (frame(a, b, 60) + bytes(9000), None), (frame(a, b, 60), None)])
    drops = of(records, "drop")
    assert sorted((d["queue"], d["dir"], d["reason"]) for d in drops) == [
        (TX_RING, "tx", "oversize"), (TX_RING, "tx", "runt")]
    assert collections.Counter(d["reason"] for d in drops) == {"oversize": 1, "runt": 1}


def test_off_means_no_records_and_turning_on_later_shows_only_what_follows(nics):
    records = []
    a = nics("a")
    b = nics("b")
    for _ in range(3):
        a.transmit([(frame(a, b, 100), None)] * 5)
        receive(b, 5)
    a.tracer.add_sink(records.append)
    a.transmit([(frame(a, b, 100), None)])
    receive(b, 1)
    assert len(of(records, "chain", TX_RING)) == 1 and of(records, "chain", TX_RING)[0]["bytes"] == HDR_LEN + 100
    a.tracer.remove_sink(records.append)
    n = len(records)
    a.transmit([(frame(a, b, 100), None)])
    receive(b, 1)
    assert len(records) == n


class _Ring:
    """What RingWatch asks of a driver ring: how far it reaped."""

    def __init__(self, queue):
        self.queue = queue

    @property
    def last_used(self):
        return self.queue.last_used


def test_watch_reads_multi_descriptor_and_indirect_chains_from_ring_memory():
    from nicdev.virtio.driver_queue import DriverQueue
    from nicdev.virtio.memory import GuestMemory, MemoryRegion
    from nicdev.virtio.ring import SplitRingLayout
    from nicdev.virtio.trace import Tracer
    from stack.drivers.ring_trace import RingWatch

    mem = GuestMemory([MemoryRegion(0, 0x10000, bytearray(0x10000))])
    queue = DriverQueue.from_layout(SplitRingLayout(8, 0), event_idx=True)
    queue.init(mem)
    records = []
    tracer = Tracer("nic", "driver")
    tracer.add_sink(records.append)
    watch = RingWatch(tracer, 1, "tx", mem, queue, _Ring(queue))
    watch.mark()
    h1 = queue.add(mem, [(0x4000, 12), (0x4100, 60)], [(0x5000, 100)], "chain")
    h2 = queue.add_indirect(mem, 0x6000, [(0x7000, 30)], [(0x7100, 40), (0x7200, 50)], "indirect")
    queue.publish(mem)
    watch.look()
    chains = of(records, "chain")
    assert [(c["head"], c["descs"], c["indirect"], c["bytes"]) for c in chains] == [
        (h1, [[0x4000, 12, 1], [0x4100, 60, 1], [0x5000, 100, 2]], False, 172),
        (h2, [[0x6000, 48, 4], [0x7000, 30, 1], [0x7100, 40, 3], [0x7200, 50, 2]], True, 120)]
    assert [(r["old"], r["new"]) for r in of(records, "avail_idx")] == [(0, 2)]
    # The device uses the second chain: written to the used ring by hand.
    used = mem.view(queue.used_gpa, 12).cast("H")
    mem.write(queue.used_gpa + 4, h2.to_bytes(4, "little") + (90).to_bytes(4, "little"))
    used[1] = 1
    watch.mark()
    assert queue.reap(mem) == [("indirect", 90)]
    watch.look()
    assert [(r["id"], r["len"]) for r in of(records, "used")] == [(h2, 90)]
    assert [(r["old"], r["new"]) for r in of(records, "used_idx")] == [(0, 1)]
