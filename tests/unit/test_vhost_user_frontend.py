"""The vhost-user front-end: set-up sequence, negotiation and every way a back-end can fail it.

Peers: our own back-end (a VhostUserPort on a switch running in a thread)
and a scripted back-end that answers from a table, so the message order
and each failure (hang-up, refusal, garbage, silence) are exact.
"""
import os
import socket
import threading
import time

import pytest

from nicdev.net.background import BackgroundSwitch
from nicdev.net.vhost_user_port import VhostUserPort
from nicdev.vhost_user.backend import VhostUserBackend
from nicdev.vhost_user.connection import Connection, ConnectionClosed
from nicdev.vhost_user.frontend import (
    OPTIONAL_FEATURES, BackendError, BackendUnavailable, IncompatibleBackend, VhostUserFrontend,
)
from nicdev.vhost_user.messages import ProtocolError, VringState
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES, ProtocolFeature, Request
from nicdev.vhost_user.server import VhostUserServer
from nicdev.virtio.features import (
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, has, mask,
)

from support.waiting import wait_for

WAIT = 5.0
BIT30 = 1 << F_PROTOCOL_FEATURES
REPLY_ACK = 1 << ProtocolFeature.REPLY_ACK


@pytest.fixture
def bg():
    switch = BackgroundSwitch()
    yield switch
    switch.close()


class ScriptedBackend:
    """A back-end on a thread that answers from a script and records every request.

    `close_at`, `garbage_at`, `silent_at`: the request name at which it hangs
    up, answers with a malformed header, or stops answering. `nack`: names
    it refuses with REPLY_ACK status 1."""

    def __init__(self, path, *, features=mask(VIRTIO_F_VERSION_1) | BIT30, protocol=REPLY_ACK, queue_num=1,
                 close_at=None, garbage_at=None, silent_at=None, nack=()):
        self.features, self.protocol, self.queue_num = features, protocol, queue_num
        self.close_at, self.garbage_at, self.silent_at, self.nack = close_at, garbage_at, silent_at, set(nack)
        self.received = []              # (name, need_reply, payload)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        sock, _ = self.listener.accept()
        conn = Connection(sock)
        try:
            while True:
                msg = conn.read_message()
                for fd in msg.fds:
                    os.close(fd)
                self.received.append((msg.name, msg.need_reply, msg.payload))
                if msg.name == self.close_at:
                    return
                if msg.name == self.garbage_at:
                    sock.sendall(b"\x01\x00\x00\x00\x01\x01\x00\x00\x08\x00\x00\x00" + bytes(8))  # unknown flag bits
                    continue
                if msg.name == self.silent_at:
                    self.done.wait(WAIT)
                    return
                answers = {
                    Request.GET_FEATURES: self.features,
                    Request.GET_PROTOCOL_FEATURES: self.protocol,
                    Request.GET_QUEUE_NUM: self.queue_num,
                }
                if msg.request in answers:
                    conn.send(msg.reply(answers[msg.request]))
                elif msg.request == Request.GET_VRING_BASE:
                    conn.send(msg.reply(VringState(msg.payload.index, 7)))
                elif msg.need_reply:
                    conn.send(msg.reply(1 if msg.name in self.nack else 0))
        except (ConnectionClosed, ProtocolError, OSError):
            pass
        finally:
            conn.close()
            self.done.set()

    @property
    def names(self):
        return [name for name, _, _ in self.received]

    def close(self):
        self.done.set()
        self.listener.close()
        self.thread.join(WAIT)


@pytest.fixture
def scripted(tmp_path):
    made = []

    def make(**kwargs):
        backend = ScriptedBackend(str(tmp_path / f"s{len(made)}.sock"), **kwargs)
        made.append(backend)
        return backend, str(tmp_path / f"s{len(made) - 1}.sock")
    yield make
    for backend in made:
        backend.close()


# -- against our own back-end ----------------------------------------------------
def test_negotiation_and_rings_with_our_backend(bg, tmp_path):
    port = bg.add_port(VhostUserPort("p0", str(tmp_path / "p0.sock")))
    fe = VhostUserFrontend(port.socket_path, queue_size=64, mtu=1500)
    try:
        for bit in (VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_RING_EVENT_IDX,
                    VIRTIO_F_RING_INDIRECT_DESC, F_PROTOCOL_FEATURES, VIRTIO_NET_F_MTU):
            assert has(fe.features, bit), bit
        # Our device offers checksum and GSO offloads; by default the front-end
        # takes the checksum ones only (GSO needs a driver that handles it).
        assert has(fe.features, VIRTIO_NET_F_CSUM) and has(fe.features, VIRTIO_NET_F_GUEST_CSUM)
        assert not has(fe.features, VIRTIO_NET_F_HOST_TSO4) and not has(fe.features, VIRTIO_NET_F_GUEST_TSO4)
        assert fe.protocol_features == mask(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ, ProtocolFeature.NET_MTU)

        def backend_view():
            b = port.backend
            return (b.acked_features, port.device.datapath.mtu,
                    [(r.started, r.enabled, r.queue.desc_gpa, r.queue.avail_gpa, r.queue.used_gpa, r.queue.size)
                     for r in b.rings])
        acked, mtu, rings = bg.call(backend_view)
        assert acked == fe.features and mtu == 1500
        for ring, (started, enabled, desc, avail, used, size) in zip(fe.rings, rings):
            # The back-end translated our SET_VRING_ADDR uvas to the same gpas we use.
            assert started and enabled and size == 64
            assert (desc, avail, used) == (ring.layout.desc, ring.layout.avail, ring.layout.used)
        assert "rings running" in bg.call(lambda: port.status)
    finally:
        fe.close()
    assert [r.base for r in fe.rings] == [0, 0]
    wait_for(lambda: not bg.call(lambda: port.server.connected), "the back-end to see the hang-up")


def test_memory_region_is_identity_mapped(bg, tmp_path):
    port = bg.add_port(VhostUserPort("p0", str(tmp_path / "p0.sock")))
    with VhostUserFrontend(port.socket_path, queue_size=32, pool_size=10000) as fe:
        region = fe.mem.regions[0]
        assert region.gpa == region.uva == fe.base and fe.base % os.sysconf("SC_PAGESIZE") == 0
        assert fe.pool_size >= 10000 and fe.pool_gpa + fe.pool_size == fe.base + fe.size
        fe.pool[:4] = b"ping"
        assert fe.mem.read(fe.pool_gpa, 4) == b"ping"
        kick_fd = fe.rings[0].kick_fd
    assert fe.closed and fe.mem is None
    with pytest.raises(OSError):
        os.fstat(kick_fd)
    fe.close()      # twice is fine


def test_narrowed_features_are_respected(bg, tmp_path):
    port = bg.add_port(VhostUserPort("p0", str(tmp_path / "p0.sock")))
    with VhostUserFrontend(port.socket_path, features=OPTIONAL_FEATURES & ~mask(VIRTIO_NET_F_MRG_RXBUF,
                                                                                  VIRTIO_F_RING_EVENT_IDX)) as fe:
        assert not has(fe.features, VIRTIO_NET_F_MRG_RXBUF) and not has(fe.features, VIRTIO_F_RING_EVENT_IDX)
        assert not fe.rings[0].queue.event_idx
        assert bg.call(lambda: port.device.datapath.mrg_rxbuf) is False


def test_two_queue_pairs_need_a_backend_with_them(bg, tmp_path):
    port = bg.add_port(VhostUserPort("p0", str(tmp_path / "p0.sock")))
    with pytest.raises(IncompatibleBackend) as info:
        VhostUserFrontend(port.socket_path, num_queue_pairs=2)
    assert info.value.request == "GET_QUEUE_NUM" and "1 queue pair(s), 2 wanted" in str(info.value)


def test_backend_nack_on_mem_table(bg, tmp_path):
    def cannot_map(fd, desc):
        raise OSError(12, "Cannot allocate memory")
    backend = VhostUserBackend(mask(VIRTIO_F_VERSION_1), REPLY_ACK, 2, mapper=cannot_map)
    server = VhostUserServer(backend, str(tmp_path / "nack.sock"))
    bg.call(lambda: server.start(bg.loop))
    try:
        with pytest.raises(BackendError) as info:
            VhostUserFrontend(server.path)
        assert info.value.request == "SET_MEM_TABLE" and "refused" in str(info.value)
    finally:
        bg.call(server.close)


def test_hangup_is_seen_after_setup(bg, tmp_path):
    port = bg.add_port(VhostUserPort("p0", str(tmp_path / "p0.sock")))
    with VhostUserFrontend(port.socket_path) as fe:
        assert fe.check_connection() is None
        bg.remove_port("p0")
        wait_for(lambda: fe.check_connection() is not None, "the hang-up to be seen")
        assert "closed the connection" in fe.check_connection()


# -- the message sequence -----------------------------------------------------------
RING_SETUP = ["SET_VRING_CALL", "SET_VRING_ERR", "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK"]


def test_qemu_like_sequence_with_protocol_features(scripted):
    backend, path = scripted(features=mask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM) | BIT30,
                             protocol=REPLY_ACK | 1 << ProtocolFeature.STATUS)
    fe = VhostUserFrontend(path, queue_size=16)
    fe.close()
    backend.done.wait(WAIT)
    assert backend.names == (
        ["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER", "SET_FEATURES",
         "SET_MEM_TABLE"] + RING_SETUP * 2 + ["SET_VRING_ENABLE"] * 2
        + ["SET_VRING_ENABLE", "GET_VRING_BASE"] * 2)
    by_name = {name: (need, payload) for name, need, payload in backend.received}
    assert by_name["SET_PROTOCOL_FEATURES"] == (False, REPLY_ACK), "STATUS is not acked"
    assert by_name["SET_MEM_TABLE"][0] and by_name["SET_FEATURES"][0], "REPLY_ACK used"
    assert not by_name["GET_FEATURES"][0]
    assert by_name["SET_FEATURES"][1] == fe.features == mask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM,
                                                             VIRTIO_NET_F_GUEST_CSUM) | BIT30
    assert [r.base for r in fe.rings] == [7, 7]


def test_sequence_without_protocol_features(scripted):
    backend, path = scripted(features=mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX))
    fe = VhostUserFrontend(path, queue_size=16)
    assert fe.features == mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX) and fe.protocol_features == 0
    fe.close()
    backend.done.wait(WAIT)
    assert backend.names == (["GET_FEATURES", "SET_OWNER", "SET_FEATURES", "SET_MEM_TABLE"] + RING_SETUP * 2
                             + ["GET_VRING_BASE"] * 2)
    assert not any(need for _, need, _ in backend.received), "no NEED_REPLY without REPLY_ACK"


def test_two_queue_pairs_set_up_four_rings(scripted):
    backend, path = scripted(protocol=REPLY_ACK | 1 << ProtocolFeature.MQ, queue_num=2)
    with VhostUserFrontend(path, queue_size=16, num_queue_pairs=2) as fe:
        assert len(fe.rings) == 4
    backend.done.wait(WAIT)
    assert "GET_QUEUE_NUM" in backend.names
    assert sorted(p.index for n, _, p in backend.received if n == "SET_VRING_NUM") == [0, 1, 2, 3]


# -- failures ---------------------------------------------------------------------------
def test_nobody_listening(tmp_path):
    path = str(tmp_path / "none.sock")
    with pytest.raises(BackendUnavailable, match=f"no vhost-user backend listening on {path}"):
        VhostUserFrontend(path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()                   # a socket file nobody listens on
    with pytest.raises(BackendUnavailable, match="no vhost-user backend listening"):
        VhostUserFrontend(path)


def test_backend_without_version_1(scripted):
    backend, path = scripted(features=mask(VIRTIO_NET_F_MRG_RXBUF) | BIT30)
    with pytest.raises(IncompatibleBackend) as info:
        VhostUserFrontend(path)
    assert info.value.request == "GET_FEATURES"
    assert "does not offer VIRTIO_F_VERSION_1" in str(info.value) and "MRG_RXBUF" in str(info.value)


@pytest.mark.parametrize("at", ["GET_FEATURES", "SET_OWNER", "SET_MEM_TABLE", "SET_VRING_ADDR"])
def test_backend_hangs_up_mid_handshake(scripted, at):
    backend, path = scripted(close_at=at)
    with pytest.raises(BackendError) as info:
        VhostUserFrontend(path)
    assert info.value.request == at and "closed the connection" in info.value.reason


def test_backend_refuses_a_request(scripted):
    backend, path = scripted(nack=["SET_VRING_NUM"])
    with pytest.raises(BackendError) as info:
        VhostUserFrontend(path)
    assert info.value.request == "SET_VRING_NUM" and "REPLY_ACK status 1" in str(info.value)


def test_backend_sends_garbage(scripted):
    backend, path = scripted(garbage_at="GET_PROTOCOL_FEATURES")
    with pytest.raises(BackendError) as info:
        VhostUserFrontend(path)
    assert info.value.request == "GET_PROTOCOL_FEATURES" and "bad reply" in str(info.value)


def test_backend_goes_silent(scripted):
    backend, path = scripted(silent_at="SET_MEM_TABLE")
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        VhostUserFrontend(path, timeout=0.3)
    assert info.value.request == "SET_MEM_TABLE" and "no reply within 0.3 s" in str(info.value)
    assert time.monotonic() - started < WAIT


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        VhostUserFrontend(str(tmp_path / "x.sock"), queue_size=100)
    with pytest.raises(ValueError, match="num_queue_pairs"):
        VhostUserFrontend(str(tmp_path / "x.sock"), num_queue_pairs=0)
    with pytest.raises(ValueError, match="MTU"):
        VhostUserFrontend(str(tmp_path / "x.sock"), mtu=20)
