"""The resolver's state machine with hand-built answers: checks, retries, TCP, CNAMEs; cache; hosts."""
import random
import threading

import pytest
from hypothesis import given, settings, strategies as st

from stack.dns.cache import DnsCache
from stack.dns.errors import DnsError, DnsTimeout, MalformedMessage, NameNotFound, NoData, ServerFailure
from stack.dns.hosts import HostsTable
from stack.dns.message import parse_message
from stack.dns.resolver import Answer, Query, Resolution, TcpMessageReader, tcp_frame
from support.dns_wire import QNAME_AT, a, aaaa, answer, header, name, opt, pointer, question, rr, soa

S1, S2 = "10.0.0.53", "10.0.0.54"


def started(name="www.example.com", rtype="A", servers=(S1, S2), **kw):
    res = Resolution(name, rtype, list(servers), rng=random.Random(kw.pop("seed", 1)), **kw)
    return res, res.start(0.0)


def reply(query: Query, records, **flags):
    q = parse_message(query.wire).questions[0]
    return answer(query.ident, q.name, records, qtype=q.rtype, **flags)


def test_a_query_for_the_name_and_an_answer_accepted():
    res, q = started()
    assert (q.server, q.port, q.tcp, q.deadline) == (S1, 53, False, 2.0)
    asked = parse_message(q.wire)
    assert asked.header.ident == q.ident and asked.questions[0].name == "www.example.com"
    done = res.receive(reply(q, [a(pointer(QNAME_AT), "192.0.2.1", 60), a(pointer(QNAME_AT), "192.0.2.2", 30)]),
                       (S1, 53), 0.1)
    assert done == Answer("www.example.com", "www.example.com", ["192.0.2.1", "192.0.2.2"], 30)


def test_transaction_ids_are_random_per_query():
    ids = {started(seed=None)[1].ident for _ in range(50)}
    assert len(ids) > 45 and all(0 <= i <= 0xFFFF for i in ids)


@pytest.mark.parametrize("mangle, reason", [
    (lambda q, good: good, "wrong source"),
    (lambda q, good: bytes([good[0] ^ 1]) + good[1:], "wrong id"),
    (lambda q, good: answer(q.ident, "www.example.org", [a(pointer(QNAME_AT), "6.6.6.6")]), "wrong question"),
    (lambda q, good: answer(q.ident, "www.example.com", [a(pointer(QNAME_AT), "6.6.6.6")], qtype=28),
     "wrong question"),
    (lambda q, good: answer(q.ident, "www.example.com", [a(pointer(QNAME_AT), "6.6.6.6")], qr=False),
     "not a response"),
    (lambda q, good: good[:7], "too short"),
])
def test_mismatched_answers_are_ignored_and_counted(mangle, reason):
    res, q = started()
    good = reply(q, [a(pointer(QNAME_AT), "192.0.2.1")])
    source = ("10.9.9.9", 53) if reason == "wrong source" else (S1, 53)
    assert res.receive(mangle(q, good), source, 0.1) is None
    assert res.ignored == {reason: 1}
    # The genuine answer is still accepted afterwards.
    assert res.receive(good, (S1, 53), 0.2).addresses == ["192.0.2.1"]


def test_question_name_compares_without_case():
    res, q = started()
    wire = answer(q.ident, "WWW.Example.COM", [a(pointer(QNAME_AT), "192.0.2.1")])
    assert res.receive(wire, (S1, 53), 0.1).addresses == ["192.0.2.1"]


def test_timeouts_go_round_the_servers_then_fail_naming_them():
    res, q = started(attempts=2, timeout=1.5)
    seen = [(q.server, q.deadline)]
    with pytest.raises(DnsTimeout) as err:
        now = 0.0
        while True:
            now = q.deadline
            q = res.timed_out(now)
            seen.append((q.server, q.deadline))
    assert seen == [(S1, 1.5), (S2, 3.0), (S1, 4.5), (S2, 6.0)]
    assert S1 in str(err.value) and S2 in str(err.value) and "www.example.com" in str(err.value)
    assert res.queries_sent == 4


def test_a_new_id_for_every_retry():
    res, q = started(seed=3)
    q2 = res.timed_out(2.0)
    assert q2.ident != q.ident or q2.wire != q.wire  # fresh draw (equal ids are a 1/65536 chance)
    assert res.receive(reply(q, [a(pointer(QNAME_AT), "6.6.6.6")]), (S1, 53), 2.1) is None  # late answer to q
    assert res.receive(reply(q2, [a(pointer(QNAME_AT), "192.0.2.9")]), (S2, 53), 2.2).addresses == ["192.0.2.9"]


def test_servfail_passes_to_the_next_server_and_all_failing_is_server_failure():
    res, q = started(attempts=1)
    q2 = res.receive(reply(q, [], rcode=2), (S1, 53), 0.1)
    assert q2.server == S2
    with pytest.raises(ServerFailure, match="SERVFAIL") as err:
        res.receive(reply(q2, [], rcode=5), (S2, 53), 0.2)
    assert "REFUSED" in str(err.value) and err.value.servers == [S1, S2]


def test_servfail_then_an_answer_from_the_next_server():
    res, q = started()
    q2 = res.receive(reply(q, [], rcode=2), (S1, 53), 0.1)
    assert res.receive(reply(q2, [a(pointer(QNAME_AT), "192.0.2.3")]), (S2, 53), 0.2).addresses == ["192.0.2.3"]


def test_nxdomain_and_nodata():
    res, q = started()
    with pytest.raises(NameNotFound, match="NXDOMAIN"):
        res.receive(reply(q, [], rcode=3), (S1, 53), 0.1)
    res, q = started(rtype="AAAA")
    with pytest.raises(NoData, match="no AAAA records"):
        res.receive(reply(q, []), (S1, 53), 0.1)


def test_a_malformed_answer_with_the_right_id_is_a_clear_error():
    res, q = started()
    bad = header(q.ident, an=1) + question("www.example.com") + rr(pointer(300), 1, b"\0\0\0\0")
    with pytest.raises(MalformedMessage, match=f"malformed answer from {S1}"):
        res.receive(bad, (S1, 53), 0.1)


def test_truncation_falls_back_to_tcp_at_the_same_server():
    res, q = started()
    q2 = res.receive(reply(q, [a(pointer(QNAME_AT), "192.0.2.1")], tc=True), (S1, 53), 0.1)
    assert (q2.server, q2.tcp) == (S1, True)
    framed = tcp_frame(reply(q2, [a(pointer(QNAME_AT), f"192.0.2.{i}") for i in range(1, 40)]))
    reader = TcpMessageReader()
    assert reader.missing() == 2
    assert reader.feed(framed[:1]) is None and reader.feed(framed[1:100]) is None
    assert reader.missing() == len(framed) - 100
    message = reader.feed(framed[100:])
    assert len(res.receive(message, None, 0.2).addresses) == 39


def test_a_cname_chain_in_one_answer():
    res, q = started(rtype="AAAA")
    records = [rr(pointer(QNAME_AT), 5, name("alias.example.net"), ttl=100),
               rr(name("alias.example.net"), 5, name("final.example.net"), ttl=20),
               aaaa(name("final.example.net"), "2001:db8::1", ttl=50)]
    done = res.receive(reply(q, records), (S1, 53), 0.1)
    assert done == Answer("www.example.com", "final.example.net", ["2001:db8::1"], 20,
                          ("www.example.com", "alias.example.net"))


def test_a_cname_without_its_target_asks_for_the_target():
    res, q = started()
    q2 = res.receive(reply(q, [rr(pointer(QNAME_AT), 5, name("there.example.net"), ttl=100)]), (S1, 53), 0.1)
    assert parse_message(q2.wire).questions[0].name == "there.example.net" and q2.server == S1
    done = res.receive(reply(q2, [a(pointer(QNAME_AT), "192.0.2.5", ttl=300)]), (S1, 53), 0.2)
    assert done == Answer("www.example.com", "there.example.net", ["192.0.2.5"], 100, ("www.example.com",))


def test_cname_loops_and_long_chains_are_bounded():
    res, q = started(max_cnames=4)
    records = [rr(pointer(QNAME_AT), 5, name("b.example")), rr(name("b.example"), 5, name("www.example.com"))]
    with pytest.raises(DnsError, match="CNAME chain longer than 4"):
        res.receive(reply(q, records), (S1, 53), 0.1)
    res, q = started(max_cnames=2)
    for hop in range(3):
        q = res.receive(reply(q, [rr(pointer(QNAME_AT), 5, name(f"hop{hop}.example"))]), (S1, 53), 0.1)
        if hop == 1:
            break
    with pytest.raises(DnsError, match="CNAME chain longer than 2"):
        res.receive(reply(q, [rr(pointer(QNAME_AT), 5, name("hop9.example"))]), (S1, 53), 0.1)


def test_only_a_and_aaaa_and_some_servers():
    with pytest.raises(DnsError, match="only A and AAAA"):
        Resolution("x.org", "MX", [S1])
    with pytest.raises(DnsError, match="no DNS servers"):
        Resolution("x.org", "A", [])


def test_cache_respects_ttl_on_the_given_clock():
    cache = DnsCache()
    cache.put("Host.Example", "A", ["192.0.2.1"], 30, now=100.0)
    assert cache.get("host.example.", "A", 129.9) == ["192.0.2.1"]
    assert cache.get("host.example", "AAAA", 110.0) is None
    assert cache.get("host.example", "A", 130.0) is None
    assert len(cache) == 0
    cache.put("zero.example", "A", ["192.0.2.2"], 0, now=0.0)
    assert cache.get("zero.example", "A", 0.0) is None


def test_cache_is_bounded():
    cache = DnsCache(max_entries=2)
    cache.put("a", "A", ["1.1.1.1"], 10, 0.0)
    cache.put("b", "A", ["1.1.1.2"], 20, 0.0)
    cache.put("c", "A", ["1.1.1.3"], 30, 0.0)
    assert len(cache) == 2 and cache.get("a", "A", 1.0) is None and cache.get("c", "A", 1.0) == ["1.1.1.3"]


def test_hosts_table():
    hosts = HostsTable.parse("# comment\n10.0.0.5  db.lan db  # the database\n\n::1 localhost\n127.0.0.1 localhost\n")
    assert hosts.lookup("DB.lan", "A") == ["10.0.0.5"] and hosts.lookup("db", "A") == ["10.0.0.5"]
    assert hosts.lookup("localhost", "AAAA") == ["::1"] and hosts.lookup("localhost", "A") == ["127.0.0.1"]
    assert hosts.lookup("db.lan", "AAAA") is None
    with pytest.raises(DnsError, match="line 1"):
        HostsTable.parse("10.0.0.5\n")
    with pytest.raises(DnsError, match="not an IP address"):
        HostsTable.parse("10.0.0.300 x\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_any_datagram_from_the_server_gives_a_step_or_a_dns_error(tail, keep_question):
    res, q = started()
    # The right id (so the parser is reached), then anything: the question or random bytes.
    data = q.wire[:2] + bytes([0x81, 0x80]) + (q.wire[4:] if keep_question else b"") + tail
    try:
        step = res.receive(data, (S1, 53), 0.1)
    except DnsError:
        return
    assert step is None or isinstance(step, (Query, Answer))


def test_concurrent_cache_use():
    cache = DnsCache(max_entries=8)

    def churn(base):
        for i in range(2000):
            cache.put(f"{base}-{i % 20}", "A", ["192.0.2.1"], 1 + i % 5, float(i))
            cache.get(f"{base}-{(i * 7) % 20}", "A", float(i))

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(cache) <= 8


# -- EDNS(0) -------------------------------------------------------------------------------------
def test_queries_advertise_an_edns_payload_size_unless_told_not_to():
    res, q = started()
    assert q.edns and parse_message(q.wire).edns.payload_size == 1232
    res, q = started(edns_payload=4000)
    assert parse_message(q.wire).edns.payload_size == 4000
    res, q = started(edns_payload=None)
    assert not q.edns and parse_message(q.wire).edns is None
    with pytest.raises(ValueError, match="EDNS payload size"):
        started(edns_payload=511)


def test_an_answer_with_opt_and_unknown_options_is_accepted():
    res, q = started()
    wire = reply(q, [a(pointer(QNAME_AT), "192.0.2.1")], additional=[opt(1232, options=[(65001, b"?")])])
    assert res.receive(wire, (S1, 53), 0.1).addresses == ["192.0.2.1"]


@pytest.mark.parametrize("rcode", [1, 4])  # FORMERR, NOTIMP: a server that does not know EDNS
def test_formerr_or_notimp_to_opt_asks_the_same_server_again_without_it(rcode):
    res, q = started()
    q2 = res.receive(reply(q, [], rcode=rcode), (S1, 53), 0.1)
    assert (q2.server, q2.tcp, q2.edns, parse_message(q2.wire).edns) == (S1, False, False, None)
    assert res.without_edns == {S1}
    # The CNAME's target is asked without OPT too; the other server still gets one.
    q3 = res.receive(reply(q2, [rr(pointer(QNAME_AT), 5, name("there.example.net"))]), (S1, 53), 0.2)
    assert (q3.server, q3.edns) == (S1, False)
    q4 = res.timed_out(2.2)
    assert (q4.server, q4.edns) == (S2, True)


def test_formerr_without_the_question_is_read_and_formerr_without_opt_is_a_failure():
    res, q = started(attempts=1)
    bare = header(q.ident, rcode=1, qd=0)  # an old server may not repeat a question it could not read
    q2 = res.receive(bare, (S1, 53), 0.1)
    assert (q2.server, q2.edns) == (S1, False)
    q3 = res.receive(header(q2.ident, rcode=1, qd=0), (S1, 53), 0.2)  # FORMERR again: a real failure
    assert (q3.server, q3.edns) == (S2, True)
    q4 = res.receive(reply(q3, [], rcode=4, additional=[opt()]), (S2, 53), 0.3)
    assert (q4.server, q4.edns) == (S2, False)
    with pytest.raises(ServerFailure, match="FORMERR/NOTIMP") as err:
        res.receive(reply(q4, [], rcode=4), (S2, 53), 0.4)
    assert err.value.servers == [S1, S2]


def test_a_bare_header_with_noerror_is_still_the_wrong_question():
    res, q = started()
    assert res.receive(header(q.ident, qd=0), (S1, 53), 0.1) is None
    assert res.ignored == {"wrong question": 1}


def test_extended_rcode_from_the_opt_record():
    res, q = started(attempts=1, servers=(S1,))
    with pytest.raises(ServerFailure, match="BADVERS"):
        res.receive(reply(q, [], additional=[opt(ext_rcode=1)]), (S1, 53), 0.1)


def test_truncated_answer_cut_mid_record_still_falls_back_to_tcp():
    res, q = started()
    cut = reply(q, [a(pointer(QNAME_AT), f"192.0.2.{i}") for i in range(1, 40)], tc=True)[:300]
    q2 = res.receive(cut, (S1, 53), 0.1)
    assert (q2.server, q2.tcp) == (S1, True)
    # Without TC, the same cut is a malformed answer; with TC but another question, ignored.
    res, q = started()
    with pytest.raises(MalformedMessage):
        res.receive(reply(q, [a(pointer(QNAME_AT), f"192.0.2.{i}") for i in range(1, 40)])[:300], (S1, 53), 0.1)
    res, q = started()
    other = answer(q.ident, "www.example.org", [a(pointer(QNAME_AT), f"192.0.2.{i}") for i in range(1, 40)], tc=True)
    with pytest.raises(MalformedMessage):
        res.receive(other[:300], (S1, 53), 0.1)


# -- negative answers (RFC 2308) -----------------------------------------------------------------
def test_nxdomain_and_nodata_carry_the_soa_negative_ttl():
    res, q = started()
    with pytest.raises(NameNotFound) as err:
        res.receive(reply(q, [], rcode=3, authority=[soa(name("example.com"), minimum=300, ttl=900)]), (S1, 53), 0.1)
    assert err.value.negative_ttl == 300  # min(SOA TTL, MINIMUM)
    res, q = started(rtype="AAAA")
    with pytest.raises(NoData) as err:
        res.receive(reply(q, [], authority=[soa(name("example.com"), minimum=600, ttl=60)]), (S1, 53), 0.1)
    assert err.value.negative_ttl == 60
    res, q = started()
    with pytest.raises(NameNotFound) as err:
        res.receive(reply(q, [], rcode=3), (S1, 53), 0.1)
    assert err.value.negative_ttl is None  # no SOA: not to be cached


def test_negative_ttl_after_a_cname_is_bounded_by_the_chain():
    res, q = started()
    records = [rr(pointer(QNAME_AT), 5, name("gone.example.net"), ttl=20)]
    with pytest.raises(NameNotFound, match="gone.example.net") as err:
        res.receive(reply(q, records, rcode=3, authority=[soa(name("example.net"), minimum=300)]), (S1, 53), 0.1)
    assert err.value.negative_ttl == 20


def test_cache_gives_the_ttl_left_and_bounds_negative_entries():
    cache = DnsCache(max_negative_ttl=60)
    cache.put("host.example", "A", ["192.0.2.1"], 30, now=100.0)
    assert cache.get_with_ttl("host.example", "A", 100.0) == (["192.0.2.1"], 30)
    assert cache.get_with_ttl("host.example", "A", 110.0) == (["192.0.2.1"], 20)
    assert cache.get_with_ttl("host.example", "A", 129.5) == (["192.0.2.1"], 1)  # rounded up while it lives
    err = NameNotFound("gone.example", 900)
    cache.put("gone.example", "A", err, 900, now=0.0)
    assert cache.get_with_ttl("gone.example", "A", 50.0) == (err, 10)
    assert cache.get("gone.example", "A", 60.0) is None
    assert err.again(5).negative_ttl == 5 and str(err.again(5)) == str(err)
    assert str(NoData("x.example", "AAAA", 9).again(3)) == "x.example: no AAAA records"
