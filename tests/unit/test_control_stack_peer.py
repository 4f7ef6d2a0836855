"""A link taken down under the MultiOS stack's own virtio driver (docs/control.md):
nobody tells the driver, its rings keep working, the switch drops and counts
both ways; up again, frames flow."""
from __future__ import annotations

import time

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from stack.drivers import VirtioNetNic

from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("datapath")


def frame(src, dst, payload: bytes) -> list:
    return [(bytes(dst.mac) + bytes(src.mac) + b"\x88\xb5" + payload, None)]


def receive(nic, count: int) -> list:
    got = []
    deadline = time.monotonic() + 5
    while len(got) < count:
        got += nic.receive(64)
        assert time.monotonic() < deadline, f"got {len(got)} of {count} frames"
    return got


def test_link_down_under_the_stack_driver(tmp_path):
    bg = BackgroundSwitch()
    nics = []
    try:
        ports = [bg.add_port(VhostUserPort(n, str(tmp_path / f"{n}.sock"))) for n in ("a", "b")]
        a, b = (VirtioNetNic(p.socket_path, reconnect_interval=0.05) for p in ports)
        nics += [a, b]
        wait_for(lambda: a.link_up and b.link_up, "both NICs connected")
        b_port = ports[1]
        bg.call(lambda: b_port.set_link(False))
        for i in range(5):
            assert a.transmit(frame(a, b, b"to b %d" % i)) == 1
            assert b.transmit(frame(b, a, b"to a %d" % i)) == 1        # the ring still takes them
        wait_for(lambda: bg.call(lambda: b_port.counters.errors.get("link down", 0)) == 10,
                 "5 frames dropped each way at b")
        assert bg.call(lambda: (b_port.counters.tx_dropped, b_port.counters.rx_dropped)) == (5, 5)
        assert a.receive(64) == [] and b.receive(64) == []
        assert b.link_up                     # the driver was not told: its rings work
        bg.call(lambda: b_port.set_link(True))
        a.transmit(frame(a, b, b"again"))
        b.transmit(frame(b, a, b"back"))
        assert receive(b, 1)[0][0].endswith(b"again") and receive(a, 1)[0][0].endswith(b"back")
    finally:
        for nic in nics:
            nic.close()
        bg.close()


def test_impairing_a_running_vhost_user_port(tmp_path):
    from nicdev.virtio.impairment import Impairment

    bg = BackgroundSwitch()
    nics = []
    try:
        ports = [bg.add_port(VhostUserPort(n, str(tmp_path / f"{n}.sock"))) for n in ("a", "b")]
        a, b = (VirtioNetNic(p.socket_path, reconnect_interval=0.05) for p in ports)
        nics += [a, b]
        wait_for(lambda: a.link_up and b.link_up, "both NICs connected")
        a.transmit(frame(a, b, b"learn a"))
        b.transmit(frame(b, a, b"learn b"))
        receive(a, 1), receive(b, 1)
        wrapped = bg.call(lambda: bg.switch.set_impairments("b", Impairment(loss=1.0), None))
        for i in range(20):                  # to b: all lost on the way out of port b
            assert a.transmit(frame(a, b, b"lost %d" % i)) == 1
        wait_for(lambda: bg.call(lambda: wrapped.impair_counters["out"].impaired_dropped) == 20, "20 frames lost")
        assert b.receive(64) == []
        b.transmit(frame(b, a, b"from b"))   # the other way is not impaired
        assert receive(a, 1)[0][0].endswith(b"from b")
        bg.call(lambda: bg.switch.set_impairments("b", None, None))
        a.transmit(frame(a, b, b"kept"))
        assert receive(b, 1)[0][0].endswith(b"kept")
    finally:
        for nic in nics:
            nic.close()
        bg.close()
