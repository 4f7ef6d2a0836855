"""The control protocol's handler (sans-IO): every op, every bad request shape, garbage."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from nicdev.net.control import MAX_REQUEST, OPS, TRACE_READ_MAX, ControlHandler
from nicdev.net.impair import ImpairedPort
from nicdev.net.loop import EventLoop
from nicdev.net.switch import Switch
from nicdev.virtio.trace import TraceBuffer

from support.switch_ports import BCAST, A, B, FakePort, frame


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


@pytest.fixture
def switch(loop):
    sw = Switch(loop)
    sw.add_port(FakePort("p1"))
    sw.add_port(FakePort("p2"))
    yield sw
    sw.close()


def ask(handler: ControlHandler, request) -> dict:
    line = request if isinstance(request, bytes) else json.dumps(request).encode()
    reply = handler.handle(line)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
    return json.loads(reply)


def ok(handler, request) -> dict:
    reply = ask(handler, request)
    assert reply.pop("ok") is True, reply
    return reply


def error(handler, request) -> str:
    reply = ask(handler, request)
    assert reply["ok"] is False and set(reply) == {"ok", "error"}, reply
    assert "\n" not in reply["error"]
    return reply["error"]


def test_ports_lists_names_kinds_status_and_link(switch):
    rows = ok(ControlHandler(switch), {"op": "ports"})["ports"]
    assert [(r["name"], r["kind"], r["link"], r["impairment"]) for r in rows] == [
        ("p1", "fake", True, None), ("p2", "fake", True, None)]
    assert rows[0]["status"] == "up"


def test_counters_are_the_switch_stats(switch):
    switch.ports["p1"].deliver(frame(BCAST, A))
    reply = ok(ControlHandler(switch), {"op": "counters"})
    assert reply["switch"]["flooded"] == 1
    assert reply["ports"]["p1"]["rx_frames"] == 1 and reply["ports"]["p2"]["tx_frames"] == 1


def test_impair_wraps_a_running_port_and_the_frames_meet_it(switch):
    handler = ControlHandler(switch)
    switch.ports["p2"].deliver(frame(BCAST, B))              # B learned on p2
    reply = ok(handler, {"op": "impair", "port": "p2", "spec": "loss=100%,impair=out"})
    assert reply["impairment"]["out"]["impairment"] == "loss 100%"
    assert reply["impairment"]["in"]["impairment"] is None
    port = switch.ports["p2"]
    assert isinstance(port, ImpairedPort)
    before = len(port.inner.sent)
    switch.ports["p1"].deliver(frame(B, A))                  # still forwarded to p2 (MAC kept)...
    assert switch.counters.forwarded == 1
    assert len(port.inner.sent) == before                    # ...and lost on the way out
    assert port.impair_counters["out"].impaired_dropped == 1
    counters = ok(handler, {"op": "counters"})
    assert counters["ports"]["p2"]["impairment"]["out"]["impaired_dropped"] == 1
    rows = {r["name"]: r for r in ok(handler, {"op": "ports"})["ports"]}
    assert rows["p2"]["impairment"]["out"]["impairment"] == "loss 100%"


def test_impair_clear_and_change(switch):
    handler = ControlHandler(switch)
    ok(handler, {"op": "impair", "port": "p1", "spec": "delay=10ms"})
    reply = ok(handler, {"op": "impair", "port": "p1", "spec": "loss=5%,seed=3"})
    assert reply["impairment"]["in"]["impairment"] == "loss 5%, seed 3"
    reply = ok(handler, {"op": "impair", "port": "p1", "spec": None})
    assert reply["impairment"]["out"]["impairment"] is None and reply["impairment"]["in"]["impairment"] is None
    switch.ports["p1"].deliver(frame(BCAST, A))
    assert switch.ports["p2"].sent == [frame(BCAST, A)]       # unimpaired again
    # Clearing a port that never was impaired changes nothing.
    assert ok(handler, {"op": "impair", "port": "p2", "spec": None})["impairment"] is None
    assert not isinstance(switch.ports["p2"], ImpairedPort)


@pytest.mark.parametrize("spec, fragment", [
    ("loss=150%", "more than 100%"), ("lose=5%", "unknown key 'lose'"), ("delay=5", "unit"),
    ("loss", "key=value"), ("seed=1", "need an impairment"), ("loss=1%,loss=2%", "twice"),
])
def test_impair_bad_spec_is_an_error_and_changes_nothing(switch, spec, fragment):
    handler = ControlHandler(switch)
    assert fragment in error(handler, {"op": "impair", "port": "p1", "spec": spec})
    assert not isinstance(switch.ports["p1"], ImpairedPort)


def test_link_down_stops_forwarding_both_ways_and_counts(switch):
    handler = ControlHandler(switch)
    p1, p2 = switch.ports["p1"], switch.ports["p2"]
    assert ok(handler, {"op": "link", "port": "p2", "up": False}) == {"port": "p2", "link": False, "qmp": None}
    p1.deliver(frame(BCAST, A))
    p2.deliver(frame(BCAST, B))
    assert p2.sent == [] and p1.sent == []
    assert p2.counters.tx_dropped == 1 and p2.counters.rx_dropped == 1 and p2.counters.errors == {"link down": 2}
    assert [r["link"] for r in ok(handler, {"op": "ports"})["ports"]] == [True, False]
    ok(handler, {"op": "link", "port": "p2", "up": True})
    p1.deliver(frame(BCAST, A))
    assert p2.sent == [frame(BCAST, A)]


def test_link_down_on_an_impaired_port_reaches_the_inner_port(switch):
    handler = ControlHandler(switch)
    ok(handler, {"op": "impair", "port": "p2", "spec": "delay=1ms"})
    ok(handler, {"op": "link", "port": "p2", "up": False})
    assert switch.ports["p2"].inner.link_up is False


def test_link_tells_the_peer_through_the_notifier(switch):
    told = []
    switch.ports["p1"].link_notifier = told.append
    ok(ControlHandler(switch), {"op": "link", "port": "p1", "up": False})
    ok(ControlHandler(switch), {"op": "link", "port": "p1", "up": True})
    assert told == [False, True]


class TracingSwitch(Switch):
    """What the tracing part adds to the switch, for the trace ops' tests."""

    def __init__(self, loop):
        super().__init__(loop)
        self.trace_buffer = TraceBuffer(capacity=10)
        self.tracing = []

    def set_tracing(self, port, on):
        self.tracing.append((port, on))


def test_trace_and_trace_read(loop):
    sw = TracingSwitch(loop)
    sw.add_port(FakePort("p1"))
    handler = ControlHandler(sw)
    assert ok(handler, {"op": "trace", "port": "p1", "on": True}) == {"port": "p1", "on": True}
    ok(handler, {"op": "trace", "port": None, "on": False})
    assert sw.tracing == [("p1", True), (None, False)]
    for i in range(15):
        sw.trace_buffer({"kind": "kick", "n": i})
    reply = ok(handler, {"op": "trace_read", "since": 0})
    assert reply["lost"] == 5 and reply["next"] == 15 and [r["n"] for r in reply["records"]] == list(range(5, 15))
    reply = ok(handler, {"op": "trace_read", "since": 7, "max": 3})
    assert [r["n"] for r in reply["records"]] == [7, 8, 9] and reply["next"] == 10 and reply["lost"] == 0
    assert ok(handler, {"op": "trace_read", "since": 15})["records"] == []
    assert "no port named 'zz'" in error(handler, {"op": "trace", "port": "zz", "on": True})
    sw.close()


def test_fault_calls_set_fault_or_says_the_port_cannot(switch):
    handler = ControlHandler(switch)
    modes = []
    switch.ports["p1"].set_fault = modes.append
    assert ok(handler, {"op": "fault", "port": "p1", "mode": "stall-tx"}) == {"port": "p1", "mode": "stall-tx"}
    ok(handler, {"op": "fault", "port": "p1", "mode": None})
    assert modes == ["stall-tx", None]

    def refuse(mode):
        raise ValueError(f"unknown fault mode {mode!r}")
    switch.ports["p1"].set_fault = refuse
    assert "unknown fault mode 'nope'" in error(handler, {"op": "fault", "port": "p1", "mode": "nope"})
    assert not hasattr(switch.ports["p2"], "set_fault")       # a port with no device to misbehave
    assert "not supported by port 'p2'" in error(handler, {"op": "fault", "port": "p2", "mode": "stall-tx"})


def test_fault_sets_and_clears_a_real_vhost_user_ports_device_mode(switch, tmp_path):
    from nicdev.net.vhost_user_port import VhostUserPort

    port = switch.add_port(VhostUserPort("vm", str(tmp_path / "vm.sock")))
    handler = ControlHandler(switch)
    assert ok(handler, {"op": "fault", "port": "vm", "mode": "delay-used=20ms+reorder-used"}) == {
        "port": "vm", "mode": port.fault}
    assert port.fault is not None and "reorder-used" in port.fault
    row = [r for r in ok(handler, {"op": "ports"})["ports"] if r["name"] == "vm"][0]
    assert row["fault"] == port.fault
    assert "unknown fault mode" in error(handler, {"op": "fault", "port": "vm", "mode": "stall"})
    assert "reorder-used" in port.fault                       # a refused mode changes nothing
    assert ok(handler, {"op": "fault", "port": "vm", "mode": None}) == {"port": "vm", "mode": None}
    assert port.fault is None


@pytest.mark.parametrize("request_line, fragment", [
    (b"", "not JSON"),
    (b"{", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b"\"ports\"", "JSON object"),
    (b"{}", "needs \"op\""),
    (b'{"op": 5}', "needs \"op\""),
    (b'{"op": "reboot"}', "unknown op 'reboot'"),
    (b'{"op": "ports", "extra": 1}', "unknown argument 'extra'"),
    (b'{"op": "link", "port": "p1"}', "link needs 'up'"),
    (b'{"op": "link", "up": true}', "link needs 'port'"),
    (b'{"op": "link", "port": "p1", "up": 1}', "'up' must be true or false"),
    (b'{"op": "link", "port": "p1", "up": "down"}', "'up' must be true or false"),
    (b'{"op": "link", "port": 7, "up": true}', "'port' must be a string"),
    (b'{"op": "link", "port": "nope", "up": true}', "no port named 'nope'; ports: p1, p2"),
    (b'{"op": "impair", "port": "p1"}', "impair needs 'spec'"),
    (b'{"op": "impair", "port": "p1", "spec": 0.5}', "'spec' must be a string or null"),
    (b'{"op": "trace", "port": "p1", "on": null}', "'on' must be true or false"),
    (b'{"op": "trace_read"}', "trace_read needs 'since'"),
    (b'{"op": "trace_read", "since": true}', "'since' must be an integer"),
    (b'{"op": "trace_read", "since": 1.5}', "'since' must be an integer"),
    (b'{"op": "fault", "port": "p1", "mode": ["stall-tx"]}', "'mode' must be a string or null"),
    (b"[" * 100000 + b"]" * 100000, "request longer than"),
    (b"[" * 30000 + b"]" * 30000, "not JSON"),
])
def test_bad_requests_get_an_error_reply(switch, request_line, fragment):
    assert fragment in error(ControlHandler(switch), request_line)


def test_trace_read_bounds(loop):
    sw = TracingSwitch(loop)
    handler = ControlHandler(sw)
    assert "'since' must be 0 or more" in error(handler, {"op": "trace_read", "since": -1})
    assert f"from 1 to {TRACE_READ_MAX}" in error(handler, {"op": "trace_read", "since": 0, "max": 0})
    sw.close()


def test_an_oversized_request_is_refused(switch):
    line = json.dumps({"op": "ports", "pad": "x" * MAX_REQUEST}).encode()
    assert f"longer than {MAX_REQUEST}" in error(ControlHandler(switch), line)


def test_an_op_that_raises_is_an_error_reply_and_the_handler_goes_on(switch, caplog):
    def explode(up):
        raise RuntimeError("the peer\nexploded")
    switch.ports["p1"].link_notifier = explode
    handler = ControlHandler(switch)
    assert error(handler, {"op": "link", "port": "p1", "up": False}) == \
        "internal error: RuntimeError: the peer exploded"
    assert "control request failed" in caplog.text
    assert ok(handler, {"op": "ports"})["ports"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda op, args: json.dumps({"op": op, **args}).encode(),
              st.sampled_from(OPS + ("", "nope")),
              st.dictionaries(st.sampled_from(["port", "up", "on", "spec", "mode", "since", "max", "x"]),
                              json_values, max_size=4)),
))
def test_garbage_always_gets_one_reply_line_and_the_switch_keeps_switching(request_line):
    loop = EventLoop()
    sw = Switch(loop)
    try:
        p1, p2 = sw.add_port(FakePort("p1")), sw.add_port(FakePort("p2"))
        reply = ask(ControlHandler(sw), request_line)
        assert isinstance(reply["ok"], bool)
        if not reply["ok"]:
            assert isinstance(reply["error"], str) and "internal error" not in reply["error"]
        for port in (p1, p2):                   # whatever it did, the links work once set up again
            sw.set_impairments(port.name, None, None)
            port.set_link(True)
        p1.deliver(frame(BCAST, A))
        assert sw.ports["p2"].counters.tx_frames >= 1 or p2.sent
    finally:
        sw.close()
        loop.close()


def test_link_changes_and_link_down_drops_are_traced(switch):
    handler = ControlHandler(switch)
    ok(handler, {"op": "trace", "port": "p2", "on": True})
    ok(handler, {"op": "link", "port": "p2", "up": False})
    switch.ports["p1"].deliver(frame(BCAST, A))              # to p2: not sent
    switch.ports["p2"].deliver(frame(BCAST, B))              # from p2: not taken
    records = ok(handler, {"op": "trace_read", "since": 0})["records"]
    assert [(r["kind"], r.get("up"), r.get("reason"), r["dir"], r.get("stage")) for r in records[1:]] == [
        ("link", False, None, None, None), ("drop", None, "link_down", None, "switch"),
        ("drop", None, "link_down", "rx", "port")]
