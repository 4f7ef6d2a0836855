"""The MultiOS stack's TCP through Linux's own `tc netem`, 100 MB each way.

The host kernel here has no sch_netem, but the guest's Debian kernel does, so
the bad link is made by a Linux kernel after all: the guest's.

  port "stack"  vhost-user -> a MultiOS Stack on its VirtioNetNic   10.0.0.9
  port "vm"     vhost-user, offloads off -> a Linux guest           10.0.0.1
                (image built with --netem: iproute2's tc, sch_netem, ifb, ...)

netem sits on the guest's eth0 egress (the guest's data or ACKs) and, through
an ingress matchall filter redirecting to ifb0, on what the guest receives.
The guest's port negotiates no offloads and the guest's GSO and GRO are
turned off with ethtool, so netem handles single MTU-sized packets. (With
GSO/GRO on, netem drops whole aggregates: 2 % of skbs was 0.06-0.6 % of
packets, in bursts of ~25.) Measured here: netem on ifb0 dropped 2.0 % of the
stack's 70 k data packets; on eth0 it dropped 0.4 % of the guest's (about 300).
Data is streamed, never stored: the guest has 256 MB of RAM.
"""
from __future__ import annotations

import re

import pytest

from guest.wait import wait_in_guest
from support.guestlab import booted_guest
from support.tcplab import STACK_IP, StackLab, assert_stack_healthy, stack_receive, stack_send

pytestmark = pytest.mark.integration

VM_IP = "10.0.0.1"
MB = 1_000_000
SIZE = 100 * MB
# By path: a bare `tc` runs busybox's applet (Debian's static busybox sh prefers its applets).
TC, ETHTOOL = "/usr/sbin/tc", "/usr/sbin/ethtool"
NETEM = "netem loss 2% delay 5ms reorder 1% duplicate 1% corrupt 0.5%"
TIMEOUT = 400.0           # 100 MB at ~10 Mbit/s is ~80 s; room for a loaded 2-core machine


@pytest.fixture(scope="module")
def netem_image():
    from guest.image import DEFAULT_MODULES, NETEM_MODULES, NETEM_PROGRAMS, build_image

    return build_image(extra_programs=NETEM_PROGRAMS, modules=DEFAULT_MODULES + NETEM_MODULES,
                       progress=lambda line: print(f"[guest image] {line}", flush=True))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = StackLab(tmp_path_factory.mktemp("tcpn"), None)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def vm(lab, netem_image):
    from nicdev.net.vhost_user_port import VhostUserPort

    port = lab.bg.add_port(VhostUserPort("vm", str(lab.tmp / "vm.sock"), offloads=False))
    with booted_guest("vm", netem_image, port.socket_path, f"{VM_IP}/24", lab.tmp / "work-vm") as vm:
        r = vm.run(f"{ETHTOOL} -K eth0 gso off gro off && {TC} qdisc add dev eth0 root {NETEM} && ip link set ifb0 up && "
                   f"{TC} qdisc add dev eth0 handle ffff: ingress && "
                   f"{TC} filter add dev eth0 parent ffff: matchall action mirred egress redirect dev ifb0 && "
                   f"{TC} qdisc add dev ifb0 root {NETEM} && echo netem-on", timeout=30)
        assert r.status == 0 and "netem-on" in r.output, f"setting up netem in the guest failed:\n{r.output}"
        yield vm


def netem_counts(vm, dev: str) -> dict[str, int]:
    """Packets sent and dropped by the netem qdisc on `dev`, from `tc -s qdisc show`."""
    r = vm.run(f"{TC} -s qdisc show dev {dev}", timeout=30)
    assert r.status == 0, r.output
    m = re.search(r"qdisc netem .*?Sent (\d+) bytes (\d+) pkt \(dropped (\d+),", r.output, re.S)
    assert m, f"no netem statistics on {dev}:\n{r.output}"
    return {"bytes": int(m.group(1)), "packets": int(m.group(2)), "dropped": int(m.group(3))}


def guest_result(vm, prefix: str) -> tuple[int, str]:
    r = vm.run(f"cat {prefix}.len {prefix}.sum", timeout=30)
    assert r.status == 0, r.output
    size, digest = r.output.split()[:2]
    return int(size), digest


def test_guest_kernel_sends_100_mb_through_netem(lab, vm):
    """The guest's Linux sends (netem on its egress drops, delays, reorders,
    duplicates and corrupts its data); the stack receives and hashes."""
    from stack import IpAddress, SocketType

    before = netem_counts(vm, "eth0")
    with lab.stack.socket(SocketType.STREAM) as server:
        server.bind(IpAddress.any(6101))
        server.listen(1)
        server.set_timeout(60)
        # tee into a fifo that sha256sum and wc read: the guest hashes what it sent without storing it.
        r = vm.run("rm -f /tmp/tx.*; mkfifo /tmp/tx.fifo /tmp/tx.fifo2; "
                   "(sha256sum < /tmp/tx.fifo | cut -d' ' -f1 > /tmp/tx.sum &"
                   " wc -c < /tmp/tx.fifo2 > /tmp/tx.len &"
                   f" dd if=/dev/urandom bs=1000000 count={SIZE // MB} 2>/dev/null"
                   f" | tee /tmp/tx.fifo /tmp/tx.fifo2 | nc {STACK_IP} 6101; wait; touch /tmp/tx.done)"
                   " >/dev/null 2>&1 &")
        assert r.status == 0, r.output
        conn, peer = server.accept()
        with conn:
            conn.set_timeout(TIMEOUT)
            got, digest = stack_receive(conn)
            info = conn.tcp_info()
    wait_in_guest(vm, "[ -e /tmp/tx.done ]", 120, "the guest's sender finishing")
    sent, sent_digest = guest_result(vm, "/tmp/tx")
    after = netem_counts(vm, "eth0")
    print(f"guest -> stack through netem: {info}\nnetem eth0: {before} -> {after}")
    assert str(peer.ip) == VM_IP
    assert got == sent == SIZE and digest == sent_digest
    assert after["dropped"] - before["dropped"] > 100, (before, after)   # netem really was in the way
    vm.run("rm -f /tmp/tx.*")


def test_stack_sends_100_mb_to_the_guest_kernel_through_netem(lab, vm):
    """The stack sends; netem on the guest's ingress (ifb0) impairs the data,
    netem on its egress the ACKs; the guest hashes what its kernel delivered."""
    from stack import IpAddress, Shutdown, SocketType

    before = netem_counts(vm, "ifb0")
    # busybox nc ends when either input ends: its stdin is a fifo that a
    # background sleep holds open, so it stops at the stack's FIN.
    r = vm.run("rm -f /tmp/rx.*; mkfifo /tmp/rx.hold /tmp/rx.fifo; "
               f"(sleep {int(TIMEOUT)} > /tmp/rx.hold & s=$!; wc -c < /tmp/rx.fifo > /tmp/rx.len & w=$!;"
               " nc -l -p 6102 < /tmp/rx.hold | tee /tmp/rx.fifo | sha256sum | cut -d' ' -f1 > /tmp/rx.sum;"
               " kill $s; wait $w; touch /tmp/rx.done) >/dev/null 2>&1 &")
    assert r.status == 0, r.output
    wait_in_guest(vm, "netstat -ltn | grep -q ':6102 '", 20, "nc listening")
    with lab.stack.socket(SocketType.STREAM) as sock:
        sock.set_timeout(TIMEOUT)
        sock.connect(IpAddress(VM_IP, 6102))
        digest = stack_send(sock, SIZE)
        sock.shutdown(Shutdown.WRITE)
        wait_in_guest(vm, "[ -e /tmp/rx.done ]", TIMEOUT, "nc in the guest finishing")
        info = sock.tcp_info()
    got, got_digest = guest_result(vm, "/tmp/rx")
    after = netem_counts(vm, "ifb0")
    print(f"stack -> guest through netem: {info}\nnetem ifb0: {before} -> {after}")
    assert got == SIZE and got_digest == digest
    assert after["dropped"] - before["dropped"] > 100, (before, after)
    assert info.retransmits > 0 and info.fast_retransmits > 0, info


def test_the_stack_stayed_healthy(lab, vm):
    assert_stack_healthy(lab.stack)
