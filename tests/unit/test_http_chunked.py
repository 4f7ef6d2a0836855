"""Chunked request bodies (RFC 9112 section 7.1) in the HTTP parser: decoded however the bytes
are cut, strict about framing, bounded as they stream."""
import pytest
from hypothesis import given, settings, strategies as st

from mnet.apps.http.parser import HttpError, Limits, Request, RequestParser

HEAD = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def requests_from(pieces, limits: Limits = Limits()) -> list[Request]:
    parser = RequestParser(limits)
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (request := parser.next_request()) is not None:
            out.append(request)
    assert not parser.partial, "bytes of an unfinished request left over"
    return out


def status_of(data: bytes, limits: Limits = Limits()) -> int:
    parser = RequestParser(limits)
    parser.feed(data)
    with pytest.raises(HttpError) as caught:
        while parser.next_request() is not None:
            pass
    return caught.value.status


def encode(body: bytes, sizes: list[int], extensions: list[bytes] = (), trailers: bytes = b"") -> bytes:
    """``body`` as chunks of ``sizes`` (cycled; the rest in one chunk), the last-chunk and trailers."""
    out, at, i = [], 0, 0
    while at < len(body):
        size = max(1, sizes[i % len(sizes)]) if sizes else len(body)
        ext = extensions[i % len(extensions)] if extensions else b""
        out.append(b"%x%s\r\n%s\r\n" % (len(body[at:at + size]), ext, body[at:at + size]))
        at, i = at + size, i + 1
    return b"".join(out) + b"0\r\n" + trailers + b"\r\n"


def test_chunks_extensions_and_trailers_are_decoded_and_the_next_request_follows():
    data = HEAD + b"5\r\nhello\r\n6;name=value ; q=\"a \\\"b\\\"\" ;flag\r\n world\r\n000\r\nX-Sum: 1\r\nX-Two:\r\n\r\n" + NEXT
    first, second = requests_from([data])
    assert first.body == b"hello world" and first.header("transfer-encoding") == "chunked"
    assert second.target == "/next" and second.body == b""


def test_an_empty_chunked_body_and_upper_case_hex_and_leading_zeros():
    assert requests_from([HEAD + b"0\r\n\r\n"])[0].body == b""
    assert requests_from([HEAD + b"00A\r\n0123456789\r\n0\r\n\r\n"])[0].body == b"0123456789"


@pytest.mark.parametrize("codings", [b"chunked", b"Chunked", b"chunked, ", b", chunked"])
def test_transfer_encoding_spellings_that_mean_chunked(codings):
    head = b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + codings + b"\r\n\r\n"
    assert requests_from([head + b"2\r\nok\r\n0\r\n\r\n"])[0].body == b"ok"


@pytest.mark.parametrize("framing, status", [
    (b"Transfer-Encoding: chunked\r\nContent-Length: 5", 400),     # which one? smuggling (RFC 9112 6.3)
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
    (b"Transfer-Encoding: gzip", 400),                             # chunked not last: length unknown
    (b"Transfer-Encoding: chunked, gzip", 400),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip", 400),
    (b"Transfer-Encoding: chunked, chunked", 400),                 # chunked applied twice
    (b"Transfer-Encoding: ", 400),
    (b"Transfer-Encoding: gzip, chunked", 501),                    # framed, but a coding we do not read
    (b"Transfer-Encoding: identity, chunked", 501),
])
def test_transfer_encodings_this_server_does_not_read(framing, status):
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n") == status


def test_transfer_encoding_on_http_1_0_is_bad_framing():
    assert status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400


@pytest.mark.parametrize("chunks", [
    b"x\r\nhello\r\n0\r\n\r\n",              # not hex
    b"0x5\r\nhello\r\n0\r\n\r\n",            # int(.., 16) would take these four
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"5_0\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",             # whitespace only before an extension
    b"\r\nhello\r\n0\r\n\r\n",               # no size
    b"1" * 17 + b"\r\n",                     # past 64 bits
    b"5\nhello\r\n0\r\n\r\n",                # bare LF after the size
    b"5\r\r\nhello\r\n0\r\n\r\n",            # bare CR
    b"5\r\nhelloXY0\r\n\r\n",                # data not followed by CRLF
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\n",                # bare LF ending the trailer section
    b"5;\r\nhello\r\n0\r\n\r\n",             # extension without a name
    b"5;=v\r\nhello\r\n0\r\n\r\n",
    b"5;n=\r\nhello\r\n0\r\n\r\n",
    b"5;n=\"open\r\nhello\r\n0\r\n\r\n",
    b"5;n=a b\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nNo colon\r\n\r\n",  # a malformed trailer field
    b"5\r\nhello\r\n0\r\nX : y\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: y\r\n folded\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n",
])
def test_malformed_chunks_are_400(chunks):
    assert status_of(HEAD + chunks) == 400


def test_the_body_limit_counts_every_chunk_and_refuses_before_the_data_comes():
    small = Limits(body=10)
    assert requests_from([HEAD + encode(b"x" * 10, [3])], small)[0].body == b"x" * 10
    assert status_of(HEAD + b"6\r\nxxxxxx\r\n5\r\n", small) == 413         # 11 > 10, nothing of the 5 sent
    assert status_of(HEAD + b"fffffffffffffff\r\n") == 413                 # 15 hex digits: big, not overflowing
    parser = RequestParser(small)
    parser.feed(HEAD + b"b\r\n")
    with pytest.raises(HttpError) as caught:
        parser.next_request()
    assert caught.value.status == 413


def test_chunk_lines_and_extensions_are_bounded():
    limits = Limits(chunk_line=20, chunk_extensions=30)
    ok = b";e=" + b"v" * 15                                                # line of 19 bytes
    assert requests_from([HEAD + b"1" + ok + b"\r\nx\r\n0\r\n\r\n"], limits)[0].body == b"x"
    assert status_of(HEAD + b"1;e=" + b"v" * 17 + b"\r\nx\r\n0\r\n\r\n", limits) == 400
    assert status_of(HEAD + b"1;e=" + b"v" * 40, limits) == 400             # known before the line ends
    assert status_of(HEAD + b"0" * 25, limits) == 400                      # leading zeros are bytes of it too
    assert status_of(HEAD + (b"1" + ok + b"\r\nx\r\n") * 2, limits) == 413  # 36 bytes of extensions in all


def test_trailers_are_bounded_like_header_fields():
    limits = Limits(header_count=3, header_bytes=60)   # the head's two fields fit; the trailer counts apart
    assert requests_from([HEAD + b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"], limits)[0].body == b""
    assert status_of(HEAD + b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits) == 431
    assert status_of(HEAD + b"0\r\nA: " + b"v" * 60 + b"\r\n\r\n", limits) == 431
    assert status_of(HEAD + b"0\r\nA: " + b"v" * 60, limits) == 431          # before the line ends


def test_a_chunked_body_is_waited_for():
    parser = RequestParser()
    parser.feed(HEAD + b"5\r\nhel")
    assert parser.next_request() is None and parser.partial and parser.waiting_for_body.target == "/up"
    parser.feed(b"lo\r\n0\r\n")
    assert parser.next_request() is None and parser.partial
    parser.feed(b"\r\n")
    assert parser.next_request().body == b"hello" and not parser.partial


# -- however the bytes are cut, the same body ---------------------------------------------------------

bodies = st.binary(max_size=300)
chunk_sizes = st.lists(st.integers(1, 70), min_size=1, max_size=8)
extensions = st.lists(st.sampled_from([b"", b";a", b";a=b", b" ; a = \"q;\\\"\"", b";x=1;y"]), max_size=3)
trailers = st.lists(st.sampled_from([b"X-Sum: 1\r\n", b"Y:\r\n", b"Z: a b\tc\r\n"]), max_size=3).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(bodies, chunk_sizes, extensions, trailers)
def test_a_body_split_at_every_byte_boundary_decodes_the_same(body, sizes, exts, trailer):
    data = HEAD + encode(body, sizes, exts, trailer) + NEXT
    for cut in range(len(data) + 1):
        first, second = requests_from([data[:cut], data[cut:]])
        assert first.body == body and second.target == "/next"


@settings(max_examples=300, deadline=None)
@given(bodies, chunk_sizes, extensions, trailers, st.lists(st.integers(0, 2000), max_size=12))
def test_random_chunkings_on_the_wire_decode_the_same(body, sizes, exts, trailer, cuts):
    data = HEAD + encode(body, sizes, exts, trailer) + NEXT
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    first, second = requests_from([data[a:b] for a, b in zip(points, points[1:])])
    assert first.body == body and second.target == "/next"


@settings(max_examples=300, deadline=None)
@given(bodies, chunk_sizes, st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_a_corrupted_chunked_body_gives_a_request_or_an_http_error(body, sizes, at, junk):
    data = bytearray(HEAD + encode(body, sizes))
    spot = len(HEAD) + at % (len(data) - len(HEAD))
    data[spot:spot + len(junk)] = junk
    parser = RequestParser(Limits(body=200, chunk_line=40, chunk_extensions=60, header_count=3, header_bytes=60))
    parser.feed(bytes(data))
    try:
        while (request := parser.next_request()) is not None:
            assert len(request.body) <= 200
    except HttpError as exc:
        assert exc.status in (400, 413, 431, 505)
