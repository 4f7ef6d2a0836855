"""The stack's own virtio driver against each misbehaving-device mode, on
both data paths: three MultiOS stacks on three ports of one switch; port
"a" misbehaves. The stack on it must survive (no exception escapes its
thread), the other two keep talking meanwhile, and once the mode is
cleared A talks again."""
import os
import threading

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from stack import IpAddress, SocketType, Stack
from stack.arp_cache import ArpCache
from stack.drivers import VirtioNetNic

from support.datapaths import datapath  # noqa: F401  (the fixture)
from support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("datapath")

WAIT = 15.0         # a bound, generous for a loaded machine; nothing waits it out when all is well
IPS = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
BIG = 8000          # a datagram in six fragments: several frames per burst


def exchange(client_stack, server_stack, server_ip, payload, port, timeout=WAIT):
    """One datagram each way between two stacks; fails on a missing one."""
    server = server_stack.socket(SocketType.DATAGRAM)
    server.bind(IpAddress.parse(f"0.0.0.0:{port}"))
    server.set_timeout(timeout)
    client = client_stack.socket(SocketType.DATAGRAM)
    client.set_timeout(timeout)
    try:
        client.send_to(payload, IpAddress.parse(f"{server_ip}:{port}"))
        data, sender = server.recv_from(65535)
        assert data == payload
        server.send_to(payload[::-1], sender)
        assert client.recv(65535) == payload[::-1]
    finally:
        client.close()
        server.close()


def spray(src_stack, dst_ip, count, payload, port=9):
    """Datagrams from `src_stack` that nobody answers (whatever happens to them)."""
    with src_stack.socket(SocketType.DATAGRAM) as sock:
        for _ in range(count):
            sock.send_to(payload, IpAddress.parse(f"{dst_ip}:{port}"))


def device(ports, name):
    return ports[name].device


# What each mode visibly did to port a's device, or to the stack's driver.
MARKS = {
    "stall-tx": lambda dev, nic: nic["tx_frames"] - dev.counters.tx_frames >= 20 and nic.get("tx_drop_ring_full", 0) >= 1,
    "drop-calls": lambda dev, nic: dev.counters.faults.get("calls_dropped", 0) >= 1,
    "delay-used=20ms": lambda dev, nic: dev.counters.faults.get("used_held", 0) >= 20,
    "bad-rx-len": lambda dev, nic: dev.counters.faults.get("rx_len_lies", 0) >= 6 and nic.get("rx_drop_oversize", 0) >= 6,
    "reorder-used": lambda dev, nic: dev.counters.faults.get("used_reordered", 0) >= 6,
    "starve-rx": lambda dev, nic: dev.counters.drops.get("fault_starve_rx", 0) >= 6,
}


@pytest.mark.parametrize("mode", list(MARKS))
def test_the_stack_survives_each_mode_and_recovers(tmp_path, mode):
    with BackgroundSwitch() as bg:
        ports = {n: bg.add_port(VhostUserPort(n, str(tmp_path / f"{n}.sock"))) for n in IPS}
        nics = {n: VirtioNetNic(ports[n].socket_path, reconnect_interval=0.05, timeout=WAIT) for n in IPS}
        stacks = {n: Stack(nics[n], f"{ip}/24", arp_cache=ArpCache(retry_interval=0.1)).start()
                  for n, ip in IPS.items()}
        a, b, c = stacks["a"], stacks["b"], stacks["c"]
        try:
            exchange(a, b, IPS["b"], b"before", 5000)
            exchange(b, c, IPS["c"], b"before", 5001)
            bg.call(lambda: ports["a"].set_fault(mode))
            # Traffic both ways through the faulty port, big datagrams
            # (several frames per burst) and small ones.
            spray(a, IPS["b"], 40, b"from a")
            spray(b, IPS["a"], 4, os.urandom(BIG))
            spray(b, IPS["a"], 20, b"to a")
            spray(a, IPS["b"], 4, os.urandom(BIG))
            if mode == "stall-tx":
                spray(a, IPS["b"], 300, b"more than the ring holds")
            wait_for(lambda: bg.call(lambda: MARKS[mode](device(ports, "a"), a.counters()["nic"])),
                     f"{mode} to show in port a's counters or the stack's")
            # Meanwhile the other ports carry on.
            exchange(b, c, IPS["c"], os.urandom(BIG), 5002)
            assert a.failure is None and _stack_thread_alive(a), f"the stack's thread died under {mode}"
            bg.call(lambda: ports["a"].set_fault(None))
            # UDP is not resent: let the device take what its stalled ring held
            # before the next datagram, or that datagram may find the ring full.
            wait_for(lambda: bg.call(lambda: device(ports, "a").counters.tx_frames) >= a.counters()["nic"]["tx_frames"],
                     "port a's device to take every frame the stack's driver queued", timeout=WAIT)
            exchange(a, b, IPS["b"], os.urandom(BIG), 5003)
            exchange(b, a, IPS["a"], b"and back", 5004)
            assert all(s.failure is None for s in stacks.values())
            assert nics["a"].link_up and nics["a"].counters["link_down"] == 0
            print(mode, "nic a:", dict(nics["a"].counters), "device a:", device(ports, "a").counters.as_dict())
        finally:
            for s in stacks.values():
                s.stop()
            for nic in nics.values():
                nic.close()


def _stack_thread_alive(stack) -> bool:
    name = f"multios-stack-{stack.iface.mac}"
    return any(t.name == name and t.is_alive() for t in threading.enumerate())
