"""The stack's DNS client against a real server: dnsmasq in a namespace this
module creates, behind a TAP port of a switch in this process.

  port "stack" vhost-user -> a MultiOS Stack (VirtioNetNic) in this process   10.0.0.9
  port "cli"   vhost-user -> `mnet dns lookup` run as a process               10.0.0.8
  port "host"  TAP into the namespace, where dnsmasq listens on port 5353     10.0.0.254

dnsmasq answers from its command line only (no upstream, no /etc/hosts):
an A record, a host with A and AAAA, a CNAME to it, 60 A records for one name
(more than fits a 512-byte UDP answer, so it truncates and we retry over
TCP), NXDOMAIN inside the local domain `test`, REFUSED outside it.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from support.cli import assert_one_line_error, mnet
from support.dnsmasq import dnsmasq_argv, wait_for_dnsmasq

pytestmark = pytest.mark.integration

STACK_IP = "10.0.0.9"
CLI_IP = "10.0.0.8"
HOST_IP = "10.0.0.254"
ABSENT_IP = "10.0.0.77"  # nobody there: ARP gets no answer
DNS_PORT = 5353
WAIT = 10.0
BIG = [f"10.2.0.{i}" for i in range(1, 61)]


RECORDS = ["--local=/test/", "--address=/plain.test/10.1.2.3", "--host-record=v6.test,10.1.2.4,2001:db8::4",
           "--cname=alias.test,v6.test"] + [f"--host-record=big.test,{ip}" for ip in BIG]


class Lab:
    def __init__(self, tmp, netns: str) -> None:
        from nicdev.net import netns as ns
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.tap_port import TapPort
        from nicdev.net.vhost_user_port import VhostUserPort
        from stack import Stack
        from stack.drivers import VirtioNetNic

        self.netns = netns
        self.cli_sock = str(tmp / "cli.sock")
        self.stack = self.nic = self.dnsmasq = None
        self.log = tmp / "dnsmasq.log"
        self.bg = BackgroundSwitch()
        try:
            self.bg.add_port(VhostUserPort("stack", str(tmp / "stack.sock")))
            self.bg.add_port(VhostUserPort("cli", self.cli_sock))
            tap = self.bg.add_port(TapPort("host", "mndns%d", netns=netns))
            ns.set_address(tap.ifname, f"{HOST_IP}/24", netns=netns)
            ns.link_up("lo", netns=netns)  # the readiness probe talks to dnsmasq from inside the namespace
            with open(self.log, "wb") as log:
                self.dnsmasq = ns.run_in_netns(netns, dnsmasq_argv(HOST_IP, DNS_PORT, RECORDS), stdout=log,
                                               stderr=subprocess.STDOUT)
            wait_for_dnsmasq(netns, self.dnsmasq, HOST_IP, DNS_PORT, WAIT)
            self.nic = VirtioNetNic(str(tmp / "stack.sock"), timeout=WAIT)
            self.stack = Stack(self.nic, f"{STACK_IP}/24").start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self.stack is not None:
                print("stack counters:", self.stack.counters())
                self.stack.stop()
            if self.nic is not None:
                self.nic.close()
            if self.dnsmasq is not None:
                self.dnsmasq.terminate()
                self.dnsmasq.wait(5)
                print(self.log.read_text()[-3000:])
        finally:
            print(self.bg.summary())
            self.bg.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is not installed (it is in the Makefile's DEB_PACKAGES: run `make setup`)")
    with temporary_netns("mnet-dns") as netns:
        lab = Lab(tmp_path_factory.mktemp("dnslab"), netns)
        try:
            yield lab
        finally:
            lab.close()


def client(lab, servers=(HOST_IP,), **kw):
    from stack.dns.client import DnsClient

    return DnsClient(lab.stack, list(servers), port=DNS_PORT, **kw)


def test_a_record(lab):
    assert client(lab).resolve("plain.test") == ["10.1.2.3"]


def test_aaaa_record(lab):
    assert client(lab).resolve("v6.test", "AAAA") == ["2001:db8::4"]


def test_cname_is_followed(lab):
    answer = client(lab).lookup("alias.test")
    assert (answer.canonical_name, answer.addresses) == ("v6.test", ["10.1.2.4"])
    assert client(lab).resolve("alias.test", "AAAA") == ["2001:db8::4"]


def test_nxdomain_and_refused(lab):
    from stack.dns.errors import NameNotFound, ServerFailure

    with pytest.raises(NameNotFound, match="missing.test"):
        client(lab).resolve("missing.test")
    with pytest.raises(ServerFailure, match="REFUSED"):
        client(lab).resolve("elsewhere.example")


def test_truncated_answer_falls_back_to_tcp(lab):
    before = lab.stack.counters().get("tcp", {}).get("rx_segments", 0)
    found = client(lab).resolve("big.test")
    assert sorted(found) == sorted(BIG)  # dnsmasq's truncated UDP answer held half of them
    assert lab.stack.counters()["tcp"]["rx_segments"] > before  # the answer came over TCP


def test_a_dead_server_first_then_dnsmasq(lab):
    c = client(lab, servers=(ABSENT_IP, HOST_IP), timeout=1.0, attempts=1)
    assert c.resolve("plain.test") == ["10.1.2.3"]


def test_timeout_names_the_servers(lab):
    from stack.dns.errors import DnsTimeout

    with pytest.raises(DnsTimeout) as err:
        client(lab, servers=(ABSENT_IP,), timeout=0.5, attempts=2).resolve("plain.test")
    assert ABSENT_IP in str(err.value) and "2 attempts" in str(err.value)


def test_mnet_dns_lookup_as_a_process(lab):
    stack_opts = ["--nic", f"vhost-user:{lab.cli_sock}", "--ip", f"{CLI_IP}/24", "--server", HOST_IP,
                  "--port", str(DNS_PORT)]
    r = mnet("dns", "lookup", "alias.test", *stack_opts)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["alias.test is an alias for v6.test.", "v6.test has address 10.1.2.4"]
    r = mnet("dns", "lookup", "v6.test", "--type", "AAAA", *stack_opts)
    assert r.returncode == 0 and r.stdout == "v6.test has IPv6 address 2001:db8::4\n", (r.stdout, r.stderr)
    r = mnet("dns", "lookup", "big.test", *stack_opts)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(BIG), r.stderr
    assert_one_line_error(mnet("dns", "lookup", "missing.test", *stack_opts), "dns", "missing.test", "NXDOMAIN")
