"""`--serve chat:PORT` in process: several stack clients on a LoopbackNicPair talk through the
chat service (mnet.apps.chat.server) on its own event loop."""
import queue
import threading

import pytest

from mnet.apps.chat import server as chat_server
from mnet.services.runner import start_service
from mnet.services.spec import parse_service
from stack import LoopbackNicPair, Shutdown, SocketOption, SocketType, Stack

WAIT = 10.0


class Client:
    """A blocking stack socket read line by line."""

    def __init__(self, st, port, **options):
        self.sock = st.socket(SocketType.STREAM)
        for opt, value in options.items():
            self.sock.set_option(SocketOption[opt], value)
        self.sock.set_timeout(WAIT)
        self.sock.connect(("10.0.0.2", port))
        self.buf = b""

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def line(self) -> str:
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                pytest.fail(f"no line within {WAIT}s (have {self.buf[-200:]!r})")
            if not data:
                pytest.fail(f"the server closed the connection (have {self.buf[-200:]!r})")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def until(self, text: str) -> list[str]:
        """Lines up to and including ``text``."""
        seen = []
        while not seen or seen[-1] != text:
            seen.append(self.line())
        return seen

    def closed(self) -> bool:
        """Read to the end of the stream: True if the server closed it (False on a timeout)."""
        try:
            while data := self.sock.recv(4096):
                self.buf += data
        except TimeoutError:
            return False
        return True

    def join(self, nick: str) -> str:
        assert self.line().startswith("* welcome")
        self.send(nick)
        hello = self.line()
        assert hello.startswith(f"* hello {nick};"), hello
        return hello


@pytest.fixture
def chat():
    """(connect(nick=None, **options) -> Client, reports queue, start(spec)); chat:7000 started."""
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24").start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    stopping = threading.Event()
    reports = queue.Queue()
    threads = []
    clients = []

    def start(spec):
        threads.append(start_service(b, parse_service(spec), stopping, reports.put))

    def connect(nick=None, port=7000, **options):
        c = Client(a, port, **options)
        clients.append(c)
        if nick is not None:
            c.join(nick)
        return c

    start("chat:7000")
    yield connect, reports, start
    for c in clients:
        c.sock.close()
    stopping.set()
    a.stop()
    b.stop()
    for t in threads:
        t.join(WAIT)
    pair.close()


def test_three_clients_join_talk_in_order_and_leave(chat):
    connect, reports, _ = chat
    alice = connect("alice")
    bob = connect("bob")
    assert alice.line() == "* bob joined"
    carol = connect()
    assert carol.join("carol") == "* hello carol; here: alice, bob"
    assert alice.line() == bob.line() == "* carol joined"
    for i in range(50):
        (alice if i % 2 else bob).send(f"line {i}")
    # Each client sees every line of the others, each sender's in its order, never its own.
    from_alice = [f"<alice> line {i}" for i in range(1, 50, 2)]
    from_bob = [f"<bob> line {i}" for i in range(0, 50, 2)]
    seen = [carol.line() for _ in range(50)]
    assert [s for s in seen if s.startswith("<alice>")] == from_alice
    assert [s for s in seen if s.startswith("<bob>")] == from_bob
    assert [alice.line() for _ in range(25)] == from_bob
    assert [bob.line() for _ in range(25)] == from_alice
    # Lines sent one after the other's was seen arrive in that order.
    for i in range(6):
        (alice if i % 2 else bob).send(f"turn {i}")
        assert carol.line() == f"<{'alice' if i % 2 else 'bob'}> turn {i}"
    assert alice.until("<bob> turn 4") == ["<bob> turn 0", "<bob> turn 2", "<bob> turn 4"]
    assert bob.until("<alice> turn 5") == ["<alice> turn 1", "<alice> turn 3", "<alice> turn 5"]
    bob.sock.shutdown(Shutdown.WRITE)  # nc's Ctrl-D
    assert alice.line() == carol.line() == "* bob left"
    assert bob.closed()
    reported = [reports.get(timeout=WAIT) for _ in range(4)]
    assert [r.split(" ", 2)[2] for r in reported] == ["joined as alice", "joined as bob", "joined as carol", "left as bob"]


def test_an_abrupt_disconnect_is_a_leave_notice(chat):
    connect, _, _ = chat
    alice = connect("alice")
    bob = connect("bob")
    alice.line()
    bob.sock.set_option(SocketOption.LINGER, 0)
    bob.sock.close()  # a reset, as when a client process is killed with unread data
    assert alice.line() == "* bob left (connection reset)"
    alice.send("/who")
    assert alice.line() == "* here (1): alice"


def test_nickname_retries_crlf_and_bad_bytes(chat):
    connect, _, _ = chat
    alice = connect("alice")
    bob = connect()
    assert bob.line().startswith("* welcome")
    bob.sock.sendall(b"bad nick\r\n")
    assert bob.line().startswith("! bad nickname 'bad nick'")
    bob.sock.sendall(b"Alice\r\n")
    assert bob.line() == "! nickname Alice is taken; try again"
    bob.sock.sendall(b"bob\r\nhi \xc3\x28 there\r\n")
    assert bob.line() == "* hello bob; here: alice"
    assert alice.until("<bob> hi \ufffd( there") == ["* bob joined", "<bob> hi \ufffd( there"]


def test_an_over_long_line_is_refused_and_the_client_stays_until_it_keeps_on(chat):
    connect, _, start = chat
    start("chat:7001,max_line=64")
    alice = connect("alice", port=7001)
    bob = connect("bob", port=7001)
    alice.line()
    bob.sock.sendall(b"x" * 65 + b"\n")
    assert bob.line() == "! line too long (over 64 bytes): not sent"
    bob.send("y" * 64)
    assert alice.line() == "<bob> " + "y" * 64
    bob.sock.sendall(b"z" * 100_000)  # no end of line at all
    assert bob.line() == "! line too long (over 64 bytes): not sent"
    bob.sock.sendall(b"\n" + (b"w" * 80 + b"\n") * 2)
    assert bob.until("! 3 over-long lines in a row: disconnecting")[-2] == "! line too long (over 64 bytes): not sent"
    assert bob.closed()
    assert alice.line() == "* bob left (too many over-long lines)"


def test_quit_and_a_full_chat(chat):
    connect, _, start = chat
    start("chat:7002,max_clients=2")
    alice = connect("alice", port=7002)
    bob = connect("bob", port=7002)
    alice.line()
    carol = connect(port=7002)
    assert carol.line() == "! the chat is full (2 clients); try again later"
    assert carol.closed()
    bob.send("/quit gotta go")
    assert bob.line() == "* bye"
    assert bob.closed()
    assert alice.line() == "* bob left (gotta go)"
    connect("carol", port=7002)  # a place is free again
    assert alice.line() == "* carol joined"


def test_a_client_that_sent_its_fin_still_gets_what_was_queued(chat):
    connect, _, _ = chat
    alice = connect("alice")
    bob = connect()
    bob.sock.sendall(b"bob\nhello\nbye")  # the last line without its LF, as `printf ... | nc`
    bob.sock.shutdown(Shutdown.WRITE)
    assert bob.line().startswith("* welcome")
    assert bob.line() == "* hello bob; here: alice"
    assert bob.closed()
    assert alice.until("* bob left") == ["* bob joined", "<bob> hello", "<bob> bye", "* bob left"]


def test_a_client_that_does_not_read_is_dropped_and_never_holds_up_the_others(chat, monkeypatch):
    monkeypatch.setattr(chat_server, "OUTPUT_LIMIT", 8192)
    connect, reports, _ = chat
    alice = connect("alice")
    carol = connect("carol")
    alice.line()
    stuck = connect("stuck", RECEIVE_BUFFER_SIZE=4096)  # then it never reads again
    alice.line()
    carol.line()
    text = "x" * 1000
    n = 0
    # The server's send buffer and the stuck one's window fill, then its queue: it is dropped,
    # while alice's sends and carol's reads go on as usual (in bursts: no wait on delayed ACKs).
    got = ""
    while not got.startswith("* stuck left"):
        assert n < 2000, "the stuck client was never dropped"
        alice.sock.sendall(b"".join(f"{n + i} {text}\n".encode() for i in range(20)))
        for i in range(20):
            got = carol.line()
            if got.startswith("* stuck left"):
                break
            assert got == f"<alice> {n + i} {text}"
        n += 20
    assert got == "* stuck left (not reading)"
    assert alice.line() == "* stuck left (not reading)"
    assert any(r.endswith("left as stuck (not reading)") for r in iter_reports(reports))


def iter_reports(reports):
    while True:
        try:
            yield reports.get(timeout=WAIT)
        except queue.Empty:
            return


def test_a_client_that_never_sends_a_nickname_is_let_go(chat, monkeypatch):
    monkeypatch.setattr(chat_server, "NICKNAME_TIMEOUT", 0.5)
    connect, reports, _ = chat
    alice = connect("alice")
    silent = connect()  # its deadline comes after alice's, on the same loop
    assert silent.line().startswith("* welcome")
    assert silent.line() == "! no nickname within 0.5 s: disconnecting"
    assert silent.closed()
    assert next(r for r in iter_reports(reports) if "nickname" in r).endswith(" sent no nickname in time")
    alice.send("/who")
    assert alice.line() == "* here (1): alice"  # its deadline passed first, and it stays


def test_a_client_told_goodbye_that_does_not_take_its_lines_is_reset(chat, monkeypatch):
    monkeypatch.setattr(chat_server, "OUTPUT_LIMIT", 4 << 20)  # (so it is not dropped for not reading)
    monkeypatch.setattr(chat_server, "HANGUP_TIMEOUT", 0.5)
    connect, reports, _ = chat
    alice = connect("alice")
    carol = connect("carol")
    stuck = connect("stuck", RECEIVE_BUFFER_SIZE=4096)
    alice.until("* stuck joined")
    carol.line()
    alice.sock.sendall(b"".join(b"%d %s\n" % (i, b"x" * 1000) for i in range(400)))
    carol.until(f"<alice> 399 {'x' * 1000}")  # all of it went to stuck's queue too: more than
    stuck.send("/quit")                       # its window and its socket's send buffer hold
    assert alice.line() == carol.line() == "* stuck left"
    assert any(r.endswith("reset: its last lines not taken within 0.5 s") for r in iter_reports(reports))
    with pytest.raises(ConnectionResetError):
        while stuck.sock.recv(65536):  # what made it through, then the reset
            pass


def test_lines_leave_without_nagles_wait(chat, monkeypatch):
    # A client that only listens acknowledges late (its delayed ACK): with Nagle on, each line for it
    # would wait for the ACK of the line before, ~40 ms a line. So every accepted socket has TCP_NODELAY.
    connect, _, _ = chat
    made = []

    class Recorded(chat_server.ChatConnection):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(chat_server, "ChatConnection", Recorded)
    connect("alice")
    connect("bob")
    assert [c.sock.get_option(SocketOption.TCP_NO_DELAY) for c in made] == [True, True]
