"""The plugin's `mnet_trace` fixture: every port of `mnet_switch` recorded
from the start, read back as TraceAssertions. Two stack virtio drivers on two
ports of the switch are the guests (no QEMU)."""
from __future__ import annotations

import time

from stack.drivers.virtio_driver import VirtioNetNic

QUEUE_SIZE = 64


def receive(nic, count, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += nic.receive(64)
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {count} frames; counters {dict(nic.counters)}")
        time.sleep(0.001)
    return got


def test_mnet_trace_records_every_port_of_the_switch(mnet_switch, mnet_trace):
    a = VirtioNetNic(mnet_switch.vhost_user_port("a").socket_path, queue_size=QUEUE_SIZE)
    b = VirtioNetNic(mnet_switch.vhost_user_port("b").socket_path, queue_size=QUEUE_SIZE)
    try:
        frames = [bytes(b.mac) + bytes(a.mac) + b"\x88\xb5" + bytes([i]) * 100 for i in range(3)]
        sent = 0
        deadline = time.monotonic() + 10
        while sent < len(frames) and time.monotonic() < deadline:
            sent += a.transmit([(f, None) for f in frames[sent:]])
        receive(b, 3)
    finally:
        a.close()
        b.close()

    trace = mnet_trace.assertions()
    assert trace.chains("a", queue=1) == 3
    assert trace.chains("b", queue=0) == 3
    # b's driver filled its receive ring; the device saw the index when the first frame came
    trace.assert_rx_buffers_posted("b", at_least=QUEUE_SIZE // 2)
    trace.assert_longest_chain("a", at_most=2, queue=1)
    trace.assert_no_drops("a")
    assert mnet_trace.path.endswith("ring.trace")
    mnet_trace.stop()               # again: harmless (the fixture stops it after the test too)


def test_stop_with_a_snapshot_reads_counters_on_the_switch_at_that_moment(mnet_switch, mnet_trace):
    import threading

    port = mnet_switch.vhost_user_port("a")
    seen = mnet_trace.stop(snapshot=lambda: (threading.current_thread().name, port.counters.as_dict()))
    assert seen[0] == "mnet-switch" and seen[1]["rx_frames"] == 0
    assert mnet_trace.stop(snapshot=lambda: "again") is None       # already stopped: nothing runs
