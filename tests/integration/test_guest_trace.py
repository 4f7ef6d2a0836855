"""A Linux guest's rings, traced: two guests on vhost-user ports of a switch
whose ports write every ring event to a trace file from before the guests
boot. A ping and a 10 MB transfer later, the trace's chains, used entries,
calls and bytes add up to the ports' and devices' counters."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from support.guestlab import nc_transfer, ping

pytestmark = pytest.mark.integration

GUESTS = {"vm-a": "10.0.0.1/24", "vm-b": "10.0.0.2/24"}
HDR_LEN = 12            # VERSION_1: the guest's virtio-net header


class TracedLab:
    def __init__(self, image, tmp: Path) -> None:
        from nicdev.net.background import BackgroundSwitch
        from nicdev.net.vhost_user_port import VhostUserPort
        from nicdev.virtio.trace import JsonLinesWriter

        self.image, self.tmp = image, tmp
        self.trace_path = str(tmp / "trace.jsonl")
        self.writer = JsonLinesWriter(self.trace_path)
        self.bg = BackgroundSwitch()
        self.bg.call(lambda: self.bg.switch.add_trace_sink(self.writer))
        self.ports = {}
        for name in GUESTS:
            self.ports[name] = VhostUserPort(name, str(tmp / f"{name}.sock"))
            self.bg.add_port(self.ports[name])
        self.vms = {}

    def boot(self, timeout: float = 240.0) -> None:
        from qemu.cmdline import NicConfig
        from qemu.vm import VirtualMachine

        for name, ip in GUESTS.items():
            self.vms[name] = VirtualMachine(name, self.image, nic=NicConfig("vhost-user", str(self.tmp / f"{name}.sock")),
                                            ip=ip, workdir=self.tmp / f"work-{name}",
                                            progress=lambda line: print(line, flush=True))
            self.vms[name].start()
        for vm in self.vms.values():
            vm.wait_ready(timeout)

    def stop_tracing(self) -> dict:
        """Stop recording and read every counter at the same moment, on the switch's thread."""
        def stop():
            self.bg.switch.remove_trace_sink(self.writer)
            return {name: {"port": port.counters.as_dict(), "device": port.device.counters.as_dict()}
                    for name, port in self.ports.items()}
        counters = self.bg.call(stop)
        self.writer.close()
        return counters

    def close(self) -> None:
        for vm in self.vms.values():
            vm.stop()
        self.bg.close()
        self.writer.close()


@pytest.fixture(scope="module")
def lab(guest_image, tmp_path_factory):
    lab = TracedLab(guest_image, tmp_path_factory.mktemp("trace"))
    try:
        lab.boot()
        yield lab
    finally:
        lab.close()


def test_ping_and_10mb_traced_add_up_to_the_counters(lab):
    from nicdev.virtio.trace import read_trace

    a, b = lab.vms["vm-a"], lab.vms["vm-b"]
    got, out = ping(a, "10.0.0.2")
    assert got == 3, out
    sent, received = nc_transfer(a, b, "10.0.0.2", 5101, size_mb=10)
    assert sent == received
    counters = lab.stop_tracing()
    records = list(read_trace(lab.trace_path))
    assert records[0]["kind"] == "header"
    for name in GUESTS:
        mine = [r for r in records[1:] if r["port"] == name]
        port, device = counters[name]["port"], counters[name]["device"]
        kinds = Counter((r["kind"], r["dir"]) for r in mine)
        assert kinds[("vhost_msg", "rx")] and kinds[("features", None)] >= 2, kinds
        # From the guest (its transmit queue): every chain is a frame into the switch or a device drop.
        tx_chains = [r for r in mine if r["kind"] == "chain" and r["dir"] == "tx"]
        tx_drops = [r for r in mine if r["kind"] == "drop" and r["dir"] == "tx"]
        assert len(tx_chains) == port["rx_frames"] + len(tx_drops) == device["tx_frames"] + len(tx_drops), name
        assert sum(c["bytes"] - HDR_LEN for c in tx_chains) == port["rx_bytes"] + sum(d["len"] for d in tx_drops)
        tx_used = [r for r in mine if r["kind"] == "used" and r["dir"] == "tx"]
        assert sorted(u["id"] for u in tx_used) == sorted(c["head"] for c in tx_chains)
        # To the guest (its receive queue): the used lengths are the header and the frame bytes.
        rx_used = [r for r in mine if r["kind"] == "used" and r["dir"] == "rx"]
        assert sum(u["len"] for u in rx_used) == port["tx_bytes"] + HDR_LEN * port["tx_frames"], name
        assert port["tx_bytes"] == device["rx_bytes"]
        calls = sum(1 for r in mine if r["kind"] == "call")
        assert calls == device["calls"], (calls, device["calls"])
        assert kinds[("kick", "tx")] == device["tx_kicks"] and kinds[("kick", "rx")] == device["rx_kicks"]
        assert sum(1 for r in mine if r["kind"] == "drop" and r["dir"] == "rx") == sum(
            n for reason, n in device["drops"].items() if not reason.startswith("tx_"))
    # The 10 MB went from a's transmit queue to b's receive queue.
    a_out = sum(r["bytes"] - HDR_LEN for r in records[1:] if r["port"] == "vm-a" and r["kind"] == "chain"
                and r["dir"] == "tx")
    b_in = sum(r["len"] for r in records[1:] if r["port"] == "vm-b" and r["kind"] == "used" and r["dir"] == "rx")
    assert a_out > 10 * 2**20 and b_in > 10 * 2**20, (a_out, b_in)
