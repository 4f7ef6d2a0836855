"""The stack's DNS client against a real server: dnsmasq in a namespace this
module creates, behind a TAP port of a switch in this process.

  port "stack" vhost-user -> a MultiOS Stack (VirtioNetNic) in this process   10.0.0.9
  port "cli"   vhost-user -> `mnet dns lookup` run as a process               10.0.0.8
  port "host"  TAP into the namespace, where dnsmasq listens on port 5353     10.0.0.254
                                              and, authoritative only,          10.0.0.253

dnsmasq answers from its command line only (no upstream, no /etc/hosts):
an A record, a host with A and AAAA, a CNAME to it and a CNAME to that CNAME,
60 A records for one name (more than a 512-byte UDP answer holds, less than
our EDNS payload of 1232: it comes whole over UDP), 120 for another (more
than 1232 bytes, so it truncates and we retry over TCP), NXDOMAIN inside the
local domain `test`, REFUSED outside it. On its second address it is the
authoritative server of `auth.test` (TTL 45 s): its NXDOMAIN and NODATA
answers carry the zone's SOA, so they are cached (RFC 2308). dnsmasq's own
local answers have TTL 0 and negative ones no SOA: not cached.
"""
from __future__ import annotations

import pytest

from support.cli import assert_one_line_error, mnet
from support.dnsmasq import Dnsmasq
from support.kernel_peer import WAIT, KernelPeerLab, require_programs

pytestmark = pytest.mark.integration

STACK_IP = "10.0.0.9"
CLI_IP = "10.0.0.8"
HOST_IP = "10.0.0.254"
AUTH_IP = "10.0.0.253"  # dnsmasq, authoritative for auth.test only
AUTH_TTL = 45           # the auth zone's TTLs and SOA minimum
ABSENT_IP = "10.0.0.77"  # nobody there: ARP gets no answer
DNS_PORT = 5353
MID = [f"10.3.0.{i}" for i in range(1, 61)]   # about 1000 bytes: over 512, under the EDNS payload
BIG = [f"10.2.0.{i}" for i in range(1, 121)]  # about 1950 bytes: truncated even with EDNS


RECORDS = (["--local=/test/", "--address=/plain.test/10.1.2.3", "--host-record=v6.test,10.1.2.4,2001:db8::4",
            "--cname=alias.test,v6.test", "--cname=chain.test,alias.test"]
           + [f"--host-record=big.test,{ip}" for ip in BIG] + [f"--host-record=mid.test,{ip}" for ip in MID]
           + [f"--listen-address={AUTH_IP}", f"--auth-server=ns.auth.test,{AUTH_IP}", "--auth-zone=auth.test",
              f"--auth-soa=2026120701,hostmaster.auth.test,1200,120,604800", f"--auth-ttl={AUTH_TTL}",
              "--host-record=v4.auth.test,10.1.3.5"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_programs("dnsmasq")
    # AUTH_IP is a second address on the TAP device: dnsmasq's authoritative side listens there.
    with KernelPeerLab(tmp_path_factory.mktemp("dnslab"), "dns", host_ips=(HOST_IP, AUTH_IP),
                       vhost_ports=("stack", "cli")) as lab:
        lab.own(Dnsmasq(lab.netns, HOST_IP, DNS_PORT, RECORDS, lab.tmp / "dnsmasq.log", WAIT))
        lab.stack = lab.start_stack("stack", f"{STACK_IP}/24")
        yield lab


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
    stack_opts = ["--nic", f"vhost-user:{lab.sockets['cli']}", "--ip", f"{CLI_IP}/24", "--server", HOST_IP,
                  "--port", str(DNS_PORT)]
    r = mnet("dns", "lookup", "alias.test", *stack_opts)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["alias.test is an alias for v6.test.", "v6.test has address 10.1.2.4"]
    r = mnet("dns", "lookup", "chain.test", *stack_opts)
    assert r.stdout.splitlines() == ["chain.test is an alias for alias.test.", "alias.test is an alias for v6.test.",
                                     "v6.test has address 10.1.2.4"], (r.stdout, r.stderr)
    r = mnet("dns", "lookup", "v6.test", "--type", "AAAA", *stack_opts)
    assert r.returncode == 0 and r.stdout == "v6.test has IPv6 address 2001:db8::4\n", (r.stdout, r.stderr)
    r = mnet("dns", "lookup", "big.test", *stack_opts)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(BIG), r.stderr
    r = mnet("dns", "lookup", "mid.test", "--no-edns", *stack_opts)  # truncated at 512 bytes: TCP
    assert r.returncode == 0 and sorted(r.stdout.split()[3::4]) == sorted(MID), (r.stdout, r.stderr)
    assert_one_line_error(mnet("dns", "lookup", "missing.test", *stack_opts), "dns", "missing.test", "NXDOMAIN")


def test_dnsmasq_answers_our_opt_record_with_its_own(lab):
    from stack import IpAddress, SocketType
    from stack.dns.message import build_query, parse_message

    with lab.stack.socket(SocketType.DATAGRAM) as sock:
        sock.set_timeout(WAIT)
        sock.send_to(build_query(0x1234, "mid.test", 1, edns_payload=1232), IpAddress(HOST_IP, DNS_PORT))
        data, _ = sock.recv_from(65535)
    answer = parse_message(data)
    assert answer.header.ident == 0x1234 and not answer.header.truncated
    assert answer.edns is not None and answer.edns.version == 0 and answer.edns.payload_size >= 512
    assert len(data) > 512 and sorted(r.value for r in answer.answers) == sorted(MID)


def test_edns_brings_a_big_answer_over_udp_and_without_it_over_tcp(lab):
    def tcp_segments():
        return lab.stack.counters().get("tcp", {}).get("rx_segments", 0)

    before = tcp_segments()
    assert sorted(client(lab).resolve("mid.test")) == sorted(MID)
    assert tcp_segments() == before  # 60 records fit in the 1232 bytes we advertise
    assert sorted(client(lab, edns_payload=None).resolve("mid.test")) == sorted(MID)
    assert tcp_segments() > before  # in 512 bytes they do not: truncated, then TCP


def test_negative_answers_with_an_soa_are_cached(lab):
    from stack.dns.errors import NameNotFound, NoData

    # Counted queries: an attempt's timeout as long as the test's bound, so no query is
    # asked twice because an answer came after the default 2 s on a loaded machine.
    c = client(lab, servers=(AUTH_IP,), timeout=WAIT)
    with pytest.raises(NameNotFound) as first:
        c.resolve("missing.auth.test")
    assert first.value.negative_ttl == AUTH_TTL  # min(SOA TTL, SOA minimum), both 45 here
    with pytest.raises(NoData) as first_nodata:
        c.resolve("v4.auth.test", "AAAA")
    with pytest.raises(NameNotFound) as again:
        c.resolve("missing.auth.test")
    with pytest.raises(NoData) as again_nodata:
        c.resolve("v4.auth.test", "AAAA")
    assert (str(again.value), str(again_nodata.value)) == (str(first.value), str(first_nodata.value))
    assert 0 < again.value.negative_ttl <= AUTH_TTL
    assert len(c.source_ports) == 2  # one query each: the second lookups came from the cache
    # dnsmasq's local NXDOMAIN has no SOA: asked again every time.
    local = client(lab, timeout=WAIT)
    for _ in range(2):
        with pytest.raises(NameNotFound):
            local.resolve("missing.test")
    assert len(local.source_ports) == 2


def test_a_cached_answer_has_the_ttl_left(lab):
    c = client(lab, servers=(AUTH_IP,), timeout=WAIT)     # (one query counted: no retry, as above)
    first = c.lookup("v4.auth.test")
    assert (first.addresses, first.ttl, first.origin) == (["10.1.3.5"], AUTH_TTL, "server")
    cached = c.lookup("v4.auth.test")
    assert (cached.addresses, cached.origin) == (["10.1.3.5"], "cache") and 0 < cached.ttl <= AUTH_TTL
    assert len(c.source_ports) == 1


def test_a_two_link_cname_chain(lab):
    answer = client(lab).lookup("chain.test")
    assert (answer.aliases, answer.canonical_name, answer.addresses) == (("chain.test", "alias.test"), "v6.test",
                                                                        ["10.1.2.4"])
