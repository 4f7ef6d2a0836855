"""The load balancer's choices and health (mnet.apps.loadbalancer.balancer, sans-IO) and its options."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnet.apps.loadbalancer.balancer import POLICIES, Balancer, Change
from mnet.apps.loadbalancer.options import DEFAULT_CHECK, DEFAULT_TIMEOUT, LbOptions, lb_options
from mnet.services.errors import ServiceSpecError
from mnet.services.spec import parse_service
from stack import IpAddress

ADDRESSES = [f"10.0.0.1:{7001 + k}" for k in range(6)]


def balancer(n: int, policy: str = "round-robin", interval: float = 1.0) -> Balancer:
    return Balancer(ADDRESSES[:n], policy, interval, now=0.0)


# Any history: backends going down (a failed attempt or check) and up (a passed check),
# connections opened and closed. Applied in order by `replay`.
events = st.lists(st.tuples(st.sampled_from(["fail", "check-fail", "check-pass", "open", "close"]),
                            st.integers(0, 5)), max_size=40)


def replay(b: Balancer, history) -> float:
    """Apply ``history``, a check result a minute after the last; the time at the end."""
    now = 0.0
    for what, k in history:
        i = k % len(b.backends)
        if what == "fail":
            b.opening(i)
            b.connect_failed(i, "refused")
        elif what == "check-fail":
            now += 60.0
            b.checks_due(now)
            b.check_failed(i, "refused")
        elif what == "check-pass":
            now += 60.0
            b.checks_due(now)
            b.check_passed(i)
        elif what == "open" and b.backends[i].up:
            b.opening(i)
            b.connected(i)
        elif what == "close" and b.backends[i].active:
            b.closed(i, 10, 20)
    return now


@given(n=st.integers(1, 6), policy=st.sampled_from(POLICIES), history=events,
       exclude=st.sets(st.integers(0, 5)))
def test_only_backends_that_are_up_and_not_yet_tried_are_chosen(n, policy, history, exclude):
    b = balancer(n, policy)
    replay(b, history)
    chosen = b.choose(exclude)
    candidates = [i for i, s in enumerate(b.backends) if s.up and i not in exclude]
    if candidates:
        assert chosen in candidates
    else:
        assert chosen is None


@given(n=st.integers(1, 6), policy=st.sampled_from(POLICIES), history=events, rounds=st.integers(1, 5))
def test_sequential_connections_share_the_up_backends_evenly(n, policy, history, rounds):
    # Whatever happened before, k rounds of one-at-a-time connections give each backend
    # that is up exactly k of them, under either policy.
    b = balancer(n, policy)
    replay(b, history)
    up = [i for i, s in enumerate(b.backends) if s.up]
    for i, s in enumerate(b.backends):  # (least-conn looks at open connections: start with none open)
        while s.active:
            b.closed(i, 0, 0)
    picks = []
    for _ in range(rounds * len(up)):
        i = b.choose()
        picks.append(i)
        b.opening(i)
        b.connected(i)
        b.closed(i, 0, 0)
    assert Counter(picks) == {i: rounds for i in up}


@given(n=st.integers(1, 6), history=events)
def test_least_conn_picks_a_backend_with_the_fewest_open_connections(n, history):
    # Connections being opened count too: a burst of clients is spread before any connects.
    b = balancer(n, "least-conn")
    replay(b, history)
    for _ in range(2 * n):
        i = b.choose()
        if i is None:
            assert not any(s.up for s in b.backends)
            return
        assert b.backends[i].active == min(s.active for s in b.backends if s.up)
        b.opening(i)


@given(n=st.integers(1, 6), policy=st.sampled_from(POLICIES), history=events, which=st.integers(0, 5))
def test_a_backend_is_chosen_again_once_its_check_passes(n, policy, history, which):
    b = balancer(n, policy)
    now = replay(b, history)
    i = which % n
    b.opening(i)
    b.connect_failed(i, "refused")
    assert i not in [b.choose() for _ in range(n)]
    b.checks_due(now + 60.0)
    assert b.backends[i].checking  # due now, or still under way
    change = b.check_passed(i)
    assert change == Change(i, ADDRESSES[i], True)
    for j, s in enumerate(b.backends):
        while s.active:
            b.closed(j, 0, 0)
    assert i in [b.choose() for _ in range(n)]


def test_changes_are_reported_once_per_change_and_counted():
    b = balancer(2)
    b.opening(1)
    assert b.connect_failed(1, "Connection refused") == Change(1, ADDRESSES[1], False, "Connection refused")
    b.opening(1)
    assert b.connect_failed(1, "again") is None  # down already: counted, not reported
    assert b.backends[1].failures == 2 and b.backends[1].reason == "Connection refused"
    assert b.backends[1].active == 0
    b.checks_due(0.0)
    assert b.check_passed(0) is None  # it was up: no change
    assert str(b.check_passed(1)) == f"backend {ADDRESSES[1]} is up"
    b.checks_due(5.0)
    assert str(b.check_failed(0, "x (health check)")) == f"backend {ADDRESSES[0]} is down: x (health check)"


@given(interval=st.floats(0.01, 100), steps=st.lists(st.floats(0, 50), max_size=30))
@settings(deadline=None)
def test_each_backend_is_checked_every_interval_one_check_at_a_time(interval, steps):
    b = Balancer(ADDRESSES[:3], "round-robin", interval, now=5.0)
    assert b.checks_due(5.0) == [0, 1, 2]  # the first checks at once
    assert b.next_check_at() is None  # all under way
    now = 5.0
    started = {0: 5.0, 1: 5.0, 2: 5.0}
    for k, dt in enumerate(steps):
        now += dt
        under_way = {i for i in range(3) if b.backends[i].checking}
        due = b.checks_due(now)
        assert under_way.isdisjoint(due)
        for i in due:
            assert b.backends[i].checking
            assert now >= started[i] + interval  # never sooner than one interval after the last
            started[i] = now
        i = k % 3
        if b.backends[i].checking:
            b.check_passed(i) if k % 2 else b.check_failed(i, "refused")
        waiting = [s.next_check for s in b.backends if not s.checking]
        assert b.next_check_at() == (min(waiting) if waiting else None)


def expected_up(results, rise: int, fall: int) -> bool:
    """Whether a backend is up after ``results`` ("pass", "fail": health checks; "refused": a client's
    connection attempt failed), said the other way round from the balancer's counters: the last event
    that decided is a refusal (down), the ``fall``-th failed check in a row (down) or the ``rise``-th
    passed check in a row counted since the last failure or refusal (up). Nothing decided yet: up."""
    state, passes, fails = True, 0, 0
    for r in results:
        if r == "refused":
            state, passes = False, 0
        elif r == "fail":
            passes, fails = 0, fails + 1
            if fails == fall:
                state = False
        else:
            passes, fails = passes + 1, 0
            if passes == rise:
                state = True
    return state


@given(rise=st.integers(1, 4), fall=st.integers(1, 4),
       results=st.lists(st.sampled_from(["pass", "fail", "refused"]), max_size=40))
def test_rise_and_fall_count_checks_in_a_row_and_a_refused_client_counts_at_once(rise, fall, results):
    b = Balancer(ADDRESSES[:2], "round-robin", 1.0, now=0.0, rise=rise, fall=fall)
    now, up = 0.0, True
    for k, r in enumerate(results):
        if r == "refused":
            b.opening(0)
            change = b.connect_failed(0, "refused")
        else:
            assert b.checks_due(now) == [0, 1]  # (a fake clock: one interval per check)
            change = b.check_passed(0) if r == "pass" else b.check_failed(0, "refused")
            b.check_passed(1)
            now += 1.0
        want = expected_up(results[:k + 1], rise, fall)
        assert b.backends[0].up is want
        assert change == (None if want is up else Change(0, ADDRESSES[0], want, "" if want else "refused"))
        assert (0 in {b.choose(), b.choose()}) is want  # (two turns of round-robin over two backends)
        up = want
    assert b.backends[1].up  # the other backend's passed checks kept it up throughout


def test_a_backend_that_fails_one_check_with_fall_2_stays_up_and_in_turn():
    b = Balancer(ADDRESSES[:2], "round-robin", 1.0, now=0.0, fall=2, rise=2)
    b.checks_due(0.0)
    assert b.check_failed(0, "refused") is None and b.backends[0].up and b.backends[0].failures == 1
    b.check_passed(1)
    assert sorted(b.choose() for _ in range(2)) == [0, 1]
    b.checks_due(1.0)
    assert b.check_passed(0) is None  # the run of failures is broken
    b.check_passed(1)
    b.checks_due(2.0)
    assert b.check_failed(0, "refused") is None  # one failure in a row again: still up
    b.check_passed(1)
    b.checks_due(3.0)
    assert b.check_failed(0, "timed out") == Change(0, ADDRESSES[0], False, "timed out")
    b.checks_due(4.0)
    assert b.check_passed(0) is None and not b.backends[0].up  # one of the two it needs
    b.checks_due(5.0)
    assert b.check_passed(0) == Change(0, ADDRESSES[0], True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one backend"):
        Balancer([], "round-robin", 1.0, 0.0)
    with pytest.raises(ValueError, match="policy must be one of round-robin, least-conn"):
        Balancer(ADDRESSES[:1], "random", 1.0, 0.0)
    with pytest.raises(ValueError, match="interval must be > 0"):
        Balancer(ADDRESSES[:1], "round-robin", 0.0, 0.0)
    with pytest.raises(ValueError, match="rise and fall must be >= 1"):
        Balancer(ADDRESSES[:1], "round-robin", 1.0, 0.0, fall=0)


# -- options ----------------------------------------------------------------------------------------

def test_options_with_their_defaults():
    svc = parse_service("lb:8080,backend=10.0.0.254:8001,backend=10.0.0.254:8002")
    assert lb_options(svc) == LbOptions((IpAddress("10.0.0.254", 8001), IpAddress("10.0.0.254", 8002)),
                                        "round-robin", DEFAULT_CHECK, DEFAULT_TIMEOUT)
    svc = parse_service("lb:80,backend=10.0.0.5:80,policy=least-conn,check=0.5,timeout=3")
    assert lb_options(svc) == LbOptions((IpAddress("10.0.0.5", 80),), "least-conn", 0.5, 3.0)
    assert (lb_options(svc).rise, lb_options(svc).fall, lb_options(svc).idle) == (1, 1, None)
    svc = parse_service("lb:80,backend=10.0.0.5:80,rise=3,fall=2,idle=30")
    assert lb_options(svc) == LbOptions((IpAddress("10.0.0.5", 80),), rise=3, fall=2, idle=30.0)


@pytest.mark.parametrize("text, message", [
    ("lb:8080", "lb needs backend=BACKEND, as in lb:8080,backend=IP:PORT"),
    ("lb:8080,policy=least-conn", "lb needs backend=BACKEND"),
    ("lb:8080,backend=10.0.0.1", "backend must be IP:PORT with a port 1..65535 and an address, not '10.0.0.1'"),
    ("lb:8080,backend=10.0.0.1:0", "backend must be IP:PORT with a port"),
    ("lb:8080,backend=0.0.0.0:80", "backend must be IP:PORT with a port"),
    ("lb:8080,backend=host.test:80", "backend must be IP:PORT (numeric), not 'host.test:80'"),
    ("lb:8080,backend=10.0.0.1:99999", "backend must be IP:PORT (numeric)"),
    ("lb:8080,backend=10.0.0.1:80,backend=10.0.0.1:80", "backend=10.0.0.1:80 given twice"),
    ("lb:8080,backend=10.0.0.1:80,policy=random", "policy must be round-robin or least-conn, not 'random'"),
    ("lb:8080,backend=10.0.0.1:80,check=0", "check must be a number of seconds in 0.01..3600, not '0'"),
    ("lb:8080,backend=10.0.0.1:80,check=nan", "check must be a number of seconds"),
    ("lb:8080,backend=10.0.0.1:80,timeout=soon", "timeout must be a number of seconds in 0.01..3600, not 'soon'"),
    ("lb:8080,backend=10.0.0.1:80,check=1,check=2", "check= given twice"),
    ("lb:8080,backend=10.0.0.1:80,weight=2", "lb takes backend=, policy=, check=, timeout=, rise=, fall=, idle="),
    ("lb:8080,backend=10.0.0.1:80,rise=0", "rise must be a number of checks in 1..100, not '0'"),
    ("lb:8080,backend=10.0.0.1:80,fall=101", "fall must be a number of checks in 1..100, not '101'"),
    ("lb:8080,backend=10.0.0.1:80,fall=-1", "fall must be a number of checks in 1..100, not '-1'"),
    ("lb:8080,backend=10.0.0.1:80,rise=2.5", "rise must be a number of checks in 1..100, not '2.5'"),
    ("lb:8080,backend=10.0.0.1:80,rise=", "rise must be a number of checks in 1..100, not ''"),
    ("lb:8080,backend=10.0.0.1:80,idle=0", "idle must be a number of seconds in 0.01..3600, not '0'"),
    ("lb:8080,backend=10.0.0.1:80,idle=never", "idle must be a number of seconds in 0.01..3600, not 'never'"),
    ("lb:8080,backend=10.0.0.1:80,idle=inf", "idle must be a number of seconds"),
    ("lb:8080,backend=10.0.0.1:80,idle=1,idle=2", "idle= given twice"),
])
def test_bad_options_are_one_clear_error(text, message):
    with pytest.raises(ServiceSpecError, match="^bad --serve ") as info:
        parse_service(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_mnet_stack_says_a_bad_lb_option_in_one_line():
    from support.cli import assert_one_line_error, mnet

    r = mnet("stack", "--nic", "vhost-user:/nonexistent.sock", "--ip", "10.0.0.9/24",
             "--serve", "lb:8080,backend=10.0.0.254:8001,policy=fastest")
    assert_one_line_error(r, "stack", "bad --serve lb:8080: policy must be round-robin or least-conn, not 'fastest'")


def test_lb_is_an_application_that_starts_through_its_starter():
    from mnet.apps.loadbalancer import service
    from mnet.services import applications

    assert applications.starter("lb") is service.start
