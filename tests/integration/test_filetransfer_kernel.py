"""Reliable file transfer over UDP between the MultiOS stack and the host
kernel, through a link that loses 5 % of the frames each way.

One lab for the module: a switch on a thread of this process with
  port "stack"  vhost-user -> `mnet transfer send` / `mnet stack --serve udp-file`
                (a process with its own stack)                             10.0.0.9
  port "host"   TAP into a namespace this module creates, wrapped in an
                ImpairedPort losing 5 % of the frames in each direction     10.0.0.254
where `mnet transfer ... --kernel` runs on the kernel's UDP sockets.

20 MB go each way; the receiver's file must have the sender's SHA-256 and the
switch's impairment counters must show the drops (so the loss was there).
"""
from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
import time

import pytest

from support.cli import MNET, Output, start_mnet_stack

pytestmark = pytest.mark.integration

HOST_IP = "10.0.0.254"
STACK_IP = "10.0.0.9"
STACK_MAC = "52:54:00:00:09:09"  # the same for every stack process, so the kernel's ARP entry stays right
PORT = 6969
SIZE = 20_000_000
LOSS = 0.05
WAIT = 120.0        # bound on one 20 MB transfer (it takes seconds)


class Lab:
    def __init__(self, tmp, netns: str) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.impair import ImpairedPort
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort
        from nicdev.virtio.impairment import Impairment

        self.tmp, self.netns = tmp, netns
        self.stack_sock = str(tmp / "stack.sock")
        self.bg = BackgroundSwitch()
        try:
            self.bg.add_port(VhostUserPort("stack", self.stack_sock))
            tap = TapPort("host", "mnftp%d", netns=netns)
            self.host = self.bg.add_port(ImpairedPort(tap))
            ns.set_address(tap.ifname, f"{HOST_IP}/24", netns=netns)
            self.bg.call(lambda: self.host.set_impairments(Impairment(loss=LOSS, seed=1), Impairment(loss=LOSS, seed=2)))
        except BaseException:
            self.bg.close()
            raise

    def dropped(self) -> dict[str, int]:
        """Frames the impairment dropped so far, per direction (out: to the kernel)."""
        stats = self.bg.call(self.host.impairment_stats)
        return {way: stats[way]["impaired_dropped"] for way in ("out", "in")}

    def kernel_mnet(self, *args: str) -> subprocess.Popen:
        """`mnet ARGS` in the namespace, on the kernel's sockets."""
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *MNET, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        print(self.bg.summary())
        self.bg.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-ftp") as netns:
        lab = Lab(tmp_path_factory.mktemp("ftp"), netns)
        try:
            yield lab
        finally:
            lab.close()


def make_file(path, seed: int) -> str:
    data = random.Random(seed).randbytes(SIZE)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_20_mb_from_the_stack_to_the_kernel_through_5_percent_loss(lab):
    digest = make_file(lab.tmp / "to-kernel.bin", 1)
    inbox = lab.tmp / "kernel-inbox"
    inbox.mkdir()
    receiver = lab.kernel_mnet("transfer", "receive", "--kernel", "--port", str(PORT), "--dir", str(inbox))
    output = Output(receiver)
    try:
        output.until(r"^listening on 0\.0\.0\.0:6969")
        before = lab.dropped()
        started = time.monotonic()
        sender = subprocess.run([*MNET, "transfer", "send", str(lab.tmp / "to-kernel.bin"), "--to", f"{HOST_IP}:{PORT}",
                                 "--nic", f"vhost-user:{lab.stack_sock}", "--ip", f"{STACK_IP}/24", "--mac", STACK_MAC],
                                capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        out, err = output.finish(timeout=WAIT)
    finally:
        receiver.kill()
    after = lab.dropped()
    print(f"stack -> kernel: 20 MB in {seconds:.1f} s (with the stack's start); {sender.stdout}{out}"
          f"frames dropped by the switch: {after['out'] - before['out']} to the kernel, "
          f"{after['in'] - before['in']} from it", file=sys.stderr)
    assert sender.returncode == 0, sender.stderr
    assert re.search(rf"^sent to-kernel\.bin: {SIZE} bytes .* sha256 {digest} match$", sender.stdout, re.M), sender.stdout
    assert receiver.returncode == 0, err
    assert re.search(rf"^received to-kernel\.bin from {STACK_IP}:\d+ into .*: {SIZE} bytes .* sha256 {digest} match$",
                     out, re.M), out
    assert hashlib.sha256((inbox / "to-kernel.bin").read_bytes()).hexdigest() == digest
    assert [p.name for p in inbox.iterdir()] == ["to-kernel.bin"]
    # 14,286 data datagrams at 5 %: hundreds of them lost, so the retransmissions were needed; the
    # acknowledgements (one per burst received, a few hundred) lost some too.
    assert after["out"] - before["out"] > 300 and after["in"] - before["in"] > 0
    retransmitted = int(re.search(r"(\d+) retransmitted", sender.stdout)[1])
    assert retransmitted >= after["out"] - before["out"] - 50  # (the lost frames include a few ARP and ACK ones)


def test_20_mb_from_the_kernel_into_serve_udp_file_through_5_percent_loss(lab):
    digest = make_file(lab.tmp / "to-stack.bin", 2)
    inbox = lab.tmp / "stack-inbox"
    inbox.mkdir()
    proc, output = start_mnet_stack("--nic", f"vhost-user:{lab.stack_sock}", "--ip", f"{STACK_IP}/24",
                                    "--mac", STACK_MAC, "--serve", f"udp-file:{PORT},dir={inbox}")
    try:
        output.until(r"^stack up: ")
        before = lab.dropped()
        started = time.monotonic()
        sender = lab.kernel_mnet("transfer", "send", str(lab.tmp / "to-stack.bin"), "--to", f"{STACK_IP}:{PORT}",
                                 "--kernel")
        sent, err = sender.communicate(timeout=WAIT)
        seconds = time.monotonic() - started
        line = output.until(rf"^udp-file:{PORT} ")[-1]
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    after = lab.dropped()
    print(f"kernel -> stack: 20 MB in {seconds:.1f} s; {sent}{line}frames dropped by the switch: "
          f"{after['out'] - before['out']} to the kernel, {after['in'] - before['in']} from it", file=sys.stderr)
    assert sender.returncode == 0, err
    assert re.search(rf"^sent to-stack\.bin: {SIZE} bytes .* sha256 {digest} match$", sent, re.M), sent
    assert re.fullmatch(rf"udp-file:{PORT} received to-stack\.bin from {HOST_IP}:\d+ into .*: {SIZE} bytes .* "
                        rf"sha256 {digest} match\n", line), line
    assert hashlib.sha256((inbox / "to-stack.bin").read_bytes()).hexdigest() == digest
    assert after["in"] - before["in"] > 300 and after["out"] - before["out"] > 0
