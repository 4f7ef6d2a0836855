"""guest.protocol: request encoding and the reply parser (sans-IO)."""

import base64

import pytest

from guest.protocol import (MAX_LINE, Failure, Pong, ReplyParser, Result, encode_kill, encode_ping,
                            encode_run, valid_id)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_encoding_fixed_bytes():
    assert encode_ping("p1") == b"PING p1\n"
    assert encode_run("c-1", "echo hi") == b"RUN c-1 ZWNobyBoaQ==\n"
    assert encode_run("c.2", "") == b"RUN c.2 Og==\n"  # ":" -- an empty command is a no-op
    assert encode_kill("c_3") == b"KILL c_3\n"
    assert base64.b64decode(encode_run("x", "printf 'é\\n'").split()[2]) == "printf 'é\\n'".encode()


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", "x/y", "ü"])
def test_bad_ids_are_refused(bad):
    assert not valid_id(bad)
    with pytest.raises(ValueError, match="bad command id"):
        encode_ping(bad)


def test_pong_and_result_in_one_feed():
    parser = ReplyParser()
    data = b"PONG p1\nBEGIN c1\n" + b64(b"hello\n") + b"\nEND c1 3\n"
    assert parser.feed(data) == [Pong("p1"), Result("c1", 3, b"hello\n")]
    assert parser.garbage_lines == 0


def test_byte_by_byte_with_crlf_and_multiline_output():
    payload = bytes(range(256)) * 10
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    stream = b"BEGIN big\r\n" + encoded + b"END big 0\r\n"
    parser = ReplyParser()
    events = []
    for i in range(len(stream)):
        events += parser.feed(stream[i:i + 1])
    assert events == [Result("big", 0, payload)]


def test_empty_output():
    assert ReplyParser().feed(b"BEGIN e\nEND e 0\n") == [Result("e", 0, b"")]


def test_garbage_before_and_between_is_counted_and_skipped():
    parser = ReplyParser()
    data = (b"NG p0\n"               # tail of a line from before we connected
            b"\xff\xfe\x00junk\n"     # binary noise
            b"aGVsbG8=\n"             # output lines without a BEGIN
            b"END zz 0\n"             # an END for a block we never saw
            b"PONG bad id\n"
            b"PONG p1\n")
    assert parser.feed(data) == [Pong("p1")]
    assert parser.garbage_lines == 5


def test_garbled_block_is_a_failure_not_a_crash():
    parser = ReplyParser()
    data = b"BEGIN c1\n" + b64(b"abc") + b"\nthis is not base64!\nEND c1 0\n"
    assert parser.feed(data) == [Failure("c1", "garbled output lines")]
    assert parser.feed(b"BEGIN c2\nQUJD\nEND c2 1\n") == [Result("c2", 1, b"ABC")]


def test_bad_base64_padding_is_a_failure():
    assert ReplyParser().feed(b"BEGIN c1\nQUJ\nEND c1 0\n") == [Failure("c1", "output is not valid base64")]


def test_block_cut_short_by_next_begin():
    events = ReplyParser().feed(b"BEGIN a\nQUJD\nBEGIN b\nREVG\nEND b 0\n")
    assert events == [Failure("a", "reply cut short by the next reply"), Result("b", 0, b"DEF")]


def test_end_with_wrong_id_or_status_does_not_close_block():
    parser = ReplyParser()
    assert parser.feed(b"BEGIN a\nQUJD\nEND b 0\nEND a x\n") == []
    assert parser.feed(b"END a 255\n") == [Failure("a", "garbled output lines")]


def test_err_reply():
    assert ReplyParser().feed(b"ERR c9 bad-base64\nERR c8\n") == [
        Failure("c9", "bad-base64"), Failure("c8", "unspecified error")]


def test_overlong_line_is_dropped():
    parser = ReplyParser()
    assert parser.feed(b"x" * (MAX_LINE + 10)) == []
    assert parser.garbage_lines == 1
    assert parser.feed(b"yyy\nPONG ok\n") == [Pong("ok")]  # the rest of the long line, then sane again
    assert parser.garbage_lines == 2
