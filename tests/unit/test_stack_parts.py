"""The small sans-IO parts: ARP cache, routes, UDP binding table, rate limiter, counters."""
import errno
import random
from ipaddress import IPv4Address as A, IPv4Interface

import pytest

from stack.arp_cache import ArpCache
from stack.counters import Counters
from stack.ratelimit import KeyedRateLimiter
from stack.routes import RouteKind, RouteTable
from stack.udp import EPHEMERAL_PORTS, UdpSocketState, UdpTable
from stack.wire import MacAddress

MAC = MacAddress("02:00:00:00:00:01")
ANY = A("0.0.0.0")


# -- ARP cache ---------------------------------------------------------------
def test_arp_retries_then_fails_with_queued_items():
    cache = ArpCache(tries=3, retry_interval=1.0)
    ip = A("10.0.0.9")
    assert cache.enqueue(ip, "p1", now=0.0) == []
    assert cache.poll_at() == 0.0
    assert cache.poll(0.0).requests == [ip]
    assert cache.poll(0.5).requests == []
    assert cache.poll_at() == 1.0
    assert cache.poll(1.0).requests == [ip]
    assert cache.poll(2.0).requests == [ip]
    result = cache.poll(3.0)
    assert result.requests == [] and result.failed == [(ip, ["p1"])]
    assert cache.poll_at() is None and not cache.is_pending(ip)


def test_arp_learn_releases_queue_and_ages_out():
    cache = ArpCache(reachable_time=60.0)
    ip = A("10.0.0.9")
    cache.enqueue(ip, "a", 0.0)
    cache.enqueue(ip, "b", 0.0)
    cache.poll(0.0)
    assert cache.learn(ip, MAC, 0.2, create=False) == ["a", "b"], "an incomplete entry is updated"
    assert cache.lookup(ip, 10.0) == MAC
    assert cache.lookup(ip, 60.2) is None, "aged out"
    assert cache.entries(61.0) == {}


def test_arp_entry_in_use_is_refreshed_by_unicast_probes_before_it_ages_out():
    cache = ArpCache(tries=3, retry_interval=1.0, reachable_time=60.0)
    ip = A("10.0.0.9")
    cache.learn(ip, MAC, 0.0, create=True)
    assert cache.lookup(ip, 50.0) == MAC and cache.poll_at() is None  # not near its end yet
    assert cache.lookup(ip, 57.5) == MAC  # in use in its last 3 s: a refresh starts
    assert cache.poll_at() == 57.5
    result = cache.poll(57.5)
    assert result.probes == [(ip, MAC)] and result.requests == []  # to the known MAC, RFC 1122
    assert cache.lookup(ip, 58.0) == MAC and cache.poll(58.0).probes == []  # packets still go out
    assert cache.poll(58.5).probes == [(ip, MAC)]  # retried
    assert cache.learn(ip, MAC, 58.7, create=False) == []  # the answer renews it
    assert cache.lookup(ip, 100.0) == MAC and cache.poll_at() is None
    assert cache.lookup(ip, 118.7) is None, "an entry renewed at 58.7 lasts until 118.7"


def test_arp_refresh_nobody_answers_ages_out_as_before():
    cache = ArpCache(tries=2, retry_interval=1.0, reachable_time=60.0)
    ip = A("10.0.0.9")
    cache.learn(ip, MAC, 0.0, create=True)
    assert cache.lookup(ip, 58.0) == MAC
    assert cache.poll(58.0).probes == [(ip, MAC)]
    assert cache.poll(59.0).probes == [(ip, MAC)]
    assert cache.poll(59.5).probes == [] and cache.poll_at() is None  # tries used up
    assert cache.lookup(ip, 60.0) is None and cache.entries(60.0) == {}


def test_arp_learn_creates_only_when_asked():
    cache = ArpCache()
    assert cache.learn(A("10.0.0.5"), MAC, 0.0, create=False) == []
    assert cache.lookup(A("10.0.0.5"), 0.0) is None
    cache.learn(A("10.0.0.5"), MAC, 0.0, create=True)
    assert cache.lookup(A("10.0.0.5"), 0.0) == MAC


def test_arp_queue_is_bounded_oldest_dropped():
    cache = ArpCache(queue_len=2)
    ip = A("10.0.0.9")
    assert cache.enqueue(ip, 1, 0.0) == []
    assert cache.enqueue(ip, 2, 0.0) == []
    assert cache.enqueue(ip, 3, 0.0) == [1]
    assert cache.learn(ip, MAC, 0.0, create=False) == [2, 3]


def test_arp_table_is_bounded():
    cache = ArpCache(max_entries=2)
    cache.learn(A("10.0.0.1"), MAC, 0.0, create=True)
    cache.learn(A("10.0.0.2"), MAC, 1.0, create=True)
    cache.learn(A("10.0.0.3"), MAC, 2.0, create=True)
    assert set(cache.entries(2.0)) == {A("10.0.0.2"), A("10.0.0.3")}, "oldest resolved entry evicted"
    full = ArpCache(max_entries=1)
    full.enqueue(A("10.0.0.1"), "x", 0.0)
    assert full.enqueue(A("10.0.0.2"), "y", 0.0) == ["y"], "refused rather than failing a pending entry"


def test_arp_rejects_bad_parameters():
    with pytest.raises(ValueError):
        ArpCache(tries=0)


# -- routes ------------------------------------------------------------------
def test_routes():
    table = RouteTable([IPv4Interface("10.0.0.2/24")], gateway=A("10.0.0.1"))
    assert table.lookup(A("10.0.0.2")).kind is RouteKind.LOCAL
    r = table.lookup(A("127.0.0.5"))
    assert r.kind is RouteKind.LOCAL and r.src == A("127.0.0.1")
    assert table.lookup(A("10.0.0.7")) .next_hop == A("10.0.0.7")
    r = table.lookup(A("8.8.8.8"))
    assert (r.kind, r.next_hop, r.src) == (RouteKind.GATEWAY, A("10.0.0.1"), A("10.0.0.2"))
    assert table.lookup(A("10.0.0.255")).kind is RouteKind.BROADCAST
    assert table.lookup(A("255.255.255.255")).kind is RouteKind.BROADCAST
    with pytest.raises(OSError) as exc:
        table.lookup(A("8.8.8.8"), src=A("127.0.0.1"))
    assert exc.value.errno == errno.EINVAL


def test_no_gateway_is_enetunreach_and_bad_config_is_valueerror():
    table = RouteTable([IPv4Interface("10.0.0.2/24")])
    with pytest.raises(OSError) as exc:
        table.lookup(A("192.0.2.1"))
    assert exc.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError):
        table.lookup(A("224.0.0.1"))
    with pytest.raises(ValueError):
        RouteTable([IPv4Interface("10.0.0.2/24")], gateway=A("192.0.2.1"))
    with pytest.raises(ValueError):
        RouteTable([IPv4Interface("127.0.0.2/8")])
    with pytest.raises(ValueError):
        RouteTable([])


# -- UDP binding table -------------------------------------------------------
def bound(table, ip, port, reuse=False):
    s = UdpSocketState()
    s.reuse_addr = reuse
    table.bind(s, A(ip), port)
    return s


def test_udp_bind_conflicts_and_reuse():
    t = UdpTable(random.Random(1))
    bound(t, "0.0.0.0", 53)
    with pytest.raises(OSError) as exc:
        bound(t, "10.0.0.2", 53)
    assert exc.value.errno == errno.EADDRINUSE
    bound(t, "10.0.0.2", 54)
    bound(t, "10.0.0.3", 54)  # different specific addresses do not overlap
    a = bound(t, "0.0.0.0", 99, reuse=True)
    b = bound(t, "0.0.0.0", 99, reuse=True)
    assert t.lookup(A("10.0.0.2"), 99, A("10.0.0.1"), 5, broadcast=False) == [b], "latest bound wins"
    assert t.lookup(A("10.0.0.255"), 99, A("10.0.0.1"), 5, broadcast=True) == [a, b]
    with pytest.raises(OSError) as exc:
        t.bind(a, ANY, 100)
    assert exc.value.errno == errno.EINVAL


def test_udp_lookup_prefers_specific_and_connected():
    t = UdpTable()
    wild = bound(t, "0.0.0.0", 7, reuse=True)
    spec = bound(t, "10.0.0.2", 7, reuse=True)
    conn = bound(t, "10.0.0.2", 7, reuse=True)
    conn.remote = (A("10.0.0.1"), 1000)
    # registration order must not matter: the wildcard is now the latest
    t.unbind(wild)
    assert wild.local is None
    t.bind(wild, ANY, 7)
    assert t.lookup(A("10.0.0.2"), 7, A("10.0.0.1"), 1000, broadcast=False) == [conn]
    assert t.lookup(A("10.0.0.2"), 7, A("10.0.0.9"), 1000, broadcast=False) == [spec]
    assert t.lookup(A("10.0.0.3"), 7, A("10.0.0.9"), 1000, broadcast=False) == [wild]
    assert t.find(A("10.0.0.2"), 7, A("10.0.0.1"), 1000) is conn
    t.unbind(conn)
    assert t.find(A("10.0.0.2"), 7, A("10.0.0.1"), 1000) is spec


def test_ephemeral_ports_random_in_range_and_exhaustion():
    t = UdpTable(random.Random(7), ephemeral=(40000, 40009))
    ports = {bound(t, "0.0.0.0", 0).local[1] for _ in range(10)}
    assert ports == set(range(40000, 40010))
    with pytest.raises(OSError) as exc:
        bound(t, "0.0.0.0", 0)
    assert exc.value.errno == errno.EADDRINUSE
    starts = {UdpTable(random.Random(seed))._pick_ephemeral() for seed in range(20)}
    assert len(starts) > 10, "the starting point is randomized (RFC 6056)"
    assert all(EPHEMERAL_PORTS[0] <= p <= EPHEMERAL_PORTS[1] for p in starts)


def test_udp_bind_rejects_bad_port():
    with pytest.raises(OSError) as exc:
        bound(UdpTable(), "0.0.0.0", 70000)
    assert exc.value.errno == errno.EINVAL


# -- rate limiter and counters -------------------------------------------------
def test_rate_limiter_burst_then_rate_per_key():
    rl = KeyedRateLimiter(burst=3, rate=1.0, max_keys=2)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0.0), "other keys have their own bucket"
    assert not rl.allow("a", 0.5)
    assert rl.allow("a", 1.5)
    with pytest.raises(ValueError):
        KeyedRateLimiter(burst=0)


def test_counters():
    c = Counters()
    c.bump("udp", "rx")
    c.drop("udp", "bad checksum")
    c.drop("ipv4", "bad checksum")
    assert c.get("udp", "drop.bad checksum") == 1
    assert c.drops("udp") == 1 and c.drops() == 2
    snap = c.snapshot()
    c.bump("udp", "rx")
    assert snap["udp"]["rx"] == 1, "a snapshot does not change"
