"""A running `mnet switch` changed through its control socket, end to end.

  `mnet switch --control PATH` (a process), ports:
    a  TAP into namespace A, 10.77.0.1     b  TAP into namespace B, 10.77.0.2
    vm vhost-user, qmp=... (a Linux guest booted with an extra QMP monitor, 10.77.0.3)

The host kernel in namespace A pings the one in B through the switch while
the tests throw garbage at the socket, impair port b and take links down
and up with `mnet ctl`.
"""
from __future__ import annotations

import json
import os
import random
import re
import socket
import stat
import subprocess
import threading

import pytest

from guest.wait import wait_in_guest
from nicdev.net.control_client import ControlClient
from nicdev.net.netns import run_in_netns, set_address, temporary_netns

from support.cli import MnetProcess, assert_one_line_error, mnet
from support.guestlab import booted_guest, ping as guest_ping

pytestmark = pytest.mark.integration

IP_A, IP_B, IP_VM = "10.77.0.1", "10.77.0.2", "10.77.0.3"


class CtlLab:
    def __init__(self, tmp, ns_a: str, ns_b: str) -> None:
        tag = os.getpid() % 10000
        self.ns_a, self.ns_b = ns_a, ns_b
        self.tmp = tmp
        self.control = str(tmp / "ctl" / "switch.sock")
        self.vm_socket = str(tmp / "vm.sock")
        self.qmp = str(tmp / "vm-qmp.sock")
        self.ifname_b = f"mc{tag}b"
        self.switch = MnetProcess("switch", f"--control={self.control}",
                                  f"--port=a=tap:mc{tag}a,netns={ns_a}", f"--port=b=tap:mc{tag}b,netns={ns_b}",
                                  f"--port=vm=vhost-user:{self.vm_socket},qmp={self.qmp}")
        try:
            self.switch.expect("switch running")
            set_address(f"mc{tag}a", f"{IP_A}/24", netns=ns_a)
            set_address(f"mc{tag}b", f"{IP_B}/24", netns=ns_b)
        except BaseException:
            self.switch.close()
            raise

    def ping(self, count: int, interval: float = 0.01, wait: int = 2) -> tuple[int, int, str]:
        """busybox ping from namespace A to B: (transmitted, received, output)."""
        proc = run_in_netns(self.ns_a, ["busybox", "ping", "-q", "-c", str(count), "-i", str(interval),
                                        "-W", str(wait), IP_B], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
        out, _ = proc.communicate(timeout=count * interval + wait + 60)
        m = re.search(r"(\d+) packets transmitted, (\d+) packets received", out)
        assert m, out
        return int(m.group(1)), int(m.group(2)), out

    def carrier_b(self) -> str:
        """The host kernel's view of port b's interface: "1" carrier, "0" none."""
        r = subprocess.run(["ip", "netns", "exec", self.ns_b, "cat", f"/sys/class/net/{self.ifname_b}/carrier"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return mnet("ctl", f"--control={self.control}", *args)

    def close(self) -> None:
        self.switch.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with temporary_netns("mnet-ctl-a") as ns_a, temporary_netns("mnet-ctl-b") as ns_b:
        lab = CtlLab(tmp_path_factory.mktemp("ctl"), ns_a, ns_b)
        try:
            yield lab
        finally:
            lab.close()


def test_socket_is_private_to_the_owner(lab):
    assert stat.S_IMODE(os.stat(lab.control).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(lab.control)).st_mode) == 0o700
    assert f"control socket {lab.control}" in lab.switch.out.decode()


def _throw_garbage(path: str, stop: threading.Event, seed: int) -> int:
    """Misbehaving clients, one after the other, until `stop`: returns how many."""
    rng = random.Random(seed)
    held = []               # half-open clients stay connected meanwhile
    n = 0
    while not stop.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)          # the connect too: a full accept queue would block it for ever
        sock.connect(path)
        kind = n % 5
        try:
            if kind == 0:           # random bytes, some lines
                sock.sendall(rng.randbytes(rng.randrange(1, 4096)) + b"\n")
            elif kind == 1:         # oversized
                sock.sendall(b"{" * (100 * 1024))
            elif kind == 2:         # a request never finished
                sock.sendall(b'{"op": "ports", "x": ')
                held.append(sock)
                sock = None
            elif kind == 3:         # well-formed JSON, wrong shapes
                sock.sendall(json.dumps({"op": rng.choice(["link", "impair", "trace_read", "fault", "x"]),
                                         "port": rng.choice(["a", 5, None, "zz"]), "up": "yes"}).encode() + b"\n")
                sock.recv(65536)
            else:                   # connect and vanish mid-request
                sock.sendall(b'{"op": "coun')
        except OSError:
            pass                    # the switch may hang up on a bad client: that is allowed
        if sock is not None:
            sock.close()
        n += 1
        if len(held) > 20:
            held.pop(0).close()
    for sock in held:
        sock.close()
    return n


def test_garbage_at_the_socket_never_stops_the_traffic(lab):
    stop = threading.Event()
    result = {}
    thrower = threading.Thread(target=lambda: result.setdefault("n", _throw_garbage(lab.control, stop, 11)),
                               daemon=True)  # (stuck, it must not keep pytest from exiting)
    thrower.start()
    try:
        sent, received, out = lab.ping(300)
    finally:
        stop.set()
        thrower.join(30)
    assert result.get("n", 0) > 20, "the garbage thread did not get going"
    assert received == sent == 300, out
    assert lab.switch.proc.poll() is None
    with ControlClient(lab.control) as client:
        assert [p["name"] for p in client.ports()] == ["a", "b", "vm"]


def test_loss_set_on_a_running_switch_is_measured(lab):
    r = lab.ctl("impair", "b", "loss=50%,seed=7,impair=out")
    assert r.returncode == 0, r.stderr
    assert "b: impair out [loss 50%, seed 7]" in r.stdout
    try:
        sent, received, out = lab.ping(400, wait=1)
    finally:
        lab.ctl("impair", "b", "clear")
    print(f"loss=50% on b (out): {received} of {sent} echo replies")
    # Each echo request crosses b's impaired direction once: Binomial(400, 0.5),
    # mean 200, standard deviation 10; five deviations either way.
    assert sent == 400 and 150 <= received <= 250, out
    counters = json.loads(lab.ctl("counters").stdout)
    dropped = counters["ports"]["b"]["impairment"]["out"]["impaired_dropped"]
    assert dropped >= sent - received, (dropped, out)
    sent, received, out = lab.ping(50)
    assert received == sent, out


def test_delay_set_on_a_running_switch_shows_in_the_round_trip(lab):
    assert lab.ctl("impair", "b", "delay=40ms,impair=out").returncode == 0
    try:
        _, received, out = lab.ping(5, interval=0.2)
    finally:
        lab.ctl("impair", "b", "clear")
    rtt_min = float(re.search(r"round-trip min/avg/max = ([\d.]+)/", out).group(1))
    print(f"delay=40ms on b (out): {out.strip().splitlines()[-1]}")
    assert received == 5 and rtt_min >= 40.0, out


def test_a_tap_link_down_is_a_carrier_change_and_stops_its_traffic(lab):
    assert lab.carrier_b() == "1"
    r = lab.ctl("link", "b", "down")
    assert r.returncode == 0 and r.stdout.strip() == "b: link down", r
    try:
        assert lab.carrier_b() == "0"              # the kernel behind the TAP sees it too
        _, received, out = lab.ping(5, interval=0.1, wait=1)
        assert received == 0, out
        counters = json.loads(lab.ctl("counters").stdout)["ports"]["b"]
        assert counters["errors"].get("link down", 0) >= 5 and not counters["link_up"]
        assert "link down" in lab.ctl("ports").stdout.splitlines()[1]
    finally:
        assert lab.ctl("link", "b", "up").returncode == 0
    assert lab.carrier_b() == "1"
    sent, received, out = lab.ping(10, interval=0.05)
    assert received == sent, out


def test_ctl_errors_are_one_line(lab, tmp_path):
    assert_one_line_error(lab.ctl("link", "nope", "down"), "ctl", "the switch says: no port named 'nope'")
    assert_one_line_error(lab.ctl("impair", "b", "loss=200%"), "ctl", "more than 100%")
    assert_one_line_error(mnet("ctl", f"--control={tmp_path}/none.sock", "ports"), "ctl",
                          f"no switch listening at {tmp_path}/none.sock")


@pytest.fixture(scope="module")
def guest(lab, mnet_guest_image):
    from qemu.cmdline import extra_qmp_monitor_args

    with booted_guest("vm-ctl", mnet_guest_image, lab.vm_socket, f"{IP_VM}/24", lab.tmp / "work-vm",
                      extra_args=extra_qmp_monitor_args(lab.qmp)) as vm:
        yield vm


def test_link_down_through_mnet_ctl_is_a_carrier_change_in_the_guest(lab, guest):
    wait_in_guest(guest, "grep -q 1 /sys/class/net/eth0/carrier", 20, "carrier on at boot")
    assert guest_ping(guest, IP_A)[0] > 0
    r = lab.ctl("link", "vm", "down")
    assert r.returncode == 0 and r.stdout.startswith("vm: link down"), r
    try:
        wait_in_guest(guest, "grep -q 0 /sys/class/net/eth0/carrier", 20, "carrier off")
        ports = {p["name"]: p for p in ControlClient(lab.control).ports()}
        assert ports["vm"]["link"] is False and ports["vm"]["qmp"].startswith("guest link down")
    finally:
        assert lab.ctl("link", "vm", "up").returncode == 0
    wait_in_guest(guest, "grep -q 1 /sys/class/net/eth0/carrier", 20, "carrier on again")
    received, out = guest_ping(guest, IP_A, count=3)
    assert received == 3, out


def test_trace_live_follows_the_guests_rings(lab, guest):
    live = MnetProcess("trace", "live", f"--control={lab.control}", "--start", "--port", "vm",
                       "--kind", "chain,used", "--duration", "30")
    try:
        # Ping until live has shown the guest's transmit chains (bounded by the test's own limit).
        for _ in range(10):
            guest_ping(guest, IP_A, count=2)
            if b" vm q1 tx chain " in live.out:
                break
            live._pump(1.0)
        live.expect(" vm q1 tx chain ", timeout=5)
        live.expect(" vm q1 tx used ", timeout=5)
    finally:
        status, out, err = live.interrupt()
    assert "Traceback" not in err
    with ControlClient(lab.control) as client:       # --start's tracing was stopped again
        assert [p for p in client.ports() if p["name"] == "vm"]
        page = client.trace_read(since=0)
        assert page["records"][-1]["kind"] == "trace" and page["records"][-1]["state"] == "stop"
