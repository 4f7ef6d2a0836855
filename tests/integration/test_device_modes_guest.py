"""Misbehaving-device modes against real drivers: a Linux guest's virtio_net
and the MultiOS stack's own driver, with what each did asserted.

One lab for the module: a switch (in this process, on its own thread) with
  port "vm"    vhost-user -> a Linux guest under QEMU        10.0.0.1
  port "stack" vhost-user -> a MultiOS Stack (VirtioNetNic)   10.0.0.9
  port "host"  TAP into a namespace this module creates      10.0.0.254
A mode is set on one port at a time, the two others keep talking meanwhile
(the host kernel pings the stack, or the guest pings the host), and every
test clears its mode and checks the port's driver recovers, so the guest is
shared by the whole module. docs/device-modes.md reports what we saw.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from guest.wait import wait_in_guest
from support.guestlab import ping
from support.tcplab import HOST_IP, STACK_IP, WAIT, StackGuestLab
from support.waiting import wait_for

pytestmark = pytest.mark.integration

PING = ["ping"] if shutil.which("ping") else ["busybox", "ping"]
# "NETDEV WATCHDOG: eth0 (virtio_net): transmit queue 0 timed out" in older
# kernels, "virtio_net virtio0 eth0: NETDEV WATCHDOG: CPU: 0: transmit queue 0
# timed out 5740 ms" in newer ones (Debian 12's 6.1 has the second).
WATCHDOG_LINE = re.compile(r"eth0.*NETDEV WATCHDOG: .*transmit queue 0 timed out")


class Lab(StackGuestLab):
    def __init__(self, tmp, netns: str) -> None:
        from stack.arp_cache import ArpCache

        super().__init__(tmp, netns, nic_options={"reconnect_interval": 0.1},
                         arp_cache=ArpCache(retry_interval=0.2))

    def host_ping(self, ip: str, count: int = 3) -> int:
        """The host kernel's ping from the namespace; replies received."""
        r = subprocess.run(["ip", "netns", "exec", self.netns, *PING, "-c", str(count), "-W", "2", ip],
                           capture_output=True, text=True, timeout=30)
        m = re.search(r"(\d+) (?:packets )?received", r.stdout)
        return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-flt") as netns:
        lab = Lab(tmp_path_factory.mktemp("modes"), netns)
        try:
            yield lab
        finally:
            lab.close()


@pytest.fixture(scope="module")
def vm(lab, guest_image):
    vm = lab.boot_vm(guest_image)
    got, out = ping(vm, STACK_IP, count=2, deadline=20)
    assert got >= 1, out
    return vm


@pytest.fixture
def guest_mode(lab, vm):
    """Set a mode on the guest's port; the test clears it, or this does."""
    def set_mode(mode):
        lab.set_fault("vm", mode)
    yield set_mode
    lab.set_fault("vm", None)
    got, out = ping(vm, STACK_IP, count=3, deadline=20)
    assert got >= 1, f"the guest did not recover: {out}"


def guest_stat(vm, name: str) -> int:
    r = vm.run(f"cat /sys/class/net/eth0/statistics/{name}")
    assert r.status == 0, r.output
    return int(r.output.strip())


def assert_bystanders_talk(lab):
    """The host kernel and the stack, through the two other ports."""
    assert lab.host_ping(STACK_IP) == 3


def assert_no_oops(vm):
    log = vm.run("dmesg").output
    for bad in ("Oops", "BUG:", "general protection", "Kernel panic"):
        assert bad not in log, log[-3000:]


# -- a Linux guest's virtio_net ------------------------------------------------------------------

def test_stall_tx_linux_reports_a_transmit_timeout(lab, vm, guest_mode):
    guest_mode("stall-tx")
    # More datagrams than the TX ring has room for: the queue stops, and
    # the watchdog (5 s) finds it stopped. Unfinished datagrams stay charged
    # to their socket, so one sender blocks before the ring is full: four.
    # Broadcast, so no ARP answer is needed (the one from docs/device-modes.md).
    r = vm.run("rm -f /tmp/blast.pids; for i in 1 2 3 4; do "
               "(dd if=/dev/zero bs=500 count=200 2>/dev/null | socat -u -b 500 STDIN UDP-DATAGRAM:10.0.0.255:9,broadcast) "
               ">/dev/null 2>&1 & echo $! >> /tmp/blast.pids; done")
    assert r.status == 0, r.output
    wait_in_guest(vm, "dmesg | grep -q 'NETDEV WATCHDOG'", 30, "the transmit timeout in the kernel log")
    log = vm.run("dmesg").output
    assert WATCHDOG_LINE.search(log), log[-3000:]
    print("guest kernel:", *[line for line in log.splitlines() if "NETDEV WATCHDOG" in line or "TX timeout" in line],
          sep="\n  ")
    assert_bystanders_talk(lab)
    before = guest_stat(vm, "tx_packets")
    lab.set_fault("vm", None)
    vm.run("kill $(cat /tmp/blast.pids) 2>/dev/null; true")
    got, out = ping(vm, STACK_IP, count=3, deadline=20)
    assert got >= 1, out                                    # the queue woke when the chains completed
    assert guest_stat(vm, "tx_packets") > before
    assert_no_oops(vm)        # the watchdog's WARN prints a call trace, but no oops


def test_drop_calls_linux_stops_receiving_until_a_call_comes(lab, vm, guest_mode):
    rx_before, tx_before = guest_stat(vm, "rx_packets"), guest_stat(vm, "tx_packets")
    guest_mode("drop-calls")
    got, out = ping(vm, STACK_IP, count=3, deadline=4)
    assert got == 0, out                    # the replies wait in the RX ring: no interrupt, no NAPI poll
    assert guest_stat(vm, "rx_packets") == rx_before
    # virtio_net counts a sent packet when it reaps its completion, which
    # it does on its next transmit without waiting for an interrupt.
    assert guest_stat(vm, "tx_packets") >= tx_before + 2
    assert lab.device_counters("vm")["faults"].get("calls_dropped", 0) >= 1
    assert_bystanders_talk(lab)
    lab.set_fault("vm", None)               # the call owed on each ring
    got, out = ping(vm, STACK_IP, count=3, deadline=10)
    assert got == 3, out
    assert guest_stat(vm, "rx_packets") >= rx_before + 6    # the held replies came in too
    assert_no_oops(vm)


def test_delay_used_linux_sees_its_round_trips_grow(lab, vm, guest_mode):
    guest_mode("delay-used=200ms")
    got, out = ping(vm, STACK_IP, count=3, deadline=15)
    assert got == 3, out
    m = re.search(r"min/avg/max = ([\d.]+)/", out)
    assert m and float(m.group(1)) >= 200, out      # each reply's used entry waited 200 ms
    assert_bystanders_talk(lab)
    assert_no_oops(vm)


def test_bad_rx_len_linux_counts_length_errors_and_drops(lab, vm, guest_mode):
    errors = guest_stat(vm, "rx_length_errors")
    guest_mode("bad-rx-len")
    got, out = ping(vm, STACK_IP, count=3, deadline=4)
    assert got == 0, out
    now = guest_stat(vm, "rx_length_errors")
    print(f"guest rx_length_errors {errors} -> {now}")
    assert now >= errors + 3
    assert lab.device_counters("vm")["faults"]["rx_len_lies"] >= 3
    assert_bystanders_talk(lab)
    assert_no_oops(vm)


def test_reorder_used_linux_carries_on(lab, vm, guest_mode):
    guest_mode("reorder-used")
    # 8000-byte pings: six fragments each way in one burst, completed newest first.
    got, out = ping(vm, STACK_IP, count=5, deadline=15)
    assert got == 5, out
    r = vm.run(f"ping -c 5 -s 8000 -w 15 {STACK_IP}", timeout=30)
    assert " 5 packets received" in r.output, r.output
    assert lab.device_counters("vm")["faults"].get("used_reordered", 0) >= 6
    assert_bystanders_talk(lab)
    assert_no_oops(vm)


def test_starve_rx_linux_receives_nothing_and_counts_nothing(lab, vm, guest_mode):
    rx, rx_errors, rx_dropped = (guest_stat(vm, n) for n in ("rx_packets", "rx_errors", "rx_dropped"))
    guest_mode("starve-rx")
    got, out = ping(vm, STACK_IP, count=3, deadline=4)
    assert got == 0, out
    assert guest_stat(vm, "rx_packets") == rx
    assert (guest_stat(vm, "rx_errors"), guest_stat(vm, "rx_dropped")) == (rx_errors, rx_dropped)
    assert lab.device_counters("vm")["drops"].get("fault_starve_rx", 0) >= 3
    assert_bystanders_talk(lab)
    assert_no_oops(vm)


# -- the stack's own driver ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["stall-tx", "drop-calls", "delay-used=50ms", "bad-rx-len", "reorder-used",
                                  "starve-rx"])
def test_the_stack_survives_each_mode(lab, vm, mode):
    lab.set_fault("stack", mode)
    try:
        lab.host_ping(STACK_IP, count=3)            # whatever comes of it
        ping(vm, STACK_IP, count=3, deadline=4)
        got, out = ping(vm, HOST_IP, count=3, deadline=10)
        assert got == 3, f"guest -> host while the stack's port has {mode}: {out}"
        assert lab.stack.failure is None
    finally:
        lab.set_fault("stack", None)
    wait_for(lambda: lab.host_ping(STACK_IP, count=1) == 1, f"the stack to answer again after {mode}", timeout=WAIT)
    got, out = ping(vm, STACK_IP, count=3, deadline=10)
    assert got == 3, out
    assert lab.stack.failure is None and lab.nic.link_up
