"""The polling policy: a pure state machine, driven with a made-up clock."""
import pytest

from nicdev.net.polling import DEFAULT_POLL, POLL_BUSY, POLL_OFF, PollMode, PollPolicy

BUDGET = 0.001


def test_off_never_polls():
    policy = PollPolicy(POLL_OFF)
    assert not policy.start_with_ring()
    assert not policy.traffic(0.0)
    assert not policy.after_poll(0.0, True)
    assert not policy.polling


def test_adaptive_polls_after_traffic_until_idle_for_the_budget():
    policy = PollPolicy(PollMode.adaptive(BUDGET))
    assert not policy.start_with_ring()         # no poll before any traffic
    assert policy.traffic(10.0)                 # starts a poll
    assert policy.polling
    assert not policy.traffic(10.0002)          # already polling: extends it, no new start
    assert policy.after_poll(10.0005, False)    # idle 0.3 ms of 1
    assert policy.after_poll(10.0011, False)    # idle 0.9 ms since the traffic at 10.0002
    assert not policy.after_poll(10.0012, False)    # idle for the budget: sleep
    assert not policy.polling


def test_adaptive_work_found_by_a_poll_extends_it():
    policy = PollPolicy(PollMode.adaptive(BUDGET))
    policy.traffic(0.0)
    now = 0.0
    for _ in range(50):                         # 50 ms of work, a poll every 0.9 ms
        now += 0.0009
        assert policy.after_poll(now, True)
    assert policy.after_poll(now + 0.0009, False)
    assert not policy.after_poll(now + 0.0010, False)


def test_adaptive_starts_again_after_sleeping():
    policy = PollPolicy(PollMode.adaptive(BUDGET))
    policy.traffic(0.0)
    assert not policy.after_poll(1.0, False)
    assert not policy.after_poll(1.1, True)     # not polling: nothing to say
    assert policy.traffic(2.0)
    assert policy.after_poll(2.0005, False)


def test_busy_polls_from_the_start_and_never_sleeps():
    policy = PollPolicy(POLL_BUSY)
    assert policy.start_with_ring()
    assert not policy.start_with_ring()         # once
    assert not policy.traffic(0.0)              # already polling
    for now in (1.0, 100.0, 1e6):
        assert policy.after_poll(now, False)
    policy.stop()
    assert not policy.polling and not policy.after_poll(1e6, True)
    assert policy.start_with_ring()             # the rings started again


def test_stop_ends_an_adaptive_poll():
    policy = PollPolicy(PollMode.adaptive(BUDGET))
    policy.traffic(0.0)
    policy.stop()
    assert not policy.polling
    assert policy.traffic(0.0001)


@pytest.mark.parametrize("kind, budget, reason", [
    ("sometimes", 0.0, "poll mode must be off, adaptive or busy, not 'sometimes'"),
    ("adaptive", 0.0, "adaptive poll budget must be more than 0"),
    ("adaptive", 2.0, "at most 1 s"),
    ("busy", 0.001, "poll=busy takes no budget"),
    ("off", 0.001, "poll=off takes no budget"),
])
def test_bad_modes_are_refused(kind, budget, reason):
    with pytest.raises(ValueError, match=reason):
        PollMode(kind, budget)


def test_modes_print_as_the_port_spec_writes_them():
    assert [str(m) for m in (POLL_OFF, POLL_BUSY, PollMode.adaptive(50e-6), PollMode.adaptive(0.002))] == \
        ["off", "busy", "adaptive:50us", "adaptive:2ms"]
    assert DEFAULT_POLL.polls and not POLL_OFF.polls
