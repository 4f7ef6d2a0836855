"""`mnet stack --serve chat:PORT` with clients nobody here wrote: OpenBSD `nc` in a namespace
and busybox `nc` in a QEMU guest.

One lab for the module, all of it processes as a user would run them:

  `mnet switch`  port "stack"  vhost-user -> `mnet stack --serve chat:7000`   10.0.0.9
                 port "guest"  vhost-user -> a QEMU guest (busybox nc)         10.0.0.1
                 port "host"   TAP into a namespace this module creates         10.0.0.254
                               (the host kernel's `nc` clients)
"""
from __future__ import annotations

import queue
import signal
import subprocess
import threading
from types import SimpleNamespace

import pytest

from support.cli import start_mnet_stack
from support.kernel_peer import KernelPeerSwitchProcessLab
from support.waiting import wait_for

pytestmark = pytest.mark.integration

STACK_IP = "10.0.0.9"
HOST_IP = "10.0.0.254"
GUEST_IP = "10.0.0.1"
PORT = 7000
WAIT = 20.0  # a bound for a line to arrive, generous for a loaded machine


class ChatLab(KernelPeerSwitchProcessLab):
    def __init__(self, tmp) -> None:
        super().__init__(tmp, "chat", host_ips=(HOST_IP,), vhost_ports=("stack", "guest"))
        self.stack = self.output = None
        self.own(self, ChatLab.stop_stack)  # registered after the switch: stopped before it
        try:
            self.stack, self.output = start_mnet_stack("--nic", f"vhost-user:{self.sockets['stack']}",
                                                       "--ip", f"{STACK_IP}/24", "--serve", f"chat:{PORT}")
            banner = self.output.until(r"^stack up: ", timeout=WAIT)
            assert f"serving chat on port {PORT}\n" in banner, banner
        except BaseException:
            self.close()
            raise

    def nc(self, name: str) -> "NcClient":
        return NcClient(self.netns, name)

    def reported(self, pattern: str) -> str:
        """The next line of `mnet stack` matching ``pattern`` (bounded)."""
        return self.output.until(pattern, timeout=WAIT)[-1].rstrip("\n")

    def stop_stack(self) -> None:
        if self.stack is not None and self.stack.poll() is None:
            self.stack.send_signal(signal.SIGINT)
            try:
                out, err = self.output.finish(WAIT)
                print(out[-3000:], err[-3000:])
            except subprocess.TimeoutExpired:
                self.stack.kill()
                self.stack.wait(5)


class NcClient:
    """`nc STACK_IP PORT` in the namespace: lines to its stdin, its stdout's lines read on a thread."""

    def __init__(self, netns: str, name: str) -> None:
        self.name, self.netns = name, netns
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, "nc", STACK_IP, str(PORT)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str | bytes) -> None:
        self.proc.stdin.write(line if isinstance(line, bytes) else line.encode() + b"\n")
        self.proc.stdin.flush()

    def line(self) -> str:
        try:
            got = self.lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"nc {self.name}: no line within {WAIT:.0f} s; it saw {self.seen[-10:]}")
        if got is None:
            self.lines.put(None)
            pytest.fail(f"nc {self.name}: ended (exit {self.proc.poll()}, stderr "
                        f"{self.proc.stderr.read()!r}) waiting for a line; it saw {self.seen[-10:]}")
        self.seen.append(got)
        return got

    def join(self, nick: str) -> str:
        assert self.line().startswith("* welcome to the chat"), self.seen
        self.send(nick)
        hello = self.line()
        assert hello.startswith(f"* hello {nick};"), hello
        return hello

    def wait_closed_by_server(self) -> None:
        """Bounded: until the server's FIN has come (nc's socket in CLOSE-WAIT). OpenBSD nc
        goes on while its stdin is open; busybox nc would end here."""
        def close_wait() -> bool:
            ss = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Htnp", "state", "close-wait"],
                                capture_output=True, text=True, timeout=WAIT)
            return f"pid={self.proc.pid}," in ss.stdout

        wait_for(close_wait, f"the server closing nc {self.name}'s connection", WAIT, interval=0.1)

    def end_input(self) -> int:
        """Close nc's stdin (Ctrl-D); its exit status (bounded)."""
        self.proc.stdin.close()
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"nc {self.name} still runs {WAIT:.0f} s after its input ended; it saw {self.seen[-10:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass  # (stdin: nc is gone and the pipe broken)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with ChatLab(tmp_path_factory.mktemp("chat")) as lab:
        yield lab


@pytest.fixture
def clients(lab):
    """nc(name) -> a new nc client in the namespace; all of them killed at the end."""
    made = []

    def nc(name):
        made.append(lab.nc(name))
        return made[-1]

    yield nc
    for client in made:
        client.close()


def test_several_nc_clients_chat_at_once(lab, clients):
    alice, bob, carol, dave = (clients(n) for n in ("alice", "bob", "carol", "dave"))
    alice.join("alice")
    assert lab.reported(r"joined as alice$").startswith(f"chat:{PORT} {HOST_IP}:")
    # Nicknames are checked: a taken one (whatever its case) and a bad one get another try.
    assert bob.line().startswith("* welcome to the chat (")
    bob.send("ALICE")
    assert bob.line() == "! nickname ALICE is taken; try again"
    bob.send("b o b")
    assert bob.line().startswith("! bad nickname 'b o b'")
    bob.send(b"bob\r\n")  # CRLF, as telnet sends it
    assert bob.line() == "* hello bob; here: alice"
    assert alice.line() == "* bob joined"
    assert carol.join("carol") == "* hello carol; here: alice, bob"
    assert alice.line() == bob.line() == "* carol joined"
    assert dave.join("dave") == "* hello dave; here: alice, bob, carol"
    assert alice.line() == bob.line() == carol.line() == "* dave joined"

    # One sender's lines reach everyone else in order; the sender gets none of its own.
    burst = [f"line {i} from alice" for i in range(30)]
    alice.send(b"".join(f"{text}\n".encode() for text in burst))
    for other in (bob, carol, dave):
        assert [other.line() for _ in burst] == [f"<alice> {text}" for text in burst]
    # Turns: each line sent once the previous one arrived, so the order is the same for all.
    for speaker, text in ((bob, "hi all"), (carol, "hello bob"), (dave, "/me waves"), (bob, "bye soon")):
        speaker.send(text)
        expected = "* dave waves" if text == "/me waves" else f"<{speaker.name}> {text}"
        for other in (alice, bob, carol, dave):
            if other is not speaker:
                assert other.line() == expected, (other.name, other.seen[-5:])
    # Not UTF-8, a terminal escape: replaced, not passed on.
    carol.send(b"caf\xe9 \x1b[1mbold\r\n")
    assert alice.line() == "<carol> caf\ufffd \ufffd[1mbold"
    assert bob.line() == dave.line() == alice.seen[-1]
    # An over-long line is refused; the client stays.
    dave.send("x" * 1500)
    assert dave.line() == "! line too long (over 1024 bytes): not sent"
    dave.send("/who")
    assert dave.line() == "* here (4): alice, bob, carol, dave"

    # An abrupt disconnect (nc killed) is a leave notice.
    carol.proc.kill()
    for other in (alice, bob, dave):
        assert other.line().startswith("* carol left"), other.seen[-3:]
    lab.reported(rf"^chat:{PORT} {HOST_IP}:\d+ left as carol")
    # /quit: the server says bye and closes (OpenBSD nc ends once its input ends too).
    dave.send("/quit see you")
    assert dave.line() == "* bye"
    dave.wait_closed_by_server()
    assert dave.end_input() == 0
    assert alice.line() == bob.line() == "* dave left (see you)"
    bob.send("/who")
    assert bob.line() == "* here (2): alice, bob"


def test_busybox_nc_in_a_guest_talks_with_an_nc_on_the_host(lab, clients, mnet_vm):
    from guest.wait import wait_in_guest

    host = clients("host")
    host.join("hostnick")
    vm = mnet_vm("chatvm", ip=f"{GUEST_IP}/24", port=SimpleNamespace(socket_path=lab.sockets['guest']))
    # busybox nc ends when either input ends: its stdin is a fifo that a background sleep
    # holds open, so it stops when the server closes the connection.
    r = vm.run("rm -f /tmp/chat.in /tmp/chat.out /tmp/chat.done; mkfifo /tmp/chat.in; "
               "(sleep 600 > /tmp/chat.in & s=$!; "
               f"nc {STACK_IP} {PORT} < /tmp/chat.in > /tmp/chat.out; echo $? > /tmp/chat.done; kill $s) "
               ">/dev/null 2>&1 &")
    assert r.status == 0, r.output
    wait_in_guest(vm, "grep -q '^\\* welcome to the chat' /tmp/chat.out", WAIT, "the chat's welcome in the guest")
    assert vm.run("echo guest > /tmp/chat.in").status == 0
    wait_in_guest(vm, "grep -q '^\\* hello guest; here: hostnick$' /tmp/chat.out", WAIT, "the guest joining")
    assert host.line() == "* guest joined"
    assert vm.run("echo 'hello from the guest' > /tmp/chat.in").status == 0
    assert host.line() == "<guest> hello from the guest"
    host.send("hello guest, from the host kernel")
    wait_in_guest(vm, "grep -q '^<hostnick> hello guest, from the host kernel$' /tmp/chat.out", WAIT,
                  "the host's line in the guest")
    assert vm.run("echo /quit > /tmp/chat.in").status == 0
    wait_in_guest(vm, "[ -s /tmp/chat.done ]", WAIT, "busybox nc ending after /quit")
    assert host.line() == "* guest left"
    out = vm.run("cat /tmp/chat.out /tmp/chat.done").output.splitlines()
    assert out[1:] == ["* hello guest; here: hostnick", "<hostnick> hello guest, from the host kernel", "* bye", "0"], out
