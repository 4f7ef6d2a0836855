"""dnsmasq as a real DNS server for integration tests: run in a namespace the test made,
answering only from its command line (no upstream, no /etc/hosts), with a bounded wait
until it answers and its query log kept in a file (tests read it to see it was asked)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def dnsmasq_argv(listen_ip: str, port: int, records: list[str]) -> list[str]:
    """dnsmasq in the foreground on ``listen_ip:port``, logging queries to stdout; ``records``
    are its own options (``--address=/plain.test/10.1.2.3``, ``--host-record=...``)."""
    return ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file=",
            "--user=root", "--log-facility=-", "--log-queries", f"--port={port}",
            f"--listen-address={listen_ip}", "--bind-interfaces", *records]


def wait_for_dnsmasq(netns: str, proc: subprocess.Popen, ip: str, port: int, wait: float) -> None:
    """Bounded: until the kernel in the namespace gets an answer from dnsmasq over UDP."""
    code = ("import socket,sys,time\n"
            "q=bytes.fromhex('00010100000100000000000005706c61696e04746573740000010001')\n"
            "end=time.monotonic()+float(sys.argv[3])\n"
            "while time.monotonic()<end:\n"
            "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.2)\n"
            "    try:\n"
            "        s.sendto(q,(sys.argv[1],int(sys.argv[2]))); s.recv(512); print('up'); break\n"
            "    except OSError: time.sleep(0.1)\n")
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, ip, str(port), str(wait)],
                       capture_output=True, text=True, timeout=wait + 10)
    if r.stdout.strip() != "up":
        proc.terminate()
        pytest.fail(f"dnsmasq did not answer within {wait:.0f} s: {proc.communicate(timeout=5)}")


class Dnsmasq:
    """dnsmasq on ``ip:port`` in ``netns``, answering (checked, within ``wait`` s) when made;
    ``stop()`` ends it and prints the tail of its log for the test report."""

    def __init__(self, netns: str, ip: str, port: int, records: list[str], log: Path, wait: float) -> None:
        from nicdev.net.netns import run_in_netns

        self.log = log
        with open(log, "wb") as out:
            self.proc = run_in_netns(netns, dnsmasq_argv(ip, port, records), stdout=out, stderr=subprocess.STDOUT)
        wait_for_dnsmasq(netns, self.proc, ip, port, wait)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # never left behind, even if it ignores SIGTERM
                self.proc.kill()
                self.proc.wait(5)
        print(self.log.read_text()[-3000:])
