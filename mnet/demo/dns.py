"""DNS: dnsmasq on the host kernel's side answers, the stack's DnsClient asks."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time

from .lab import HOST_IP, STACK_IP
from .report import CheckFailed, detail, step

NAME = "multios.test"          # the stack's name: an A record ...
ALIAS = "www.multios.test"     # ... and a CNAME to it
READY_WAIT = 10.0

# Asks dnsmasq for NAME over UDP from inside the namespace until it answers (bounded).
_PROBE = """
import socket, sys, time
q = bytes.fromhex('00010100000100000000000007') + b'multios' + bytes([4]) + b'test' + bytes.fromhex('0000010001')
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
    try:
        s.sendto(q, (sys.argv[1], 53)); s.recv(512); print('up'); break
    except OSError:
        time.sleep(0.1)
    finally:
        s.close()
"""


def dnsmasq_argv() -> list[str]:
    """Answers from its command line only: no upstream, no /etc/hosts, nothing outside `test`."""
    return ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file=", "--user=root",
            "--log-facility=-", "--log-queries", f"--listen-address={HOST_IP}", "--bind-interfaces",
            "--local=/test/", f"--host-record={NAME},{STACK_IP}", f"--cname={ALIAS},{NAME}"]


@contextlib.contextmanager
def running_dnsmasq(lab):
    """dnsmasq on port 53 of the namespace, answering once this is entered; stopped at the end."""
    step(f"dnsmasq in the namespace on {HOST_IP}:53 ({NAME} -> {STACK_IP}, {ALIAS} is an alias of it)")
    log = open(lab.workdir / "dnsmasq.log", "wb")
    proc = subprocess.Popen(["ip", "netns", "exec", lab.netns, *dnsmasq_argv()], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = subprocess.run(["ip", "netns", "exec", lab.netns, sys.executable, "-c", _PROBE, HOST_IP,
                                str(READY_WAIT)], capture_output=True, text=True, timeout=READY_WAIT + 10)
        if probe.stdout.strip() != "up":
            raise RuntimeError(f"dnsmasq did not answer within {READY_WAIT:.0f} s "
                               f"(exit status {proc.poll()}): {(lab.workdir / 'dnsmasq.log').read_text()[-300:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stack_resolves(lab) -> str:
    """The stack's DnsClient asks dnsmasq for the alias: the CNAME is followed to the stack's address."""
    from stack.dns.client import DnsClient

    client = DnsClient(lab.stack, [HOST_IP])
    started = time.monotonic()
    answer = client.lookup(ALIAS)
    took = time.monotonic() - started
    detail(f"{ALIAS} is an alias for {answer.canonical_name}, which has address(es) {', '.join(answer.addresses)}")
    if (answer.canonical_name, answer.addresses) != (NAME, [STACK_IP]):
        raise CheckFailed(f"{ALIAS} resolved to {answer.canonical_name} {answer.addresses}, "
                          f"expected {NAME} [{STACK_IP}]")
    return f"{ALIAS} -> {NAME} -> {STACK_IP} in {took * 1000:.0f} ms"
