"""The sans-IO back-end: dispatcher, REPLY_ACK, feature negotiation, ring life."""
import os
import struct

import pytest

from nicdev.vhost_user.backend import BackendDevice, RequestFailed, VhostUserBackend
from nicdev.vhost_user.messages import (
    MemoryRegionDesc, MemoryTable, Message, ProtocolError, RarpMac, VringAddr, VringFile, VringState,
)
from nicdev.vhost_user.protocol import (
    F_PROTOCOL_FEATURES, FLAG_NEED_REPLY, FLAG_REPLY, VERSION, ProtocolFeature, Request,
)
from nicdev.virtio.features import VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, mask

from support.vhost_user_guest import Frontend, GuestNic, GuestRam, eventfd

PF_ALL = mask(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.RARP, ProtocolFeature.NET_MTU,
              ProtocolFeature.STATUS)
BIT30 = 1 << F_PROTOCOL_FEATURES
FEATURES = mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX)


class Recorder(BackendDevice):
    """A device that writes down what the back-end tells it."""

    def __init__(self):
        self.events = []
        self.unused = 0

    def features_set(self, features):
        self.events.append(("features", features))

    def mem_table_changed(self, mem):
        self.events.append(("mem", mem is not None))

    def ring_started(self, ring):
        self.events.append(("started", ring.index, ring.queue.next_avail))

    def ring_stopping(self, ring):
        self.events.append(("stopping", ring.index))
        return self.unused

    def ring_enable_changed(self, ring):
        self.events.append(("enabled" if ring.enabled else "disabled", ring.index))

    def send_rarp(self, mac):
        self.events.append(("rarp", mac))

    def set_mtu(self, mtu):
        if mtu < 68:
            raise RequestFailed("too small")
        self.events.append(("mtu", mtu))

    def status_set(self, status):
        self.events.append(("status", status))

    def reset(self):
        self.events.append(("reset",))


@pytest.fixture
def backend():
    b = VhostUserBackend(FEATURES, PF_ALL, 2, device=Recorder(), queue_num=1, name="test")
    yield b
    b.reset()


@pytest.fixture
def guest():
    ram = GuestRam()
    nic = GuestNic(ram)
    yield nic
    nic.close()
    ram.close()


def req(request, payload=None, fds=(), need_reply=False):
    return Message(request, VERSION | (FLAG_NEED_REPLY if need_reply else 0), payload, list(fds))


def one_reply(backend, msg):
    replies = backend.handle(msg)
    assert len(replies) == 1
    assert replies[0].flags == VERSION | FLAG_REPLY and replies[0].request == msg.request
    return replies[0].payload


# -- negotiation -------------------------------------------------------------
def test_get_features_offers_bit_30(backend):
    assert one_reply(backend, req(Request.GET_FEATURES)) == FEATURES | BIT30


def test_protocol_features_answered_before_set_features(backend):
    assert one_reply(backend, req(Request.GET_PROTOCOL_FEATURES)) == PF_ALL
    assert backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK)) == []
    assert backend.acked_protocol_features == 1 << ProtocolFeature.REPLY_ACK
    assert backend.acked_features == 0


def test_get_queue_num(backend):
    assert one_reply(backend, req(Request.GET_QUEUE_NUM)) == 1


def test_unoffered_features_are_refused_and_nacked(backend):
    backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert one_reply(backend, req(Request.SET_FEATURES, FEATURES | 1 << 5, need_reply=True)) == 1
    assert backend.acked_features == 0
    assert one_reply(backend, req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.PAGEFAULT, need_reply=True)) == 1
    assert backend.counters.nacks == 2


# -- REPLY_ACK ---------------------------------------------------------------
def test_need_reply_gets_status_only_with_reply_ack(backend):
    # not negotiated: no reply, even with NEED_REPLY
    assert backend.handle(req(Request.SET_OWNER, need_reply=True)) == []
    backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert one_reply(backend, req(Request.SET_OWNER, need_reply=True)) == 0
    # without NEED_REPLY: still silent
    assert backend.handle(req(Request.SET_OWNER)) == []


def test_reply_ack_failure_status(backend):
    backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert one_reply(backend, req(Request.SET_VRING_NUM, VringState(0, 100), need_reply=True)) == 1   # not a power of 2
    assert backend.rings[0].num == 0
    backend.handle(req(Request.SET_FEATURES, FEATURES | 1 << 3))
    assert one_reply(backend, req(Request.NET_SET_MTU, 10, need_reply=True)) == 1
    assert one_reply(backend, req(Request.NET_SET_MTU, 1500, need_reply=True)) == 0
    assert ("mtu", 1500) in backend.device.events


def test_explicit_reply_is_not_doubled_by_need_reply(backend):
    backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert one_reply(backend, req(Request.GET_FEATURES, need_reply=True)) == FEATURES | BIT30


# -- dispatcher rejections ----------------------------------------------------
def test_vring_index_out_of_range(backend):
    with pytest.raises(ProtocolError, match="vring index 2 out of range"):
        backend.handle(req(Request.SET_VRING_NUM, VringState(2, 256)))
    fd = eventfd()
    with pytest.raises(ProtocolError, match="vring index 7"):
        backend.handle(req(Request.SET_VRING_KICK, VringFile(7), [fd]))
    with pytest.raises(OSError):   # the dispatcher closed the fd of the rejected message
        os.fstat(fd)


def test_unsupported_requests_are_protocol_errors(backend):
    with pytest.raises(ProtocolError, match="SET_LOG_FD is not supported"):
        backend.handle(req(Request.SET_LOG_FD, None, [eventfd()]))
    with pytest.raises(ProtocolError, match="not supported"):
        backend.handle(req(Request.GET_CONFIG))


def test_gated_requests_need_the_protocol_feature_offered():
    b = VhostUserBackend(FEATURES, 1 << ProtocolFeature.REPLY_ACK, 2)
    with pytest.raises(ProtocolError, match="GET_QUEUE_NUM is not supported"):
        b.handle(req(Request.GET_QUEUE_NUM))
    with pytest.raises(ProtocolError, match="SET_STATUS is not supported"):
        b.handle(req(Request.SET_STATUS, 1))


def test_replies_and_backend_messages_are_refused(backend):
    with pytest.raises(ProtocolError, match="expected a front-end request"):
        backend.handle(Message(Request.GET_FEATURES, VERSION | FLAG_REPLY, 0))


def test_fds_on_a_message_that_takes_none(backend):
    fd = eventfd()
    msg = Message(Request.SET_OWNER, VERSION, None, [fd])   # bypasses the parser's own check
    with pytest.raises(ProtocolError, match="takes none"):
        backend.handle(msg)
    with pytest.raises(OSError):
        os.fstat(fd)


# -- memory --------------------------------------------------------------------
def test_mem_table_maps_regions_with_mmap_offset(backend, guest):
    ram = guest.ram
    ram.mem.write(ram.BUF_GPA + 0x1234, b"hello from the guest")
    backend.handle(req(Request.SET_MEM_TABLE, ram.table(), [os.dup(ram.fd), os.dup(ram.fd)]))
    assert backend.mem.read(ram.BUF_GPA + 0x1234, 20) == b"hello from the guest"
    backend.mem.write(ram.RING_GPA + 8, b"back")
    assert ram.mem.read(ram.RING_GPA + 8, 4) == b"back"
    assert backend.mem.uva_to_gpa(ram.UVA1 + 16) == ram.BUF_GPA + 16


def test_mem_table_that_cannot_be_mapped_is_refused(backend, guest):
    backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    too_big = MemoryTable([MemoryRegionDesc(0, 64 << 20, 0x1000, 0)])   # larger than the memfd
    assert one_reply(backend, req(Request.SET_MEM_TABLE, too_big, [os.dup(guest.ram.fd)], need_reply=True)) == 1
    assert backend.mem is None
    not_mappable = os.open("/dev/null", os.O_RDONLY)
    table = MemoryTable([MemoryRegionDesc(0, 4096, 0x1000, 0)])
    assert one_reply(backend, req(Request.SET_MEM_TABLE, table, [not_mappable], need_reply=True)) == 1


# -- rings -------------------------------------------------------------------
def setup_rings(backend, nic, *, protocol=PF_ALL, features=FEATURES | BIT30, enable=True):
    fe = Frontend(backend=backend)
    fe.connect(nic, want_protocol=protocol)
    if enable:
        fe.start(nic, features)
    return fe


def test_rings_start_on_kick_with_everything_set(backend, guest):
    fe = Frontend(backend=backend)
    fe.connect(guest)
    fe.call(Request.SET_FEATURES, FEATURES | BIT30)
    fe.call(Request.SET_MEM_TABLE, guest.ram.table(), [guest.ram.fd] * 2)
    fe.call(Request.SET_VRING_NUM, VringState(0, 256))
    fe.call(Request.SET_VRING_ADDR, guest.addr(0))
    assert not backend.rings[0].started
    fe.call(Request.SET_VRING_KICK, VringFile(0), [guest.kick[0]])
    assert backend.rings[0].started and not backend.rings[1].started
    assert ("started", 0, 0) in backend.device.events


def test_bit30_negotiated_rings_start_disabled(backend, guest):
    setup_rings(backend, guest, enable=False)
    fe = Frontend(backend=backend)
    fe.protocol_features = PF_ALL
    fe.start(guest, FEATURES | BIT30)     # ends with SET_VRING_ENABLE 1
    assert all(r.started and r.enabled for r in backend.rings)
    events = backend.device.events
    assert events.index(("started", 0, 0)) < events.index(("enabled", 0))
    backend.handle(req(Request.SET_VRING_ENABLE, VringState(1, 0)))
    assert backend.rings[1].started and not backend.rings[1].enabled


def test_without_bit30_rings_are_enabled_when_started(backend, guest):
    fe = Frontend(backend=backend)
    fe.connect(guest)
    fe.call(Request.SET_FEATURES, FEATURES)       # no bit 30
    fe.call(Request.SET_MEM_TABLE, guest.ram.table(), [guest.ram.fd] * 2)
    for i in (0, 1):
        fe.call(Request.SET_VRING_NUM, VringState(i, 256))
        fe.call(Request.SET_VRING_ADDR, guest.addr(i))
        fe.call(Request.SET_VRING_KICK, VringFile(i), [guest.kick[i]])
    assert all(r.started and r.enabled for r in backend.rings)


def test_enable_before_set_features_is_kept(backend, guest):
    # QEMU enables the rings while the driver probes, before SET_FEATURES.
    backend.handle(req(Request.SET_VRING_ENABLE, VringState(0, 1)))
    backend.handle(req(Request.SET_FEATURES, FEATURES | BIT30))
    assert backend.rings[0].enabled and not backend.rings[1].enabled


def test_set_vring_enable_rejects_other_values(backend):
    backend.handle(req(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert one_reply(backend, req(Request.SET_VRING_ENABLE, VringState(0, 2), need_reply=True)) == 1


def test_get_vring_base_stops_and_returns_next_avail(backend, guest):
    setup_rings(backend, guest)
    guest.post_rx(5)
    queue = backend.rings[0].queue
    for _ in range(3):
        assert queue.pop(backend.mem) is not None
    reply = one_reply(backend, req(Request.GET_VRING_BASE, VringState(0, 0)))
    assert reply == VringState(0, 3)
    assert not backend.rings[0].started and backend.rings[0].kick_fd is None
    assert ("stopping", 0) in backend.device.events


def test_unused_chains_are_given_back_on_stop(backend, guest):
    setup_rings(backend, guest)
    guest.post_rx(5)
    queue = backend.rings[0].queue
    for _ in range(4):
        queue.pop(backend.mem)
    backend.device.unused = 2      # the device popped 2 it never used
    assert one_reply(backend, req(Request.GET_VRING_BASE, VringState(0, 0))) == VringState(0, 2)


def test_set_vring_base_and_used_idx_from_memory(backend, guest):
    # A ring that restarts mid-life: the back-end takes next_avail from
    # SET_VRING_BASE and its used idx from the ring in memory.
    for q in guest.queues:
        q.init(guest.ram.mem, start_idx=0xFFF0)
    fe = setup_rings(backend, guest, enable=False)
    fe.start(guest, FEATURES | BIT30, bases=(0xFFF0, 0xFFF0))
    guest.post_rx(40)   # wraps the 16-bit index
    queue = backend.rings[0].queue
    for _ in range(40):
        chain = queue.pop(backend.mem)
        queue.push(backend.mem, chain.head, 0)
    assert queue.used_idx == (0xFFF0 + 40) & 0xFFFF
    assert len(guest.rx.reap(guest.ram.mem)) == 40


def test_ring_with_addresses_outside_memory_is_broken_not_fatal(backend, guest):
    fe = Frontend(backend=backend)
    fe.connect(guest)
    fe.call(Request.SET_FEATURES, FEATURES | BIT30)
    fe.call(Request.SET_MEM_TABLE, guest.ram.table(), [guest.ram.fd] * 2)
    fe.call(Request.SET_VRING_NUM, VringState(0, 256))
    fe.call(Request.SET_VRING_ADDR, VringAddr(0, 0, 0xDEAD0000, 0xDEAD8000, 0xDEAD4000))
    fe.call(Request.SET_VRING_KICK, VringFile(0), [guest.kick[0]])
    ring = backend.rings[0]
    assert not ring.started and "cannot start" in ring.broken
    assert int.from_bytes(os.read(guest.err[0], 8), "little") == 1    # the err eventfd was signalled
    # a fresh set-up with good addresses works
    fe.call(Request.GET_VRING_BASE, VringState(0, 0))
    fe.call(Request.SET_VRING_ADDR, guest.addr(0))
    fe.call(Request.SET_VRING_KICK, VringFile(0), [guest.kick[0]])
    assert ring.started and ring.broken is None


def test_new_mem_table_restarts_running_rings(backend, guest):
    setup_rings(backend, guest)
    guest.post_rx(3)
    backend.rings[0].queue.pop(backend.mem)
    backend.device.events.clear()
    backend.handle(req(Request.SET_MEM_TABLE, guest.ram.table(), [os.dup(guest.ram.fd), os.dup(guest.ram.fd)]))
    ev = backend.device.events
    assert ev[:3] == [("stopping", 0), ("stopping", 1), ("mem", True)]
    assert ("started", 0, 1) in ev      # carried on from where it was


def test_kick_and_call_nofd(backend, guest):
    setup_rings(backend, guest)
    backend.handle(req(Request.SET_VRING_CALL, VringFile(0, no_fd=True)))
    assert backend.rings[0].call_fd is None and not backend.rings[0].signal_call()
    backend.handle(req(Request.SET_VRING_KICK, VringFile(1, no_fd=True)))
    assert backend.rings[1].started and backend.rings[1].polling


def test_rarp_status_and_reset_owner(backend):
    backend.handle(req(Request.SEND_RARP, RarpMac(b"RT\x00\x01\x02\x03")))
    backend.handle(req(Request.SET_STATUS, 0x0F))
    assert one_reply(backend, req(Request.GET_STATUS)) == 0x0F
    backend.handle(req(Request.SET_FEATURES, FEATURES | BIT30))
    backend.handle(req(Request.SET_VRING_ENABLE, VringState(0, 1)))
    backend.handle(req(Request.RESET_OWNER))
    assert not backend.rings[0].enabled
    assert ("rarp", b"RT\x00\x01\x02\x03") in backend.device.events and ("status", 0x0F) in backend.device.events


def test_reset_closes_fds_and_forgets_everything(backend, guest):
    setup_rings(backend, guest)
    fds = [fd for r in backend.rings for fd in (r.kick_fd, r.call_fd, r.err_fd)]
    backend.reset()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert backend.mem is None and backend.acked_features == 0 and not any(r.started for r in backend.rings)
    assert backend.device.events[-1] == ("reset",)


# -- hostile message sequences ---------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from nicdev.vhost_user.messages import parse  # noqa: E402


_bodies = st.one_of(
    st.binary(max_size=48),
    st.builds(lambda i, n: struct.pack("<II", i, n), st.integers(0, 3), st.sampled_from([0, 1, 2, 100, 256, 0xFFFF, 1 << 16])),
    st.builds(lambda v: struct.pack("<Q", v), st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))),
    st.builds(lambda i, a, b, c: struct.pack("<IIQQQQ", i, 0, a, b, c, 0), st.integers(0, 2),
              st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.just(bytes(8)),                   # an empty memory table
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(Request)), st.booleans(), _bodies), max_size=40))
def test_random_message_sequences_only_raise_protocol_errors(sequence):
    """Whatever a front-end sends, the back-end answers, refuses or raises
    ProtocolError (connection closed): nothing else escapes."""
    b = VhostUserBackend(FEATURES, PF_ALL, 2, device=Recorder())
    try:
        for request, need_reply, body in sequence:
            wire = struct.pack("<III", request, VERSION | (FLAG_NEED_REPLY if need_reply else 0), len(body)) + body
            try:
                for reply in b.handle(parse(wire, [])):
                    reply.encode()
            except ProtocolError:
                continue
    finally:
        b.reset()
