"""`mnet stack` and `mnet ping` as a user runs them, against a switch.

One lab per module: a switch in this process with two vhost-user ports
(one for `mnet stack`, one for each `mnet ping`) and a TAP port into a
namespace this module creates, where the host kernel is the peer at
10.0.0.254 (with forwarding on, so it answers "net unreachable" for
addresses it has no route to, as a router would).
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from support.cli import mnet, start_mnet_stack
from support.kernel_peer import KernelPeerLab

pytestmark = pytest.mark.integration

HOST_IP = "10.0.0.254"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with KernelPeerLab(tmp_path_factory.mktemp("stackcli"), "scli", host_ips=(HOST_IP,),
                       vhost_ports=("stack", "ping")) as lab:
        # A router's answer to an address it has no route to: "net unreachable".
        subprocess.run(["ip", "netns", "exec", lab.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        yield lab


def kernel_udp(netns: str, dst: str, port: int, messages: list[bytes]) -> subprocess.CompletedProcess:
    """The kernel (python in the namespace) sends each message and prints each reply's repr."""
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\n"
            "s.connect((sys.argv[1],int(sys.argv[2])))\n"
            "for m in sys.argv[3:]:\n"
            "    s.send(m.encode()); print(s.recv(65535).decode())\n")
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, dst, str(port),
                           *(m.decode() for m in messages)], capture_output=True, text=True, timeout=30)


# -- mnet stack ----------------------------------------------------------------------------------

def test_mnet_stack_serves_udp_echo_to_the_kernel_and_prints_counters_on_sigint(lab):
    proc, output = start_mnet_stack("--nic", f"vhost-user:{lab.sockets['stack']}", "--ip", "10.0.0.9/24",
                                    "--mac", "52:54:00:00:00:09", "--serve", "udp-echo:7", "--serve", "udp-echo:1234")
    try:
        banner = output.until(r"^stack up: ")
        assert "serving udp-echo on port 7\n" in banner and "serving udp-echo on port 1234\n" in banner, banner
        assert "mac 52:54:00:00:00:09" in banner[-1], banner
        r = kernel_udp(lab.netns, "10.0.0.9", 7, [b"one", b"two", b"three"])
        assert r.returncode == 0 and r.stdout.split() == ["one", "two", "three"], r.stdout + r.stderr
        r = kernel_udp(lab.netns, "10.0.0.9", 1234, [b"x" * 3000])  # fragmented both ways
        assert r.returncode == 0 and r.stdout.strip() == "x" * 3000, r.stdout[:200] + r.stderr
        proc.send_signal(signal.SIGINT)
        out, err = output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err, err
    counters = out[out.index("counters:"):]
    udp = re.search(r"^\s*udp\s+(.*)$", counters, re.M)
    assert udp and re.search(r"\brx 4\b", udp.group(1)) and re.search(r"\btx 4\b", udp.group(1)), counters
    assert re.search(r"^\s*nic\s+.*tx_frames \d+", counters, re.M), counters


def test_mnet_stack_trace_records_the_drivers_side_of_the_rings(lab, tmp_path):
    from nicdev.virtio.trace import read_trace

    trace = tmp_path / "stack.trace"
    proc, output = start_mnet_stack("--nic", f"vhost-user:{lab.sockets['stack']}", "--ip", "10.0.0.9/24",
                                    "--serve", "udp-echo:7", "--trace", str(trace))
    try:
        output.until(r"^stack up: ")
        r = kernel_udp(lab.netns, "10.0.0.9", 7, [b"one", b"two", b"three"])
        assert r.returncode == 0 and r.stdout.split() == ["one", "two", "three"], r.stdout + r.stderr
        proc.send_signal(signal.SIGINT)
        out, err = output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0 and "Traceback" not in err, err
    records = list(read_trace(str(trace)))          # every line checked against the schema
    assert records[0]["kind"] == "header" and all(r["side"] == "driver" for r in records[1:])
    kinds = {r["kind"] for r in records}
    assert {"vhost_msg", "features", "ring", "chain", "used", "avail_idx", "used_idx", "kick"} <= kinds, kinds
    nic = re.search(r"^\s*nic\s+(.*)$", out, re.M).group(1)
    tx_frames = int(re.search(r"\btx_frames (\d+)", nic).group(1))
    tx_chains = [r for r in records if r["kind"] == "chain" and r["dir"] == "tx"]
    assert len(tx_chains) == tx_frames >= 3, (len(tx_chains), nic)
    # The three echoes: Ethernet, IPv4, UDP headers and 3-5 bytes, behind the 12-byte virtio header.
    sizes = [c["bytes"] for c in tx_chains]
    assert all(sizes.count(12 + 42 + n) >= k for n, k in ((3, 2), (5, 1))), sizes
    rx_used = [r for r in records if r["kind"] == "used" and r["dir"] == "rx"]
    rx_frames = int(re.search(r"\brx_frames (\d+)", nic).group(1))
    assert len(rx_used) == rx_frames >= 3, (len(rx_used), nic)
    assert f"trace: {len(records) - 1} records in {trace}" in out, out


def test_mnet_stack_refuses_the_kernel_on_a_port_it_does_not_serve(lab):
    proc, output = start_mnet_stack("--nic", f"vhost-user:{lab.sockets['stack']}", "--ip", "10.0.0.9/24",
                                    "--serve", "udp-echo:7")
    try:
        output.until(r"^stack up: ")
        r = kernel_udp(lab.netns, "10.0.0.9", 8, [b"hello?"])
        assert r.returncode != 0 and "ConnectionRefusedError" in r.stderr, r.stdout + r.stderr
        proc.send_signal(signal.SIGTERM)
        out, err = output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert re.search(r"^\s*icmpv4\s+.*tx_error 1", out, re.M), out


# -- mnet ping -------------------------------------------------------------------------------------

def test_mnet_ping_the_kernel_prints_replies_and_rtts_like_ping(lab):
    r = mnet("ping", "--nic", f"vhost-user:{lab.sockets['ping']}", "--ip", "10.0.0.8/24", "-c", "3", "-i", "0.2",
             "-s", "100", HOST_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"PING {HOST_IP} ({HOST_IP}) 100(128) bytes of data.", lines
    replies = [line for line in lines if line.startswith("108 bytes from")]
    assert len(replies) == 3, r.stdout
    for seq, line in enumerate(replies, 1):
        assert re.fullmatch(rf"108 bytes from {HOST_IP}: icmp_seq={seq} ttl=64 time=\d+\.\d\d ms", line), line
    assert f"--- {HOST_IP} ping statistics ---" in lines
    assert re.search(r"^3 packets transmitted, 3 received, 0% packet loss, time \d+ms$", r.stdout, re.M), r.stdout
    assert re.search(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", r.stdout, re.M), r.stdout


def test_mnet_ping_an_address_nobody_has_exits_1_with_full_loss(lab):
    # ARP for 10.0.0.77 gets no answer: ping(8)'s "Destination Host Unreachable", from ourselves
    started = time.monotonic()
    r = mnet("ping", "--nic", f"vhost-user:{lab.sockets['ping']}", "--ip", "10.0.0.8/24", "-c", "2", "-W", "1",
             "10.0.0.77")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert re.search(r"^2 packets transmitted, 0 received(, \+\d errors)?, 100% packet loss", r.stdout, re.M), \
        r.stdout
    assert "rtt min" not in r.stdout
    assert time.monotonic() - started < 30


def test_mnet_ping_through_a_gateway_without_a_route_reports_net_unreachable(lab):
    r = mnet("ping", "--nic", f"vhost-user:{lab.sockets['ping']}", "--ip", "10.0.0.8/24", "--gateway", HOST_IP,
             "-c", "2", "-i", "0.2", "192.0.2.1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.findall(rf"^From {HOST_IP} icmp_seq=(\d) Destination Net Unreachable$", r.stdout, re.M) == ["1", "2"], \
        r.stdout
    assert "2 packets transmitted, 0 received, +2 errors, 100% packet loss" in r.stdout, r.stdout


# -- bad input: one clear line, non-zero ------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["stack", "--nic", "tap:x", "--ip", "10.0.0.9/24"], "bad --nic 'tap:x': expected vhost-user:PATH"),
    (["stack", "--nic", "vhost-user:", "--ip", "10.0.0.9/24"], "bad --nic 'vhost-user:'"),
    (["stack", "--nic", "vhost-user:S", "--ip", "10.0.0.9"], "give the prefix length too, like 10.0.0.9/24"),
    (["stack", "--nic", "vhost-user:S", "--ip", "10.0.0.300/24"], "bad --ip '10.0.0.300/24'"),
    (["stack", "--nic", "vhost-user:S", "--ip", "10.0.0.9/24", "--gateway", "10.1.0.1"],
     "bad --gateway '10.1.0.1': not in 10.0.0.0/24"),
    (["stack", "--nic", "vhost-user:S", "--ip", "10.0.0.9/24", "--mac", "52:54:00"], "bad --mac '52:54:00'"),
    (["stack", "--nic", "vhost-user:S", "--ip", "10.0.0.9/24", "--serve", "sctp-echo:7"], "bad --serve 'sctp-echo:7'"),
    (["stack", "--nic", "vhost-user:S", "--ip", "10.0.0.9/24", "--serve", "udp-echo:70000"],
     "port must be 1..65535"),
    (["ping", "--nic", "vhost-user:S", "--ip", "10.0.0.9/24", "example.org"], "bad host 'example.org'"),
    (["ping", "--nic", "vhost-user:S", "--ip", "10.0.0.9/24", "-c", "0", "10.0.0.1"], "bad -c/-s/-i/-W value"),
    (["stack", "--nic", "vhost-user:/nonexistent/mnet.sock", "--ip", "10.0.0.9/24"],
     "no vhost-user backend listening on /nonexistent/mnet.sock"),
])
def test_bad_options_give_one_clear_line(args, message):
    r = mnet(*args, timeout=30)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mnet {args[0]}: ") and message in err[0], r.stderr
    assert r.stdout == ""


def test_a_port_served_twice_is_one_clear_line(lab):
    r = mnet("stack", "--nic", f"vhost-user:{lab.sockets['stack']}", "--ip", "10.0.0.9/24",
             "--serve", "udp-echo:7", "--serve", "udp-echo:7", timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == "mnet stack: --serve udp-echo:7: address 0.0.0.0:7 is already in use", r.stderr


def test_missing_required_options_are_usage_errors():
    r = mnet("stack", "--ip", "10.0.0.9/24", timeout=30)
    assert r.returncode == 2 and "the following arguments are required: --nic" in r.stderr, r.stderr
