"""What the HTTP server answers, without sockets: targets, the served directory (path
traversal attempts included), the fixed pages, methods, response heads."""
import json
import os

import pytest

from mnet.apps.http.content_types import content_type
from mnet.apps.http.files import DirectorySite
from mnet.apps.http.handler import respond
from mnet.apps.http.parser import HttpError, RequestParser
from mnet.apps.http.paths import parse_target
from mnet.apps.http.response import FileBody, Response, error_response, http_date
from mnet.apps.http.routes import FixedSite


def request(text: str):
    parser = RequestParser()
    parser.feed(text.encode("latin-1"))
    return parser.next_request()


def get(site, target: str) -> Response:
    return respond(request(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"), site)


def body_of(response: Response) -> bytes:
    return response.body.path.read_bytes() if isinstance(response.body, FileBody) else response.body


@pytest.fixture
def site(tmp_path):
    """root/ with index.html, a file, a directory without an index, a symlink inside and one out;
    a secret next to the root."""
    root = tmp_path / "root"
    (root / "docs" / "empty dir").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "docs" / "a b.txt").write_text("spaced")
    (root / "docs" / "data.JSON").write_text("{}")
    (root / "docs" / "<odd>&name").write_text("odd")
    (tmp_path / "secret.txt").write_text("top secret")
    (root / "inside").symlink_to(root / "docs" / "a b.txt")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")
    return DirectorySite(root)


def test_targets_are_decoded_and_normalised():
    t = parse_target("/docs//./a%20b.txt?x=1#frag")
    assert t.segments == ("docs", "a b.txt") and t.path == "/docs/a b.txt" and t.raw_path == "/docs//./a%20b.txt"
    assert parse_target("http://example.test:80/x/").segments == ("x",)
    assert parse_target("http://example.test").path == "/"
    assert parse_target("/caf%C3%A9").segments == ("café",)
    assert parse_target("/docs/").is_directory_form and not parse_target("/docs").is_directory_form


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2e/secret.txt", "/docs/%2e%2e/%2e%2e/x",
    "/..%2fsecret.txt", "/a/..", "http://h/../secret.txt",
])
def test_dot_dot_in_any_spelling_is_refused(target):
    with pytest.raises(HttpError) as caught:
        parse_target(target)
    assert caught.value.status == 400


@pytest.mark.parametrize("target", ["secret.txt", "*", "/%zz", "/%", "/a%00b", "/%ff%fe", "//etc/passwd%00"])
def test_other_bad_targets_are_refused(target):
    with pytest.raises(HttpError) as caught:
        parse_target(target)
    assert caught.value.status == 400


def test_traversal_never_reaches_the_secret(site):
    for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/docs/%2e%2e/%2e%2e/secret.txt", "/escape",
                   "/escape-dir/secret.txt", "//../secret.txt", "/escape-dir/"):
        response = get(site, target)
        assert response.status in (400, 404), (target, response.status)
        assert b"top secret" not in body_of(response)


def test_an_absolute_path_stays_under_the_root(site):
    # "//etc/passwd" is the segments ("etc", "passwd") under the root, never /etc/passwd.
    assert get(site, "//etc/passwd").status == 404
    assert get(site, "/%2Fetc%2Fpasswd").status == 404


def test_files_with_their_types(site):
    r = get(site, "/docs/a%20b.txt")
    assert r.status == 200 and body_of(r) == b"spaced" and r.header("Content-Type") == "text/plain; charset=utf-8"
    assert r.header("Last-Modified").endswith(" GMT") and r.length == 6
    assert get(site, "/docs/data.JSON").header("Content-Type") == "application/json"
    assert body_of(get(site, "/inside")) == b"spaced"  # a symlink that stays inside is followed
    assert get(site, "/nope").status == 404
    assert get(site, "/fifo").status == 404  # not a regular file: it would hold a worker


def test_directories_get_their_index_a_listing_or_a_redirect(site):
    r = get(site, "/")
    assert r.status == 200 and body_of(r) == b"<h1>home</h1>" and r.header("Content-Type").startswith("text/html")
    r = get(site, "/docs/")
    listing = body_of(r).decode()
    assert r.status == 200 and 'href="a%20b.txt"' in listing and 'href="empty%20dir/"' in listing
    assert "&lt;odd&gt;&amp;name" in listing and "<odd>" not in listing
    r = get(site, "/docs")
    assert r.status == 301 and r.header("Location") == "/docs/" and r.length == 0


def test_an_unreadable_file_is_forbidden(site, monkeypatch):
    # (The tests may run as root, who reads every file: access() is asked, so it answers no here.)
    from mnet.apps.http import files

    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    assert get(site, "/docs/a%20b.txt").status == 403


def test_methods():
    site = FixedSite("http:80", lambda: {"ok": 1})
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT"):
        r = respond(request(f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n"), site)
        assert r.status == 405 and r.header("Allow") == "GET, HEAD", method
    for method in ("BREW", "get", "PROPFIND"):
        assert respond(request(f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n"), site).status == 501
    head = respond(request("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"), site)
    assert head.status == 200 and head.length == get(site, "/").length


def test_fixed_pages():
    site = FixedSite("http:8080", lambda: {"server": {"responses": 3}, "stack": {"tcp": {"rx": 9}}})
    home = get(site, "/")
    assert home.status == 200 and b"http:8080" in home.body and b'href="/status"' in home.body
    status = get(site, "/status?pretty")
    assert status.header("Content-Type") == "application/json"
    assert json.loads(status.body) == {"server": {"responses": 3}, "stack": {"tcp": {"rx": 9}}}
    assert get(site, "/other").status == 404
    assert get(site, "/%2e%2e/").status == 400


def test_response_head():
    head = error_response(405, "no <b>", [("Allow", "GET, HEAD")]).head("HTTP/1.1", True, now=0).decode()
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 405 Method Not Allowed" and head.endswith("\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:-2])
    assert fields["Allow"] == "GET, HEAD" and fields["Connection"] == "keep-alive"
    assert fields["Date"] == "Thu, 01 Jan 1970 00:00:00 GMT" == http_date(0)
    assert fields["Server"].startswith("MultiOS-http/") and fields["Content-Type"].startswith("text/html")
    body = error_response(405, "no <b>").body
    assert int(fields["Content-Length"]) == len(body) and b"no &lt;b&gt;" in body
    assert "Connection: close" in Response(200).head("HTTP/1.1", False).decode()


def test_content_types():
    assert content_type("a.HTML") == "text/html; charset=utf-8"
    assert content_type("x.tar.gz") == "application/gzip"
    assert content_type("README") == content_type("x.unknown") == "application/octet-stream"
