"""pytest fixtures for driver integration tests (installed as the `mnet` plugin).

    def test_guest_reaches_testpmd(mnet_switch, mnet_vm, mnet_testpmd, tmp_path):
        port = mnet_switch.vhost_user_port("pmd")
        mnet_testpmd.frontend(port.socket_path, "icmpecho")
        vm = mnet_vm("guest", ip="10.0.0.1/24")          # booted, on its own vhost-user port
        assert vm.run("ping -c 3 10.0.0.77").ok

Fixtures:
- `mnet_guest_image` (session): the guest kernel + initramfs (built once, cached).
- `mnet_switch`: a switch on a background thread; `.vhost_user_port(name)`
  adds a vhost-user port whose socket lives in a private temporary folder.
- `mnet_vm(name, ip=..., port=None)`: boots a guest on a new (or the given)
  vhost-user port of `mnet_switch` and waits until it answers; stopped after
  the test. A port it makes itself knows the guest's QMP (`qmp=`), so a link
  taken down through `mnet_control` is a carrier change in the guest.
- `mnet_control`: the control socket of `mnet_switch` (docs/control.md),
  as a connected `ControlClient`: `.ports()`, `.counters()`,
  `.impair(port, "loss=5%")`, `.link(port, False)`, `.trace(port, True)`,
  `.trace_read(since)`, `.fault(port, "stall-tx")`; `.path` is the socket.
- `mnet_netns`: a network namespace made for the test, removed after it.
- `mnet_testpmd`: `.frontend(path, mode)` / `.backend(path, mode)` start
  DPDK's testpmd (see nicdev.vhost_user.testpmd); stopped after the test.

- `mnet_trace`: records the ring events of every port of `mnet_switch`
  (docs/tracing.md) into `.path` from the start of the test;
  `.assertions()` stops recording and returns the trace as `TraceAssertions`;
  `.stop(snapshot=fn)` stops it with `fn()` run on the switch's thread at
  that moment (counters that match the trace exactly).

Assertions on a ring trace (docs/tracing.md), failing with the numbers:

    from mnet.pytest_plugin import TraceAssertions
    trace = TraceAssertions.from_file(path)          # or TraceAssertions(records)
    trace.assert_rx_buffers_posted("vm0", at_least=64)
    trace.assert_longest_chain("vm0", at_most=2, queue=1)
    trace.assert_calls_suppressed("stack", reason="event_idx")

Imports are lazy so that merely having the plugin installed costs nothing.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


def __getattr__(name: str):
    # TraceAssertions on first use: the trace reader loads the ring code.
    if name == "TraceAssertions":
        from mnet.trace_view.assertions import TraceAssertions

        return TraceAssertions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@pytest.fixture(scope="session")
def mnet_guest_image():
    from guest.image import build_image

    return build_image(progress=lambda line: print(f"[guest image] {line}", flush=True))


class _SwitchFixture:
    def __init__(self, sockdir: Path) -> None:
        from nicdev.net.background import BackgroundSwitch

        self.bg = BackgroundSwitch()
        self.sockdir = sockdir

    def __getattr__(self, name):
        return getattr(self.bg, name)

    def vhost_user_port(self, name: str, **options):
        """A vhost-user port `name` (`options`: VhostUserPort's, e.g. qmp=PATH)."""
        from nicdev.net.vhost_user_port import VhostUserPort

        return self.bg.add_port(VhostUserPort(name, str(self.sockdir / f"{name}.sock"), **options))


@pytest.fixture
def mnet_switch():
    # Unix socket paths are limited to 107 bytes: a short private folder, not tmp_path.
    with tempfile.TemporaryDirectory(prefix="mnet-sw-") as sockdir:
        fixture = _SwitchFixture(Path(sockdir))
        try:
            yield fixture
        finally:
            print(fixture.bg.summary())
            fixture.bg.close()


@pytest.fixture
def mnet_vm(mnet_switch, mnet_guest_image, tmp_path):
    from qemu.cmdline import NicConfig, extra_qmp_monitor_args
    from qemu.vm import VirtualMachine

    vms = []

    def boot(name: str, *, ip: str, port=None, gateway: str | None = None, timeout: float = 240.0, **vm_options):
        if port is None:
            # An extra QMP monitor the switch tells of link changes (mnet_control.link).
            qmp = str(mnet_switch.sockdir / f"{name}-qmp.sock")
            port = mnet_switch.vhost_user_port(name, qmp=qmp)
            vm_options["extra_args"] = [*extra_qmp_monitor_args(qmp), *vm_options.get("extra_args", ())]
        vm = VirtualMachine(name, mnet_guest_image, nic=NicConfig("vhost-user", port.socket_path), ip=ip,
                            gateway=gateway, workdir=tmp_path / f"vm-{name}", **vm_options)
        vms.append(vm)
        vm.start()
        vm.wait_ready(timeout)
        return vm

    try:
        yield boot
    finally:
        for vm in vms:
            vm.stop()


@pytest.fixture
def mnet_control(mnet_switch):
    from nicdev.net.control import ControlHandler
    from nicdev.net.control_client import ControlClient
    from nicdev.net.control_server import ControlServer

    server = ControlServer(ControlHandler(mnet_switch.bg.switch), str(mnet_switch.sockdir / "control.sock"))
    mnet_switch.call(lambda: server.start(mnet_switch.bg.loop))
    client = ControlClient(server.path)
    try:
        yield client
    finally:
        client.close()
        mnet_switch.call(server.close)


@pytest.fixture
def mnet_netns():
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-test") as name:
        yield name


class _TestpmdFixture:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started = []

    def frontend(self, path: str, mode: str, **kw):
        from nicdev.vhost_user.testpmd import Testpmd

        self.started.append(Testpmd.frontend(path, mode, self.workdir, **kw))
        return self.started[-1]

    def backend(self, path: str, mode: str, **kw):
        from nicdev.vhost_user.testpmd import Testpmd

        self.started.append(Testpmd.backend(path, mode, self.workdir, **kw))
        return self.started[-1]


@pytest.fixture
def mnet_testpmd(tmp_path):
    fixture = _TestpmdFixture(tmp_path)
    try:
        yield fixture
    finally:
        for pmd in fixture.started:
            pmd.stop()


class _TraceFixture:
    """Records every port of `mnet_switch` (present and future) into `path`."""

    def __init__(self, switch: _SwitchFixture, path: Path) -> None:
        from nicdev.virtio.trace import JsonLinesWriter

        self.path = str(path)
        self._switch = switch
        self._writer = JsonLinesWriter(self.path)
        switch.call(lambda: switch.switch.add_trace_sink(self._writer))

    def stop(self, snapshot=None):
        """Stop recording and close the file (the fixture does it after the
        test). `snapshot()`, if given, runs on the switch's thread at the
        moment recording stops, so counters it reads match the trace exactly;
        its result is returned."""
        if self._writer is None:
            return None
        writer, self._writer = self._writer, None

        def stop_on_switch():
            self._switch.switch.remove_trace_sink(writer)
            return snapshot() if snapshot is not None else None
        try:
            return self._switch.call(stop_on_switch)
        finally:
            writer.close()

    def assertions(self):
        """Stop recording; the trace as `TraceAssertions`."""
        from mnet.trace_view.assertions import TraceAssertions

        self.stop()
        return TraceAssertions.from_file(self.path)


@pytest.fixture
def mnet_trace(mnet_switch, tmp_path):
    fixture = _TraceFixture(mnet_switch, tmp_path / "ring.trace")
    try:
        yield fixture
    finally:
        fixture.stop()
