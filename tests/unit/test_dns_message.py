"""DNS messages: our queries, hand-built answers, compression, and hostile bytes."""
import pytest
from hypothesis import given, settings, strategies as st

from stack.dns.errors import DnsError, MalformedMessage
from stack.dns.message import (MAX_POINTERS, Edns, Rcode, build_query, encode_name, parse_message, read_name,
                               read_questions, soa_minimum)
from support.dns_wire import QNAME_AT, a, aaaa, answer, header, name, opt, pointer, question, rr, soa


def test_query_is_the_rfc_1035_layout():
    wire = build_query(0xBEEF, "www.example.com", 28)
    assert wire == (bytes.fromhex("beef 0100 0001 0000 0000 0000")
                    + b"\x03www\x07example\x03com\x00" + bytes.fromhex("001c 0001"))


@pytest.mark.parametrize("bad", ["a" * 64 + ".com", "a..b", ".".join(["abcdefg"] * 40), "bücher.de"])
def test_bad_names_are_refused_before_sending(bad):
    with pytest.raises(DnsError, match="bad name"):
        encode_name(bad)


def test_answer_with_compressed_names_a_aaaa_and_cname():
    wire = answer(7, "www.example.com", [
        rr(pointer(QNAME_AT), 5, b"\x03web" + pointer(QNAME_AT + 4), ttl=60),  # -> web.example.com
        a(b"\x03web" + pointer(QNAME_AT + 4), "192.0.2.7", ttl=30),
        aaaa(pointer(QNAME_AT), "2001:db8::7"),
    ])
    msg = parse_message(wire)
    assert msg.header.ident == 7 and msg.header.is_response and msg.header.rcode == 0
    assert [q.name for q in msg.questions] == ["www.example.com"]
    cname, addr, addr6 = msg.answers
    assert (cname.name, cname.rtype, cname.ttl, cname.value) == ("www.example.com", 5, 60, "web.example.com")
    assert (addr.name, addr.value, addr.ttl) == ("web.example.com", "192.0.2.7", 30)
    assert addr6.value == "2001:db8::7"


def test_a_compression_loop_is_refused():
    # The answer's owner is a pointer to itself.
    body = header(1, an=1) + question("x.org")
    loop_at = len(body)
    wire = body + rr(pointer(loop_at), 1, b"\x01\x02\x03\x04")
    with pytest.raises(MalformedMessage, match="compression loop"):
        parse_message(wire)


def test_a_two_pointer_loop_is_refused():
    # "ab" then a pointer back to the label: ab.ab.ab...
    buf = b"\x02ab" + pointer(0)
    with pytest.raises(MalformedMessage, match="compression loop"):
        read_name(buf, 0)


def test_a_long_chain_of_pointers_is_refused():
    # Each pointer points at the previous one: no loop, but more jumps than allowed.
    buf = b"\x00" + b"".join(pointer(1 + 2 * i - 2 if i else 0) for i in range(MAX_POINTERS + 2))
    with pytest.raises(MalformedMessage):
        read_name(buf, len(buf) - 2)


def test_a_pointer_past_the_end_is_refused():
    wire = header(1, an=1) + question("x.org") + rr(pointer(500), 1, b"\x01\x02\x03\x04")
    with pytest.raises(MalformedMessage, match="points past the end"):
        parse_message(wire)


@pytest.mark.parametrize("cut", [5, 12, 20, 25, 30, 36])
def test_truncated_messages_are_malformed(cut):
    wire = answer(1, "x.org", [a(pointer(QNAME_AT), "10.1.2.3")])
    assert cut < len(wire)
    with pytest.raises(MalformedMessage):
        parse_message(wire[:cut])


def test_counts_promising_more_records_than_there_are():
    wire = header(1, an=3) + question("x.org") + a(pointer(QNAME_AT), "10.1.2.3")
    with pytest.raises(MalformedMessage, match="runs past the end"):
        parse_message(wire)


def test_an_a_record_of_the_wrong_size_is_malformed():
    wire = answer(1, "x.org", [rr(pointer(QNAME_AT), 1, b"\x01\x02\x03")])
    with pytest.raises(MalformedMessage, match="A record with 3 bytes"):
        parse_message(wire)


def test_a_name_longer_than_255_bytes_is_malformed():
    long = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"
    with pytest.raises(MalformedMessage, match="longer than 255"):
        read_name(long, 0)


def test_name_helper_round_trip():
    assert read_name(name("a.b.c") + b"junk", 0) == ("a.b.c", 7)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_give_a_message_or_a_dns_error(data):
    try:
        parse_message(data)
    except DnsError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=40))
def test_mutated_answers_give_a_message_or_a_dns_error(flips):
    good = bytearray(answer(9, "www.example.com", [
        rr(pointer(QNAME_AT), 5, b"\x03web" + pointer(QNAME_AT + 4)),
        a(b"\x03web" + pointer(QNAME_AT + 4), "192.0.2.7"),
        aaaa(pointer(QNAME_AT), "2001:db8::7")]))
    for at, value in flips:
        if at < len(good):
            good[at] = value
    try:
        parse_message(bytes(good))
    except DnsError:
        pass


# -- EDNS(0) and SOA -----------------------------------------------------------------------------
def test_query_with_edns_carries_an_opt_record():
    wire = build_query(0xBEEF, "www.example.com", 1, edns_payload=1232)
    plain = build_query(0xBEEF, "www.example.com", 1)
    assert wire[:10] == plain[:10] and wire[10:12] == b"\x00\x01"  # ARCOUNT 1
    # The root owner, type 41, class = 1232, TTL 0 (rcode 0, version 0, DO clear), no data.
    assert wire[len(plain):] == b"\x00" + bytes.fromhex("0029 04d0 00000000 0000")
    msg = parse_message(wire)
    assert msg.edns == Edns(1232, 0, 0, False, ()) and msg.rcode == 0
    with pytest.raises(ValueError, match="512..65535"):
        build_query(1, "x.org", 1, edns_payload=100)


def test_opt_in_an_answer_extended_rcode_and_unknown_options_kept_not_interpreted():
    wire = answer(9, "x.org", [a(pointer(QNAME_AT), "192.0.2.1")], rcode=0,
                  additional=[opt(4096, ext_rcode=1, do=True, options=[(65001, b"hello"), (10, b"")])])
    msg = parse_message(wire)
    assert msg.edns == Edns(4096, 1, 0, True, ((65001, b"hello"), (10, b"")))
    assert msg.rcode == Rcode.BADVERS and msg.header.rcode == 0  # 1 << 4 | 0
    assert [r.value for r in msg.answers] == ["192.0.2.1"]
    assert parse_message(answer(9, "x.org", [])).edns is None


@pytest.mark.parametrize("additional, reason", [
    ([opt(), opt()], "2 OPT records"),
    ([opt(owner=name("x.org"))], "OPT record owned by 'x.org'"),
    ([opt()[:-2] + b"\x00\x03" + b"\x00\x0c\x00"], "option at byte 0 of the OPT data is cut short"),
    ([opt()[:-2] + b"\x00\x05" + b"\x00\x0c\x00\x09\x00"], "option 12 promises 9 bytes, 1 there"),
])
def test_malformed_opt_records_are_refused(additional, reason):
    with pytest.raises(MalformedMessage, match=reason):
        parse_message(answer(9, "x.org", [], additional=additional))


def test_soa_with_compressed_names_and_its_minimum():
    record = soa(pointer(QNAME_AT), minimum=300, ttl=900, mname=b"\x02ns" + pointer(QNAME_AT),
                 rname=b"\x05admin" + pointer(QNAME_AT))
    msg = parse_message(answer(3, "example.org", [], rcode=3, authority=[record]))
    (got,) = msg.authority
    assert got.value == "ns.example.org admin.example.org 2026120701 7200 900 1209600 300"
    assert (got.ttl, soa_minimum(got)) == (900, 300)
    with pytest.raises(ValueError, match="not an SOA"):
        soa_minimum(parse_message(answer(3, "x.org", [a(pointer(QNAME_AT), "192.0.2.1")])).answers[0])


def test_soa_of_the_wrong_size_is_malformed():
    short = rr(pointer(QNAME_AT), 6, name("ns.x.org") + name("h.x.org") + b"\0" * 19)
    with pytest.raises(MalformedMessage, match="SOA record has 19 bytes after its names"):
        parse_message(answer(3, "x.org", [], authority=[short]))


def test_read_questions_of_an_answer_cut_mid_record():
    wire = answer(5, "big.x.org", [a(pointer(QNAME_AT), f"192.0.2.{i}") for i in range(1, 5)], tc=True)
    with pytest.raises(MalformedMessage):
        parse_message(wire[:-7])
    assert [q.name for q in read_questions(wire[:-7])] == ["big.x.org"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 160), st.integers(0, 255)), max_size=30))
def test_mutated_negative_answers_with_soa_and_opt_give_a_message_or_a_dns_error(flips):
    good = bytearray(answer(9, "gone.example.com", [], rcode=3,
                            authority=[soa(pointer(QNAME_AT + 5), 300, mname=b"\x02ns" + pointer(QNAME_AT + 5))],
                            additional=[opt(1232, options=[(10, b"cookie12"), (65001, b"")])]))
    for at, value in flips:
        if at < len(good):
            good[at] = value
    try:
        msg = parse_message(bytes(good))
    except DnsError:
        return
    for record in msg.authority:  # a parsed SOA always has its MINIMUM
        if record.rtype == 6:
            assert soa_minimum(record) >= 0
