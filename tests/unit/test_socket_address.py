"""IpAddress: construction, parsing, comparison, hashing, str."""
from ipaddress import IPv4Address

import pytest

from stack import IpAddress


def test_new_v4_and_fields():
    addr = IpAddress.new_v4(10, 0, 0, 1, 53)
    assert addr.ip == IPv4Address("10.0.0.1") and addr.port == 53
    assert str(addr) == "10.0.0.1:53"
    assert IpAddress.new_v4(192, 168, 1, 1).port == 0


def test_parse_round_trip():
    for text in ["10.0.0.1:53", "0.0.0.0:0", "255.255.255.255:65535"]:
        assert str(IpAddress.parse(text)) == text
    assert IpAddress.parse(" 10.0.0.1:53 ") == IpAddress("10.0.0.1", 53)
    assert IpAddress.parse("10.0.0.1") == IpAddress("10.0.0.1", 0)


@pytest.mark.parametrize(
    "text",
    ["", "10.0.0.1:", "10.0.0.1:-1", "10.0.0.1:65536", "10.0.0:53", "10.0.0.256:1", "host:80", "[::1]:53", "10.0.0.1:5x"],
)
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        IpAddress.parse(text)


def test_parse_rejects_non_string():
    with pytest.raises(ValueError):
        IpAddress.parse(b"10.0.0.1:53")


@pytest.mark.parametrize("args", [(256, 0, 0, 1), (-1, 0, 0, 1), (1, 2, 3, 4, 70000), (1, 2, 3, True)])
def test_new_v4_rejects(args):
    with pytest.raises(ValueError):
        IpAddress.new_v4(*args)


def test_constructor_validates():
    with pytest.raises(ValueError):
        IpAddress("10.0.0.1", 65536)
    with pytest.raises(ValueError):
        IpAddress("10.0.0.1", True)
    with pytest.raises(ValueError):
        IpAddress("nope", 1)
    assert IpAddress(IPv4Address("1.2.3.4"), 5) == IpAddress("1.2.3.4", 5)
    assert IpAddress(0x01020304, 5) == IpAddress("1.2.3.4", 5)


def test_compare_and_hash():
    a = IpAddress.parse("10.0.0.1:53")
    b = IpAddress.parse("10.0.0.1:80")
    c = IpAddress.parse("10.0.0.2:1")
    assert a < b < c
    assert sorted([c, b, a]) == [a, b, c]
    assert a == IpAddress.new_v4(10, 0, 0, 1, 53)
    assert a != b and a != "10.0.0.1:53"
    assert len({a, IpAddress.parse("10.0.0.1:53"), b}) == 2
    assert {a: 1}[IpAddress("10.0.0.1", 53)] == 1


def test_immutable_and_helpers():
    a = IpAddress.any(8080)
    assert a.is_unspecified and str(a) == "0.0.0.0:8080"
    with pytest.raises(AttributeError):
        a.port = 1
