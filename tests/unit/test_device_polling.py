"""The device's rings polled from the event loop (poll=adaptive and busy) against
a guest driver that kicks only when the ring asks it to, with a made-up clock.

`nic.kicks` counts the kicks the guest's driver decided to send (it follows
NO_NOTIFY and EVENT_IDX's avail_event as Linux's virtio driver does)."""
import pytest

from nicdev.net.device import DEVICE_FEATURES, VirtioNetDevice
from nicdev.net.loop import EventLoop
from nicdev.net.polling import POLL_BUSY, POLL_OFF, PollMode
from nicdev.virtio.features import VIRTIO_F_RING_EVENT_IDX, mask
from nicdev.vhost_user.protocol import F_PROTOCOL_FEATURES

from support.vhost_user_guest import Frontend, GuestNic, GuestRam

BIT30 = 1 << F_PROTOCOL_FEATURES
BUDGET = 0.001
ADAPTIVE = PollMode.adaptive(BUDGET)
TX, RX = 1, 0


def frame(n: int, fill: int = 0xAB) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes([fill]) * (n - 14)


class ClockLoop(EventLoop):
    """The real loop (selectors, timers, pollers) with a clock the test moves."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Net:
    def __init__(self, poll: PollMode, *, event_idx: bool = True) -> None:
        self.frames = []
        self.loop = ClockLoop()
        self.dev = VirtioNetDevice(lambda f, meta: self.frames.append(f), poll=poll)
        self.dev.attach_loop(self.loop)
        self.backend = self.dev.make_backend("test")
        self.ram = GuestRam()
        self.nic = GuestNic(self.ram, event_idx=event_idx)
        self.fe = Frontend(backend=self.backend)
        self.fe.connect(self.nic)
        features = DEVICE_FEATURES | BIT30
        if not event_idx:
            features &= ~mask(VIRTIO_F_RING_EVENT_IDX)
        self.fe.start(self.nic, features)
        self.turn()

    def turn(self, n: int = 1, advance: float = 0.0) -> None:
        for _ in range(n):
            self.loop.t += advance
            self.loop.run_once(0)

    def idle_until_asleep(self) -> int:
        """Turns of the loop, 0.1 ms apart, until the poll ends."""
        for turns in range(1, 100):
            self.turn(advance=0.0001)
            if not self.loop.polling:
                return turns
        raise AssertionError("the poll never ended")

    def close(self) -> None:
        self.backend.reset()
        self.nic.close()
        self.ram.close()
        self.loop.close()


@pytest.fixture
def make_net():
    made = []

    def make(*args, **kw):
        made.append(Net(*args, **kw))
        return made[-1]
    yield make
    for n in made:
        n.close()


@pytest.mark.parametrize("event_idx", [True, False])
def test_adaptive_takes_frames_without_kicks_while_polling(make_net, event_idx):
    net = make_net(ADAPTIVE, event_idx=event_idx)
    assert not net.loop.polling                  # no poll before traffic
    net.nic.send(frame(60, 0))
    kicks = net.nic.kicks[TX]
    assert kicks >= 1
    net.turn()                                  # the kick: drained, and the poll starts
    assert net.frames == [frame(60, 0)] and net.loop.polling
    for i in range(1, 6):                       # the guest sends on; its driver does not kick
        net.nic.send(frame(60, i))
        net.turn(advance=0.0002)
    assert net.nic.kicks[TX] == kicks
    assert net.frames == [frame(60, i) for i in range(6)]
    assert net.dev.counters.tx_kicks == kicks
    assert net.dev.poller.counters.polls == 1
    # Idle for the budget: kicks back on, the loop blocks again.
    assert net.idle_until_asleep() >= 10
    net.nic.send(frame(60, 9))
    assert net.nic.kicks[TX] == kicks + 1


def test_off_asks_for_a_kick_after_every_drain(make_net):
    net = make_net(POLL_OFF)
    for i in range(4):
        net.nic.send(frame(60, i))
        net.turn()
        assert not net.loop.polling
    assert net.nic.kicks[TX] == 4 and net.dev.counters.tx_kicks == 4
    assert len(net.frames) == 4


def test_busy_polls_from_the_start_never_asks_for_kicks_and_never_sleeps(make_net):
    net = make_net(POLL_BUSY)
    assert net.loop.polling
    for i in range(5):
        net.nic.send(frame(60, i))
        net.turn(advance=10.0)                  # long idle gaps: a busy poll goes on
    assert net.nic.kicks[TX] == 0
    assert len(net.frames) == 5 and net.loop.polling


def test_frames_to_the_guest_start_a_poll(make_net):
    # A guest answers what it receives: its answer is picked up without a kick.
    net = make_net(ADAPTIVE)
    net.nic.post_rx(8)
    assert net.dev.receive(frame(98, 1))
    net.turn()                                  # the notification turn: the poll starts
    assert net.loop.polling
    assert net.nic.received() == [frame(98, 1)]
    net.nic.send(frame(98, 2))
    net.turn()
    assert net.frames == [frame(98, 2)] and net.nic.kicks[TX] == 0


@pytest.mark.parametrize("event_idx", [True, False])
def test_posted_receive_buffers_are_seen_without_rx_kicks_while_polling(make_net, event_idx):
    net = make_net(ADAPTIVE, event_idx=event_idx)
    net.nic.post_rx(1)
    rx_kicks = net.nic.kicks[RX]
    for i in range(3):                          # one fits, two wait for buffers
        assert net.dev.receive(frame(100, i))
    net.turn()
    assert net.loop.polling and net.dev.datapath.rx_waiting == 2
    assert net.nic.received() == [frame(100, 0)]
    net.nic.post_rx(4)                          # the driver does not kick: the poll sees them
    assert net.nic.kicks[RX] == rx_kicks
    net.turn()
    assert net.dev.datapath.rx_waiting == 0
    assert net.nic.received() == [frame(100, 1), frame(100, 2)]


def test_receive_kick_is_asked_for_when_the_poll_ends_with_frames_waiting(make_net):
    net = make_net(ADAPTIVE)
    net.nic.post_rx(1)
    for i in range(3):
        net.dev.receive(frame(100, i))          # one fits, two wait
    net.turn()
    assert net.loop.polling
    rx_kicks = net.nic.kicks[RX]
    net.idle_until_asleep()
    net.nic.post_rx(2)
    assert net.nic.kicks[RX] == rx_kicks + 1   # asleep: the guest must tell us
    net.turn()
    assert net.nic.received() == [frame(100, i) for i in range(3)]


def test_frames_added_as_the_poll_ends_are_not_lost(make_net):
    # The guest adds a frame after the last poll looked and before kicks are
    # back on: it does not kick (they were off), the re-check must find it.
    net = make_net(ADAPTIVE)
    net.nic.send(frame(60, 0))
    net.turn()
    poller = net.dev.poller
    decide = poller.policy.after_poll
    raced = []

    def guest_races(now, found_work):
        keep = decide(now, found_work)
        if not keep and not raced:          # the poll looked for the last time
            net.nic.send(frame(60, 1))
            raced.append(now)
        return keep
    poller.policy.after_poll = guest_races
    kicks = net.nic.kicks[TX]
    net.turn(20, advance=0.0001)
    assert net.frames == [frame(60, 0), frame(60, 1)]
    assert net.nic.kicks[TX] == kicks
    assert poller.counters.polls == 2           # the re-check's find started a new poll


def test_ring_stop_and_reset_end_the_poll(make_net):
    net = make_net(POLL_BUSY)
    assert net.loop.polling
    net.fe.stop()
    net.turn()
    assert not net.loop.polling and not net.dev.poller.polling
    net2 = make_net(ADAPTIVE)
    net2.nic.send(frame(60))
    net2.turn()
    assert net2.loop.polling
    net2.backend.reset()
    assert not net2.loop.polling
