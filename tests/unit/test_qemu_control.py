"""qemu.control.QmpControl against a small fake QMP server (no QEMU)."""
import os
import threading
import time

import pytest

from qemu.control import QmpControl
from qemu.errors import QmpCommandError, QmpConnectError, QmpTimeoutError

from support.fake_qmp import FakeQmp


@pytest.fixture
def server(tmp_path):
    srv = FakeQmp(tmp_path / "qmp.sock")
    yield srv
    srv.close()


@pytest.fixture
def qmp(server):
    ctl = QmpControl(server.path, command_timeout=5)
    ctl.connect(5)
    yield ctl
    ctl.close()


def test_connect_and_query_status(qmp, server):
    assert qmp.connected
    assert qmp.query_status() == {"status": "running", "running": True}
    assert server.commands[0][0] == "qmp_capabilities"


def test_commands_send_the_right_arguments(qmp, server):
    qmp.set_link("net0-dev", False)
    qmp.device_add(id="net0-dev", netdev="net0", mac="52:54:00:00:00:01", bus=None, vectors="0")
    qmp.netdev_add("stream", "net1", server=False, addr={"type": "unix", "path": "/run/s"})
    qmp.netdev_del("net1")
    qmp.chardev_add("c1", {"type": "socket", "data": {"addr": {"type": "unix",
                                                               "data": {"path": "/run/v"}}}})
    qmp.chardev_remove("c1")
    qmp.set_action(reboot="reset")
    qmp.system_reset()
    qmp.system_powerdown()
    assert server.commands[1:] == [
        ("set_link", {"name": "net0-dev", "up": False}),
        ("device_add", {"driver": "virtio-net-pci", "id": "net0-dev", "netdev": "net0",
                        "mac": "52:54:00:00:00:01", "vectors": "0"}),
        ("netdev_add", {"type": "stream", "id": "net1", "server": False,
                        "addr": {"type": "unix", "path": "/run/s"}}),
        ("netdev_del", {"id": "net1"}),
        ("chardev-add", {"id": "c1", "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": "/run/v"}}}}}),
        ("chardev-remove", {"id": "c1"}),
        ("set-action", {"reboot": "reset"}),
        ("system_reset", {}),
        ("system_powerdown", {}),
    ]


def test_command_error_names_class_and_description(qmp, server):
    server.replies["set_link"] = lambda a: ("error", "DeviceNotFound", "Device 'x' not found")
    with pytest.raises(QmpCommandError, match="set_link failed: DeviceNotFound: Device 'x'") \
            as info:
        qmp.set_link("x", True)
    assert info.value.error_class == "DeviceNotFound"
    assert qmp.query_status()["running"]        # the connection is still usable


def test_device_del_waits_for_its_own_deleted_event(qmp, server):
    server.events_after["device_del"] = [
        ("DEVICE_DELETED", {"path": "/machine/peripheral/nic/virtio-backend"}),
        ("DEVICE_DELETED", {"device": "other", "path": "/machine/peripheral/other"}),
        ("DEVICE_DELETED", {"device": "nic", "path": "/machine/peripheral/nic"}),
    ]
    event = qmp.device_del("nic", timeout=5)
    assert event["data"]["device"] == "nic"
    assert ("device_del", {"id": "nic"}) in server.commands


def test_device_del_times_out_when_the_guest_ignores_it(qmp, server):
    started = time.monotonic()
    with pytest.raises(QmpTimeoutError, match="did not accept the unplug"):
        qmp.device_del("nic", timeout=0.3)
    assert time.monotonic() - started < 3


def test_wait_event_after_mark_ignores_older_events(qmp, server):
    server.events_after["system_reset"] = [("RESET", {"guest": False})]
    qmp.system_reset()
    first = qmp.wait_event("RESET", 5)
    mark = qmp.event_mark()
    assert mark == first["seq"]
    with pytest.raises(QmpTimeoutError, match="no QMP event RESET"):
        qmp.wait_event("RESET", 0.2, after=mark)
    qmp.system_reset()
    second = qmp.wait_event("RESET", 5, after=mark)
    assert second["seq"] > mark
    assert [e["event"] for e in qmp.events()] == ["RESET", "RESET"]
    assert qmp.events(after=mark) == [second]


def test_wait_event_with_a_predicate(qmp, server):
    server.event("NIC_RX_FILTER_CHANGED", name="net0-dev")
    server.event("NIC_RX_FILTER_CHANGED", name="net1-dev")
    event = qmp.wait_event("NIC_RX_FILTER_CHANGED", 5,
                           match=lambda e: e["data"]["name"].startswith("net1"))
    assert event["data"]["name"] == "net1-dev"


def test_unanswered_command_times_out(server):
    server.replies["query-status"] = lambda a: "ignore"
    ctl = QmpControl(server.path, command_timeout=0.3)
    try:
        ctl.connect(5)
        with pytest.raises(QmpTimeoutError, match="query-status: no answer"):
            ctl.query_status()
    finally:
        ctl.close()


def test_dropped_connection_is_a_connect_error(qmp, server):
    server.replies["query-status"] = lambda a: "close"
    with pytest.raises(QmpConnectError, match="connection to .* lost"):
        qmp.query_status()
    with pytest.raises(QmpConnectError):
        qmp.set_link("net0", True)


def test_quit_tolerates_qemu_hanging_up(qmp, server):
    server.replies["quit"] = lambda a: "close"
    qmp.quit()
    assert server.commands[-1] == ("quit", {})


def test_connect_retries_until_the_socket_appears(tmp_path):
    path = tmp_path / "late.sock"
    holder = {}
    timer = threading.Timer(0.3, lambda: holder.setdefault("srv", FakeQmp(path)))
    timer.start()
    ctl = QmpControl(path)
    try:
        ctl.connect(10)
        assert ctl.query_status()["status"] == "running"
    finally:
        ctl.close()
        timer.join()
        holder["srv"].close()


def test_connect_gives_up(tmp_path):
    ctl = QmpControl(tmp_path / "none.sock")
    started = time.monotonic()
    with pytest.raises(QmpConnectError, match="within 0.3 s"):
        ctl.connect(0.3)
    with pytest.raises(QmpConnectError, match="QEMU exited"):
        ctl.connect(10, alive=lambda: False)
    assert time.monotonic() - started < 3
    ctl.close()


def test_not_connected_errors(tmp_path):
    ctl = QmpControl(tmp_path / "none.sock")
    with pytest.raises(QmpConnectError, match="not connected"):
        ctl.query_status()
    assert not ctl.connected
    ctl.close()   # harmless without a connection


def test_close_stops_the_loop_thread(server):
    before = threading.active_count()
    ctl = QmpControl(server.path)
    ctl.connect(5)
    assert threading.active_count() == before + 1
    ctl.close()
    assert threading.active_count() == before
    assert not ctl.connected
    assert os.path.exists(server.path)
