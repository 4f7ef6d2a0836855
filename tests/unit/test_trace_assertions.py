"""Trace assertions for driver tests (mnet.trace_view.assertions, offered by
the pytest plugin): the counts, and failures that show the numbers."""
from __future__ import annotations

import pytest

from mnet.pytest_plugin import TraceAssertions
from nicdev.virtio.trace import JsonLinesWriter, Tracer


def guest_trace(path):
    """What a device traces while a guest's driver posts 8 RX buffers (one
    avail index move), receives 2 frames and sends 3, a call suppressed
    under EVENT_IDX: written by a real Tracer into a real trace file."""
    now = [100.0]
    writer = JsonLinesWriter(str(path), clock=lambda: now[0])
    device = Tracer("vm0", "device", clock=lambda: now[0])
    device.add_sink(writer)
    device.emit("avail_idx", 0, "rx", old=0, new=8)
    for head in range(2):
        now[0] += 0.01
        device.emit("chain", 0, "rx", head=head, descs=[[0x10000 + head * 0x1000, 1526, 2]], indirect=False,
                    bytes=1526)
        device.emit("used", 0, "rx", id=head, len=98)
        device.emit("call", 0, "rx")
    for head in range(3):
        now[0] += 0.01
        descs = [[0x20000, 12, 1], [0x30000, 86, 0]] if head < 2 else [[0x20000, 12, 1], [0x30000, 40, 1],
                                                                         [0x40000, 46, 0]]
        device.emit("kick", 1, "tx")
        device.emit("chain", 1, "tx", head=head, descs=descs, indirect=False, bytes=98)
        device.emit("used", 1, "tx", id=head, len=0)
        device.emit("call_suppressed", 1, "tx", reason="event_idx")
    device.emit("drop", 0, "rx", reason="no_rx_buffer", len=60)
    writer.close()
    return TraceAssertions.from_file(str(path))


def test_counts_from_a_trace_file(tmp_path):
    trace = guest_trace(tmp_path / "vm0.trace")
    # the device popped 2 receive buffers, but saw the avail index move by 8
    assert trace.rx_buffers_posted("vm0") == 8
    assert trace.longest_chain("vm0") == 3
    assert trace.longest_chain("vm0", queue=0) == 1
    assert trace.chains("vm0", queue=1) == 3
    assert trace.calls("vm0") == 2
    assert trace.calls_suppressed("vm0", reason="event_idx") == 3
    assert trace.calls_suppressed("vm0", reason="no_interrupt") == 0
    assert trace.drops("vm0") == 1 and trace.drops("vm0", reason="too_long") == 0


def test_passing_assertions_are_quiet(tmp_path):
    trace = guest_trace(tmp_path / "vm0.trace")
    trace.assert_rx_buffers_posted("vm0", at_least=8)
    trace.assert_longest_chain("vm0", at_most=3)
    trace.assert_longest_chain("vm0", at_most=1, queue=0)
    trace.assert_calls_suppressed("vm0", reason="event_idx", at_least=3)
    trace.assert_no_drops("nobody")


def test_failures_show_the_numbers(tmp_path):
    trace = guest_trace(tmp_path / "vm0.trace")
    with pytest.raises(AssertionError, match=r"at least 64 RX buffers, the trace shows 8;.*chain 5") as info:
        trace.assert_rx_buffers_posted("vm0", at_least=64)
    assert "q0 rx (device): 2 chains" in str(info.value)
    with pytest.raises(AssertionError, match=r"no chain longer than 2 descriptors on port 'vm0' queue 1, "
                                             r"the longest has 3"):
        trace.assert_longest_chain("vm0", at_most=2, queue=1)
    with pytest.raises(AssertionError, match=r"at least 1 suppressed calls \(no_interrupt\).*shows 0"):
        trace.assert_calls_suppressed("vm0", reason="no_interrupt")
    with pytest.raises(AssertionError, match=r"no drops on port 'vm0', the trace shows no_rx_buffer 1"):
        trace.assert_no_drops("vm0")


def test_a_port_missing_from_the_trace_is_named_with_the_ports_it_has(tmp_path):
    trace = guest_trace(tmp_path / "vm0.trace")
    with pytest.raises(AssertionError, match=r"shows 0; the trace has no records of port 'vm1' \(ports: vm0\)"):
        trace.assert_rx_buffers_posted("vm1", at_least=1)


def test_records_from_a_list_and_the_driver_side():
    """A test's own list sink works as well as a file; `side` tells the
    driver's posted buffers from the device's popped ones."""
    records = []
    driver = Tracer("vm0", "driver", clock=lambda: 1.0)
    device = Tracer("vm0", "device", clock=lambda: 1.0)
    for tracer in (driver, device):
        tracer.add_sink(records.append)
    for head in range(4):
        driver.emit("chain", 0, "rx", head=head, descs=[[0x1000, 1526, 2]], indirect=False, bytes=1526)
    device.emit("chain", 0, "rx", head=0, descs=[[0x1000, 1526, 2]], indirect=False, bytes=1526)
    trace = TraceAssertions(records)
    assert trace.rx_buffers_posted("vm0", side="driver") == 4
    assert trace.rx_buffers_posted("vm0", side="device") == 1


def avail(t, old, new, side="device", queue=0):
    return {"t": t, "port": "vm0", "side": side, "queue": queue, "dir": "rx", "kind": "avail_idx",
            "old": old, "new": new}


def test_posted_buffers_from_the_avail_index_first_seen_wrapping_and_per_side():
    # the first look after the ring started has no old index: the index itself counts
    assert TraceAssertions([avail(1, None, 256)]).rx_buffers_posted("vm0") == 256
    assert TraceAssertions([avail(1, None, 256), avail(2, 256, 300)]).rx_buffers_posted("vm0") == 300
    # a trace that starts late still counts what the index says was posted since setup
    assert TraceAssertions([avail(1, 5000, 5010)]).rx_buffers_posted("vm0") == 5010
    # the 16-bit index wraps: 65530 -> 4 is ten more buffers
    wrapped = [avail(1, None, 65530), avail(2, 65530, 4)]
    assert TraceAssertions(wrapped).rx_buffers_posted("vm0") == 65540
    # both sides of one ring see the same buffers: counted once, not twice
    both = [avail(1, None, 256), avail(1, 0, 256, side="driver")]
    assert TraceAssertions(both).rx_buffers_posted("vm0") == 256
    # transmit queues do not count
    assert TraceAssertions([{**avail(1, None, 9, queue=1), "dir": "tx"}]).rx_buffers_posted("vm0") == 0
