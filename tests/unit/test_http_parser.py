"""The HTTP request parser (mnet.apps.http.parser): sans-IO, bytes in, requests or HttpError out."""
import pytest
from hypothesis import given, settings, strategies as st

from mnet.apps.http.parser import HttpError, Limits, Request, RequestParser


def parse_all(data: bytes, limits: Limits = Limits(), pieces: int = 1) -> list[Request]:
    """Feed ``data`` in ``pieces`` parts of (nearly) equal size; every request that comes out."""
    parser = RequestParser(limits)
    out = []
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        parser.feed(data[i:i + step])
        while (request := parser.next_request()) is not None:
            out.append(request)
    return out


def status_of(data: bytes, limits: Limits = Limits()) -> int:
    with pytest.raises(HttpError) as caught:
        parse_all(data, limits)
    return caught.value.status


def test_a_get_with_headers():
    [r] = parse_all(b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: curl/8\r\nX-Two:  spaced \r\n\r\n")
    assert (r.method, r.target, r.version) == ("GET", "/a/b?x=1", (1, 1))
    assert r.headers == (("host", "example.test"), ("user-agent", "curl/8"), ("x-two", "spaced"))
    assert r.header("HOST") == "example.test" and r.header("absent") is None
    assert r.line == "GET /a/b?x=1 HTTP/1.1" and r.body == b""


def test_bare_lf_line_ends_and_leading_empty_lines_are_accepted():
    [r] = parse_all(b"\r\n\nGET / HTTP/1.0\nAccept: */*\n\n")
    assert r.version == (1, 0) and r.header("accept") == "*/*"


def test_byte_by_byte_gives_the_same_requests_as_all_at_once():
    data = (b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"HEAD /3 HTTP/1.0\r\n\r\n")
    whole = parse_all(data)
    assert [(r.method, r.target, r.body) for r in whole] == [("GET", "/1", b""), ("POST", "/2", b"hello"),
                                                             ("HEAD", "/3", b"")]
    assert parse_all(data, pieces=len(data)) == whole


def test_a_body_is_waited_for_and_the_next_request_follows_it():
    parser = RequestParser()
    assert parser.waiting_for_body is None
    parser.feed(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
    assert parser.next_request() is None and parser.partial
    assert parser.waiting_for_body.target == "/x"
    parser.feed(b"56789GET /y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser.next_request().body == b"0123456789"
    assert parser.next_request().target == "/y"
    assert parser.next_request() is None and not parser.partial


@pytest.mark.parametrize("version, connection, keep", [
    ("1.1", None, True), ("1.1", "close", False), ("1.1", "Keep-Alive, Close", False),
    ("1.0", None, False), ("1.0", "keep-alive", True), ("1.0", "Keep-Alive", True), ("1.0", "close", False),
])
def test_keep_alive_follows_the_version_and_connection_header(version, connection, keep):
    head = f"GET / HTTP/{version}\r\nHost: h\r\n" + (f"Connection: {connection}\r\n" if connection else "") + "\r\n"
    [r] = parse_all(head.encode())
    assert r.keep_alive is keep


@pytest.mark.parametrize("data, status", [
    (b"GET /\r\n\r\n", 400),                                   # HTTP/0.9 style: no version
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),              # two spaces
    (b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),               # not a token
    (b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400),           # not visible ASCII
    (b"GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                          # 1.1 without Host
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),              # space before the colon (smuggling)
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\nx", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
])
def test_malformed_requests_get_their_status(data, status):
    assert status_of(data) == status


def test_repeated_identical_content_lengths_are_one_length():
    [r] = parse_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok")
    assert r.body == b"ok"


def test_limits():
    small = Limits(request_line=64, header_count=3, header_bytes=100, body=10)
    assert status_of(b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: h\r\n\r\n", small) == 414
    assert status_of(b"GET /" + b"a" * 100, small) == 414          # no line end yet: known before it comes
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 3 + b"\r\n", small) == 431
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 100 + b"\r\n\r\n", small) == 431
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 100, small) == 431  # before the end comes
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", small) == 413
    # At the limits exactly: accepted.
    exact = b"GET /" + b"a" * 45 + b" HTTP/1.1\r\nHost: h\r\nX: 1\r\nY: 2\r\n\r\n"
    assert len(exact.split(b"\r\n")[0]) == 59 and parse_all(exact, small)[0].header("y") == "2"
    assert parse_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", small)[0].body


def test_after_an_error_the_parser_stays_failed():
    parser = RequestParser()
    parser.feed(b"BAD REQUEST LINE HERE\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    for _ in range(2):
        with pytest.raises(HttpError) as caught:
            parser.next_request()
        assert caught.value.status == 400


def test_a_partial_request_is_partial_and_empty_lines_are_not():
    parser = RequestParser()
    parser.feed(b"\r\n")
    assert parser.next_request() is None and not parser.partial
    parser.feed(b"GE")
    assert parser.next_request() is None and parser.partial


# -- fuzzing: whatever comes, the parser answers with requests or its own error --------------------

FRAGMENTS = [b"GET", b"HEAD", b"POST", b" ", b"/", b"/a%2e%2e", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"\r\n",
             b"\n", b"\r", b"Host: h", b"Content-Length: ", b"3", b"-1", b"99999999999999999999", b"abc",
             b"Transfer-Encoding: chunked", b"Connection: close", b":", b"\t", b"\x00", b"\xff", b"\r\n\r\n"]


def _never_raises_anything_else(data: bytes, cut: int) -> None:
    parser = RequestParser(Limits(request_line=80, header_count=5, header_bytes=200, body=50))
    for piece in (data[:cut], data[cut:]):
        parser.feed(piece)
        try:
            while (request := parser.next_request()) is not None:
                assert isinstance(request, Request) and request.version in ((1, 0), (1, 1))
                assert len(request.body) <= 50 and len(request.headers) <= 5
        except HttpError as exc:
            assert exc.status in (400, 413, 414, 431, 501, 505)
            return


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join), st.integers(0, 400))
def test_fuzz_structured_input_only_gives_requests_or_http_errors(data, cut):
    _never_raises_anything_else(data, cut)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_fuzz_random_bytes_only_give_requests_or_http_errors(data, cut):
    _never_raises_anything_else(data, cut)
