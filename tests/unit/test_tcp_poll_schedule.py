"""PollSchedule, and TcpLayer looking only at the connections that need it (many connections, one poll)."""
from ipaddress import IPv4Address

from stack.tcp.connection import TcpConnection
from stack.tcp.glue import ANY, TcpLayer
from stack.tcp.poll_schedule import PollSchedule
from stack.tcp.seq import IsnGenerator, PortAllocator
from stack.tcp.state import TcpState
from stack.testing.tcp_link import LayerPair

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")


def test_due_gives_touched_and_expired_once_each():
    s = PollSchedule()
    s.schedule("x", 1.0)
    s.schedule("y", 2.0)
    s.schedule("z", 5.0)
    s.touch("w")
    s.touch("x")
    assert s.due(0.5) == ["w", "x"]  # touched first (in touch order), x's deadline not yet come
    assert s.due(0.5) == []
    assert sorted(s.due(2.0)) == ["x", "y"]
    assert s.due(3.0) == []
    assert s.next_at(lambda c: None) == 5.0


def test_a_rescheduled_connection_keeps_only_its_last_deadline():
    s = PollSchedule()
    s.schedule("x", 1.0)
    s.schedule("x", 3.0)  # later: the 1.0 entry is stale
    assert s.next_at(lambda c: None) == 3.0
    assert s.due(2.0) == []
    s.schedule("x", None)  # only on input now
    assert s.due(10.0) == [] and s.next_at(lambda c: None) is None


def test_next_at_asks_touched_connections_and_forget_drops_them():
    s = PollSchedule()
    s.schedule("x", 4.0)
    s.touch("y")
    assert s.next_at({"y": 2.0}.get) == 2.0
    assert s.next_at({"y": None}.get) == 4.0
    s.forget("y")
    s.forget("x")
    assert s.due(100.0) == [] and s.next_at(lambda c: 0.0) is None


def test_stale_entries_do_not_pile_up():
    s = PollSchedule()
    for i in range(10_000):
        s.schedule("x", float(i))
    assert len(s) < 200


class Wire(LayerPair):
    def __init__(self):
        super().__init__(TcpLayer(isn=IsnGenerator(bytes(32)), ports=PortAllocator(key=bytes(32))),
                         TcpLayer(isn=IsnGenerator(bytes(range(32)))))


def _many(n):
    w = Wire()
    lst = w.b.listen(ANY, w.b.bind(ANY, 80), backlog=n + 1)
    clients = [w.a.connect(A, (B, 80), w.now) for _ in range(n)]
    w.exchange()
    accepted = {s.remote: s for s in (w.b.accept(lst) for _ in range(n)) if s is not None}
    servers = [accepted.get(c.local) for c in clients]  # servers[i] is the other end of clients[i]
    assert all(c.state is TcpState.ESTABLISHED for c in clients) and None not in servers
    w.advance(1.0)  # delayed ACKs and the like are done: everything is idle
    return w, clients, servers


def test_a_poll_asks_only_the_connections_that_need_it(monkeypatch):
    w, clients, servers = _many(300)
    asked = []
    real = TcpConnection.poll_at

    def counting(self):
        asked.append(self)
        return real(self)

    monkeypatch.setattr(TcpConnection, "poll_at", counting)
    w.b.poll(w.now)
    w.b.poll_at()
    assert asked == []  # 300 idle connections: nobody is asked
    clients[7].send(b"ping")
    w.exchange()
    assert servers[7].recv(10) == b"ping"
    asked.clear()
    w.b.poll(w.now)
    w.b.poll_at()
    assert set(asked) <= {servers[7]}


def test_timers_of_untouched_connections_still_fire():
    w, clients, servers = _many(50)
    clients[3].send(b"x" * 100)
    clients[3].poll(w.now)  # the segment is "lost": sent, but never given to b
    w.a.poll(w.now)
    at = w.a.poll_at()
    assert at is not None and at > w.now  # the retransmission timer
    w.advance(at - w.now + 0.001)
    assert servers[3].recv(1000) == b"x" * 100  # retransmitted by the timer alone


def test_finished_connections_leave_the_table_and_free_their_ports():
    w, clients, servers = _many(20)
    for c, s in zip(clients, servers):
        c.close()
        w.exchange()
        s.close()
        w.exchange()
    assert w.b.connections() == []
    w.advance(61)  # TIME-WAIT ends
    assert w.a.connections() == []
    assert not any(w.a.port_in_use(A, c.local[1]) for c in clients)
