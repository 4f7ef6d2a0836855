"""The --port syntax: every kind, every error, and building the Port objects."""
from __future__ import annotations

import sys
import types

import pytest

from nicdev.net.errors import PortError
from nicdev.net.pcap_port import PcapPort
from nicdev.net.port import Port
from nicdev.net.portspec import (KINDS, PORT_SPEC_HELP, PortSpecError, build_port, build_ports, parse_port_spec,
                                 parse_poll, parse_port_specs)
from nicdev.net.socket_port import DgramPort, StreamPort
from nicdev.net.polling import DEFAULT_POLL, PollMode
from nicdev.net.tap_port import TapPort

GENERIC = "expected NAME=KIND:ARG, kinds are vhost-user, tap, stream, dgram, pcap"


@pytest.mark.parametrize("text, kind, params", [
    ("vm0=vhost-user:/tmp/vm0.sock", "vhost-user", {"socket_path": "/tmp/vm0.sock", "offloads": True}),
    ("vm0=vhost-user:/tmp/vm0.sock,offloads=off", "vhost-user", {"socket_path": "/tmp/vm0.sock", "offloads": False}),
    ("vm0=vhost-user:/tmp/vm0.sock,poll=off", "vhost-user",
     {"socket_path": "/tmp/vm0.sock", "offloads": True, "poll": PollMode("off")}),
    ("vm0=vhost-user:/tmp/vm0.sock,poll=busy", "vhost-user",
     {"socket_path": "/tmp/vm0.sock", "offloads": True, "poll": PollMode("busy")}),
    ("vm0=vhost-user:/tmp/vm0.sock,poll=adaptive", "vhost-user",
     {"socket_path": "/tmp/vm0.sock", "offloads": True, "poll": DEFAULT_POLL}),
    ("vm0=vhost-user:/tmp/vm0.sock,poll=adaptive:2ms,offloads=off", "vhost-user",
     {"socket_path": "/tmp/vm0.sock", "offloads": False, "poll": PollMode.adaptive(0.002)}),
    ("vm0=vhost-user:/tmp/vm0.sock,poll=adaptive:50us", "vhost-user",
     {"socket_path": "/tmp/vm0.sock", "offloads": True, "poll": PollMode.adaptive(50e-6)}),
    # The virtio-net header and the kernel's offloads are the default.
    ("host=tap:mnet0", "tap", {"ifname": "mnet0", "netns": None, "vnet_hdr": True}),
    ("host=tap:mnet0,offloads=off", "tap", {"ifname": "mnet0", "netns": None, "vnet_hdr": True, "offloads": False}),
    ("host=tap:mnet0,vnet_hdr=off,offloads=off", "tap",
     {"ifname": "mnet0", "netns": None, "vnet_hdr": False, "offloads": False}),
    ("host=tap:mnet0,netns=lab,vnet_hdr=on", "tap", {"ifname": "mnet0", "netns": "lab", "vnet_hdr": True}),
    ("host=tap:mnet0,vnet_hdr=OFF", "tap", {"ifname": "mnet0", "netns": None, "vnet_hdr": False}),
    ("q=stream:/run/q.sock", "stream", {"path": "/run/q.sock"}),
    ("d=dgram:127.0.0.1:5000,remote=127.0.0.1:5001", "dgram",
     {"local": ("127.0.0.1", 5000), "remote": ("127.0.0.1", 5001)}),
    ("d=dgram:[::1]:5000,remote=[::1]:5001", "dgram", {"local": ("::1", 5000), "remote": ("::1", 5001)}),
    ("d=dgram:./a.sock,remote=/tmp/b.sock", "dgram", {"local": "./a.sock", "remote": "/tmp/b.sock"}),
    ("cap=pcap:out.pcap", "pcap", {"path": "out.pcap"}),
    ("cap=pcap:out.pcap,snaplen=128", "pcap", {"path": "out.pcap", "snaplen": 128}),
    ("cap=pcap:a,,b.pcap", "pcap", {"path": "a,b.pcap"}),          # ',,' is a literal comma
    ("A-1.b_2=stream:/x/y=z:w", "stream", {"path": "/x/y=z:w"}),    # '=' and ':' in a path are fine
])
def test_valid_specs(text, kind, params):
    spec = parse_port_spec(text)
    assert spec.kind == kind and spec.params == params
    assert spec.name == text.split("=", 1)[0] and str(spec) == text


@pytest.mark.parametrize("text, reason", [
    ("", GENERIC),
    ("justaname", GENERIC),
    ("a=tap", GENERIC),
    ("=tap:x", GENERIC),
    ("a=ftp:x", "unknown kind 'ftp'; kinds are vhost-user, tap, stream, dgram, pcap"),
    ("a=:x", "unknown kind ''"),
    ("bad name=tap:x", "bad port name 'bad name'"),
    ("-a=tap:x", "bad port name '-a'"),
    ("x" * 33 + "=tap:x", "at most 32"),
    ("a=vhost-user:", "empty socket path"),
    ("a=stream:", "empty socket path"),
    ("a=pcap:", "empty file name"),
    ("a=tap:", "empty interface name"),
    ("a=stream:/" + "x" * 107, "socket path longer than 107 bytes"),
    ("a=vhost-user:/tmp/x,queues=2", "unknown key 'queues' for vhost-user (keys: offloads, poll, qmp, qmp_device, fault)"),
    ("a=vhost-user:/tmp/x,poll=on", "poll must be off, adaptive[:TIME] or busy, not 'on'"),
    ("a=vhost-user:/tmp/x,poll=busy:1ms", "poll must be off, adaptive[:TIME] or busy, not 'busy:1ms'"),
    ("a=vhost-user:/tmp/x,poll=adaptive:200", "poll budget must be a time with a unit (10ms, 500us, 0.2s), not '200'"),
    ("a=vhost-user:/tmp/x,poll=adaptive:5us", "poll budget must be from 10us to 1s, not '5us'"),
    ("a=vhost-user:/tmp/x,poll=adaptive:2s", "poll budget must be from 10us to 1s, not '2s'"),
    ("a=tap:t0,poll=busy", "unknown key 'poll' for tap"),
    ("a=vhost-user:/tmp/x,offloads=maybe", "offloads must be on or off, not 'maybe'"),
    ("a=tap:t0,nets=lab", "unknown key 'nets' for tap (keys: netns, vnet_hdr, offloads)"),
    ("a=tap:t0,netns", "expected key=value after ',', got 'netns'"),
    ("a=tap:t0,=lab", "expected key=value after ',', got '=lab'"),
    ("a=tap:t0,netns=", "empty value for 'netns'"),
    ("a=tap:t0,netns=a,netns=b", "key 'netns' given twice"),
    ("a=tap:t0,vnet_hdr=maybe", "vnet_hdr must be on or off, not 'maybe'"),
    ("a=tap:t0,offloads=maybe", "offloads must be on or off, not 'maybe'"),
    ("a=tap:t0,vnet_hdr=off,offloads=on", "offloads=on needs vnet_hdr=on"),
    ("a=tap:t0,netns=../etc", "bad network namespace name '../etc'"),
    ("a=tap:averyveryverylongname", "bad interface name"),
    ("a=tap:eth/0", "bad interface name"),
    ("a=dgram:127.0.0.1:5000", "dgram needs remote=HOST:PORT"),
    ("a=dgram:127.0.0.1,remote=127.0.0.1:5001", "local address: expected HOST:PORT"),
    ("a=dgram:localhost:5000,remote=127.0.0.1:5001", "is not an IP address"),
    ("a=dgram:127.0.0.1:99999,remote=127.0.0.1:5001", "bad port '99999'"),
    ("a=dgram:127.0.0.1:5000,remote=/tmp/b.sock", "must both be HOST:PORT or both unix socket paths"),
    ("a=dgram:127.0.0.1:5000,remote=[::1]:5001", "same IP version"),
    ("a=dgram:127.0.0.1:5000,remote=127.0.0.1:5000", "the same address"),
    ("a=dgram:,remote=127.0.0.1:5000", "empty local address"),
    ("a=pcap:x.pcap,snaplen=10", "snaplen must be a number from 14 to 262144, not '10'"),
    ("a=pcap:x.pcap,snaplen=big", "snaplen must be a number"),
])
def test_errors_name_the_spec_and_the_reason(text, reason):
    with pytest.raises(PortSpecError) as info:
        parse_port_spec(text)
    message = str(info.value)
    assert message.startswith(f"bad port spec {text!r}: ")
    assert reason in message
    assert "\n" not in message


def test_duplicate_names_are_refused():
    with pytest.raises(PortSpecError, match=r"duplicate port name 'a' in 'a=stream:/tmp/1' and 'a=pcap:x'"):
        parse_port_specs(["a=stream:/tmp/1", "b=stream:/tmp/2", "a=pcap:x"])


@pytest.mark.parametrize("texts, what", [
    (["a=stream:/tmp/s.sock", "b=vhost-user:/tmp/../tmp/s.sock"], "socket path"),
    (["a=tap:t0,netns=lab", "b=tap:t0,netns=lab"], "interface"),
    (["a=dgram:127.0.0.1:5000,remote=127.0.0.1:1", "b=dgram:127.0.0.1:5000,remote=127.0.0.1:2"], "local address"),
    (["a=pcap:x.pcap", "b=pcap:./x.pcap"], "capture file"),
])
def test_two_ports_on_one_resource_are_refused(texts, what):
    with pytest.raises(PortSpecError, match=f"ports 'a' and 'b' use the same {what}"):
        parse_port_specs(texts)


def test_same_interface_name_in_different_namespaces_is_fine():
    specs = parse_port_specs(["a=tap:t0,netns=one", "b=tap:t0,netns=two", "c=tap:t0"])
    assert [s.name for s in specs] == ["a", "b", "c"]


def test_build_each_kind(tmp_path):
    ports = build_ports(parse_port_specs([
        f"s=stream:{tmp_path}/s.sock",
        "d=dgram:127.0.0.1:5000,remote=127.0.0.1:5001",
        f"c=pcap:{tmp_path}/c.pcap,snaplen=96",
        "t=tap:mnet0,vnet_hdr=on",
    ]))
    s, d, c, t = ports
    assert isinstance(s, StreamPort) and s.name == "s" and s.path == f"{tmp_path}/s.sock"
    assert isinstance(d, DgramPort) and d.local == ("127.0.0.1", 5000) and d.remote == ("127.0.0.1", 5001)
    assert isinstance(c, PcapPort) and c.snaplen == 96 and c.captures_all
    assert isinstance(t, TapPort) and t.ifname == "mnet0" and t.vnet_hdr and t.netns is None
    assert all(p.status.endswith("not started") for p in ports)


def test_a_plain_tap_spec_builds_a_port_with_header_and_offloads():
    default, no_offloads, plain = build_ports(parse_port_specs(
        ["a=tap:mnet0", "b=tap:mnet1,offloads=off", "c=tap:mnet2,vnet_hdr=off"]))
    assert default.vnet_hdr and default.offloads and default.accepts_gso and default.accepts_csum_partial
    assert no_offloads.vnet_hdr and not no_offloads.offloads
    assert not plain.vnet_hdr and not plain.offloads and not plain.accepts_gso


def test_build_vhost_user_imports_its_module_only_then(monkeypatch):
    made = []

    class FakeVhostUserPort(Port):
        kind = "vhost-user"

        def __init__(self, name, socket_path=None, offloads=True):
            super().__init__(name)
            self.socket_path = socket_path
            made.append(self)

        def start(self, loop):
            pass

        def transmit(self, frame, meta=None):
            return True

    fake = types.ModuleType("nicdev.net.vhost_user_port")
    fake.VhostUserPort = FakeVhostUserPort
    monkeypatch.setitem(sys.modules, "nicdev.net.vhost_user_port", fake)
    port = build_port(parse_port_spec("vm0=vhost-user:/tmp/vm0.sock"))
    assert made == [port] and port.name == "vm0" and port.socket_path == "/tmp/vm0.sock"


def test_vhost_user_poll_key_reaches_the_device(tmp_path):
    port = build_port(parse_port_spec(f"vm0=vhost-user:{tmp_path}/vm0.sock,poll=adaptive:1ms"))
    try:
        assert port.device.poller.mode == PollMode.adaptive(0.001)
    finally:
        port.close()
    port = build_port(parse_port_spec(f"vm1=vhost-user:{tmp_path}/vm1.sock"))
    try:
        assert port.device.poller.mode == DEFAULT_POLL      # no poll key: the default
    finally:
        port.close()


def test_poll_mode_prints_as_it_is_written():
    assert [str(parse_poll(t)) for t in ("off", "busy", "adaptive:50us", "adaptive:2ms")] == \
        ["off", "busy", "adaptive:50us", "adaptive:2ms"]


def test_build_reports_a_missing_namespace_as_port_error():
    spec = parse_port_spec("host=tap:mnet0,netns=mnet-no-such-namespace")
    with pytest.raises(PortError, match="^network namespace 'mnet-no-such-namespace' does not exist$"):
        build_port(spec)


def test_help_text_mentions_every_kind():
    for kind in KINDS:
        assert f"={kind}:" in PORT_SPEC_HELP
