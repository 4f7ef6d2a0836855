"""`mnet trace show|summary|plot` and the trace assertions on real traces:
the stack's virtio driver on two ports of `mnet switch --trace` (processes,
as a user runs them, the stack tracing its own side too) and two guests
moving 10 MB through the plugin's fixtures. The documented driver test (a
Linux guest pinging a stack) is test_doc_driver_test.py."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from mnet.cli.stack_common import STACK_QUEUE_SIZE
from mnet.pytest_plugin import TraceAssertions
from support.cli import MnetProcess, mnet, start_mnet_stack

pytestmark = pytest.mark.integration

SVG = "{http://www.w3.org/2000/svg}"


def summary_rows(path: str) -> dict[tuple, dict]:
    r = mnet("trace", "summary", path, "--json")
    assert r.returncode == 0, r.stderr
    return {(q["port"], q["queue"]): q for q in json.loads(r.stdout)["queues"]}


def svg_text(path) -> str:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def test_stack_ping_through_a_traced_switch(tmp_path):
    trace, driver_trace = str(tmp_path / "run.trace"), str(tmp_path / "stack.trace")
    a, b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    switch = MnetProcess("switch", "--trace", trace, f"--port=a=vhost-user:{a}", f"--port=b=vhost-user:{b}")
    stack = None
    try:
        switch.expect("switch running")
        stack, output = start_mnet_stack("--nic", f"vhost-user:{a}", "--ip", "10.0.0.9/24", "--serve", "udp-echo:7",
                                         "--trace", driver_trace)
        output.until(r"^stack up: ")
        ping = mnet("ping", "--nic", f"vhost-user:{b}", "--ip", "10.0.0.8/24", "-c", "3", "-i", "0.2", "10.0.0.9")
        assert ping.returncode == 0 and "3 received" in ping.stdout, ping.stdout + ping.stderr
    finally:
        if stack is not None:
            stack.terminate()
            stack.wait(10)
        status, out, err = switch.interrupt()
    assert status == 0 and "records in" in out, out + err
    assert stack.returncode == 0, output.finish()
    output.close()

    rows = summary_rows(trace)
    # Everything one port's driver sent went to the other port's guest or was dropped there.
    b_rx_drops = sum(rows["b", 0]["drops"].values())
    assert rows["a", 1]["chains"] == rows["b", 0]["used"] + b_rx_drops
    assert rows["b", 1]["chains"] == rows["a", 0]["used"]
    assert rows["b", 1]["bytes"] == rows["a", 0]["bytes"] > 3 * (14 + 20 + 8 + 56)
    assert rows["b", 1]["chains"] >= 4                  # an ARP request and three echo requests

    check = TraceAssertions.from_file(trace)
    check.assert_rx_buffers_posted("a", at_least=256)   # the stack fills its receive ring
    check.assert_longest_chain("a", at_most=2)
    assert check.calls("a") + check.calls_suppressed("a") >= rows["a", 0]["chains"] > 0

    # The stack's own trace of port a's rings (the driver side) tells the same story.
    driver = {(q["dir"]): q for q in json.loads(mnet("trace", "summary", driver_trace, "--json").stdout)["queues"]}
    assert {q["side"] for q in driver.values()} == {"driver"}
    assert driver["tx"]["chains"] == rows["a", 1]["chains"] and driver["tx"]["bytes"] == rows["a", 1]["bytes"]
    assert driver["rx"]["used"] == rows["a", 0]["used"] and driver["rx"]["bytes"] == rows["a", 0]["bytes"]
    assert driver["rx"]["occupancy_max"] == STACK_QUEUE_SIZE  # the stack keeps its receive ring full
    driver_port = driver["rx"]["port"]
    TraceAssertions.from_file(driver_trace).assert_rx_buffers_posted(driver_port, at_least=STACK_QUEUE_SIZE)

    shown = mnet("trace", "show", trace, "--port", "b", "--kind", "chain")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == rows["b", 0]["chains"] + rows["b", 1]["chains"]
    table = mnet("trace", "summary", trace)
    assert table.returncode == 0 and table.stdout.splitlines()[1].startswith("port"), table.stdout + table.stderr
    plot = mnet("trace", "plot", trace, "-o", str(tmp_path / "run.svg"))
    assert plot.returncode == 0, plot.stderr
    labels = svg_text(tmp_path / "run.svg")
    assert "a q0 rx" in labels and "b q1 tx" in labels


def test_summary_of_two_guests_moving_10mb_matches_the_counters(mnet_switch, mnet_vm, mnet_trace, tmp_path):
    """The issue's check through the viewer: a ping and 10 MB between two
    Linux guests, and `mnet trace summary` adds up to the port and device
    counters read at the moment recording stopped; `plot` draws it."""
    from support.guestlab import nc_transfer, ping

    ports = {name: mnet_switch.vhost_user_port(name) for name in ("vm-a", "vm-b")}
    a = mnet_vm("vm-a", ip="10.0.0.1/24", port=ports["vm-a"])
    b = mnet_vm("vm-b", ip="10.0.0.2/24", port=ports["vm-b"])
    got, out = ping(a, "10.0.0.2")
    assert got == 3, out
    sent, received = nc_transfer(a, b, "10.0.0.2", 5102, size_mb=10)
    assert sent == received
    counters = mnet_trace.stop(snapshot=lambda: {
        name: (port.counters.as_dict(), port.device.counters.as_dict()) for name, port in ports.items()})

    rows = summary_rows(mnet_trace.path)
    header = 12                             # the guest's virtio-net header (VERSION_1)
    for name, (port, device) in counters.items():
        tx, rx = rows[name, 1], rows[name, 0]
        assert tx["dir"] == "tx" and rx["dir"] == "rx"
        assert not tx["drops"], tx["drops"]
        assert tx["chains"] == port["rx_frames"], (name, tx, port)
        assert tx["bytes"] - header * tx["chains"] == port["rx_bytes"], (name, tx, port)
        assert rx["bytes"] == port["tx_bytes"] + header * port["tx_frames"], (name, rx, port)
        assert tx["calls"] + rx["calls"] == device["calls"], (name, device)
        assert (tx["kicks"], rx["kicks"]) == (device["tx_kicks"], device["rx_kicks"]), (name, device)
    assert rows["vm-a", 1]["bytes"] > 10 * 2**20 and rows["vm-b", 0]["bytes"] > 10 * 2**20

    table = mnet("trace", "summary", mnet_trace.path)
    assert table.returncode == 0, table.stderr
    print(table.stdout)
    plot = mnet("trace", "plot", mnet_trace.path, "-o", str(tmp_path / "10mb.svg"))
    assert plot.returncode == 0, plot.stderr
    labels = svg_text(tmp_path / "10mb.svg")
    assert "vm-a q1 tx" in labels and "vm-b q0 rx" in labels
