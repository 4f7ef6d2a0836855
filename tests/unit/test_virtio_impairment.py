"""nicdev.virtio.impairment: the one impairment model, sans-IO (frames and `now`
in, frames with their due time out), checked without ports, NICs or clocks."""
from __future__ import annotations

import random

import pytest

from nicdev.virtio.impairment import REORDER_HOLD, ImpairCounters, Impairment, LinkImpairer


def frame(i: int, size: int = 60) -> bytes:
    return bytes.fromhex("020000000002" "020000000001" "0800") + i.to_bytes(4, "big") + bytes(size - 18)


def index(f: bytes) -> int:
    return int.from_bytes(f[14:18], "big")


def push_all(model, frames, now=0.0):
    out = []
    for i, f in enumerate(frames):
        out += model.push(f, now, i)
    return out


# -- decisions ----------------------------------------------------------------------------------

def test_loss_follows_the_generator_one_draw_per_frame():
    model = LinkImpairer(Impairment(loss=0.2, seed=4))
    out = push_all(model, [frame(i) for i in range(500)])
    rng = random.Random(4)
    assert [tag for _, _, tag in out] == [i for i in range(500) if rng.random() >= 0.2]
    assert model.counters.impaired_dropped == 500 - len(out)
    assert all(due == 0.0 for due, _, _ in out)


def test_the_caller_may_bring_its_generator():
    rng = random.Random(9)
    model = LinkImpairer(Impairment(loss=0.5, seed=1), rng)
    push_all(model, [frame(i) for i in range(10)])
    assert model.rng is rng and rng.getstate() != random.Random(9).getstate()


def test_rules_decide_without_drawing():
    rules = Impairment(loss=lambda f: index(f) == 1, duplicate=lambda f: index(f) == 2,
                       corrupt=lambda f: False, reorder=lambda f: index(f) == 3, seed=5)
    model = LinkImpairer(rules)
    state = model.rng.getstate()
    out = push_all(model, [frame(i) for i in range(6)])
    assert [index(f) for _, f, _ in out] == [0, 2, 2, 4, 3, 5]
    assert model.rng.getstate() == state, "a rule is no random decision"
    c = model.counters
    assert (c.impaired_dropped, c.duplicated, c.reordered) == (1, 1, 1)


def test_same_seed_same_output():
    imp = Impairment(loss=0.1, duplicate=0.1, corrupt=0.1, reorder=0.1, delay=0.01, jitter=0.005, seed=3)
    runs = [push_all(LinkImpairer(imp), [frame(i) for i in range(300)]) for _ in range(2)]
    assert runs[0] == runs[1]


def test_duplicate_copies_carry_the_tag():
    model = LinkImpairer(Impairment(duplicate=1.0))
    assert model.push(frame(7), 1.5, "meta") == [(1.5, frame(7), "meta"), (1.5, frame(7), "meta")]
    assert model.counters.duplicated == 1


def test_corrupt_flips_one_bit_at_or_after_corrupt_from():
    model = LinkImpairer(Impairment(corrupt=1.0, seed=8), corrupt_from=14)
    positions = set()
    for i in range(200):
        original = frame(i, 100)
        (_, sent, _), = model.push(original, 0.0)
        diff = [(k, a ^ b) for k, (a, b) in enumerate(zip(original, sent)) if a != b]
        assert len(diff) == 1 and diff[0][0] >= 14 and bin(diff[0][1]).count("1") == 1
        positions.add(diff[0][0])
    assert min(positions) >= 14 and len(positions) > 50
    anywhere = LinkImpairer(Impairment(corrupt=1.0, seed=8))
    assert any(anywhere.push(frame(i, 20), 0.0)[0][1][:14] != frame(i, 20)[:14] for i in range(50))


# -- reordering -----------------------------------------------------------------------------------

def test_a_held_frame_leaves_right_after_the_next():
    model = LinkImpairer(Impairment(reorder=1.0))
    assert model.push(frame(0), 0.0) == [] and model.hold_expires == REORDER_HOLD
    assert [index(f) for _, f, _ in model.push(frame(1), 0.001)] == [1, 0]
    assert model.hold_expires is None and model.counters.reordered == 1


def test_a_held_frame_without_successor_leaves_when_its_hold_is_over():
    model = LinkImpairer(Impairment(reorder=1.0, reorder_hold=0.004, delay=0.01))
    model.push(frame(0), 1.0, "t")
    assert model.expire(1.003) == []
    assert model.expire(1.004) == [(pytest.approx(1.014), frame(0), "t")]
    assert model.expire(2.0) == [] and model.hold_expires is None


# -- delay, rate, limits -----------------------------------------------------------------------------

def test_delay_with_jitter_keeps_the_order_and_the_bounds():
    model = LinkImpairer(Impairment(delay=0.01, jitter=0.005, seed=2))
    dues = []
    for i in range(300):
        now = i * 0.0007
        (due, _, tag), = model.push(frame(i), now, i)
        assert tag == i and due >= now
        dues.append((due, now))
    assert [d for d, _ in dues] == sorted(d for d, _ in dues)
    assert all(0.005 - 1e-9 <= d - n for d, n in dues) and max(d - n for d, n in dues) <= 0.015 + 1e-9
    assert model.counters.delayed == 300


def test_at_most_limit_frames_are_on_their_way():
    model = LinkImpairer(Impairment(delay=0.1, limit=10))
    assert len(push_all(model, [frame(i) for i in range(15)])) == 10
    assert (model.counters.delayed, model.counters.delay_overflow) == (10, 5)
    assert len(model.push(frame(99), 0.2)) == 1, "the first ten arrived by then"


def test_a_rated_link_spaces_frames_and_drops_past_its_queue():
    model = LinkImpairer(Impairment(rate=1000.0, queue_bytes=250, delay=0.01))
    out = push_all(model, [frame(i, 100) for i in range(4)])
    assert [due for due, _, _ in out] == pytest.approx([0.11, 0.21])
    assert model.counters.queue_overflow == 2
    (due, _, _), = model.push(frame(9, 100), 0.15)      # the first has departed: room again
    assert due == pytest.approx(0.31)


def test_switching_the_delay_off_keeps_frames_behind_those_on_their_way():
    model = LinkImpairer(Impairment(delay=0.05))
    model.push(frame(0), 0.0)
    model.configure(Impairment())
    assert model.push(frame(1), 0.01) == [(0.05, frame(1), None)]
    assert model.push(frame(2), 0.06) == [(0.06, frame(2), None)]


def test_clear_forgets_what_waits():
    model = LinkImpairer(Impairment(reorder=1.0, delay=1.0))
    model.push(frame(0), 0.0)
    model.push(frame(1), 0.0)
    model.push(frame(2), 0.0)
    assert model.waiting == 3
    model.clear()
    assert model.waiting == 0 and model.hold_expires is None
    assert model.push(frame(3), 0.0) == [] and model.hold_expires == pytest.approx(REORDER_HOLD)


# -- the description -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"rate": 0}, {"rate": -5.0}, {"rate": True}, {"queue_bytes": 0}, {"reorder_hold": -0.1}, {"loss": "rule"},
])
def test_bad_link_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        Impairment(**kwargs)


def test_description_names_rules_rates_and_holds():
    assert str(Impairment(loss=lambda f: True, reorder=0.1, reorder_hold=0.004, rate=1e6, delay=0.002)) == \
        "loss by rule, reorder 10%, hold 4ms, rate 1e+06B/s, delay 2ms"
    assert Impairment(rate=1e6).delays
    assert ImpairCounters().as_dict()["queue_overflow"] == 0
