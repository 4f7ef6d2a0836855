"""`mnet stack --serve lb:...` in front of real kernel servers, with curl and nc as clients.

One lab for the module: `mnet switch` and `mnet stack` run as processes, as a
user would run them. The switch has a vhost-user port for the stack and a TAP
port into a namespace this module creates, where the kernel is 10.0.0.254:

  port "stack" vhost-user -> `mnet stack` 10.0.0.9: lb:8080 (round-robin), lb:8081 (least-conn)
  port "host"  TAP        -> namespace: python3 -m http.server on 8001, 8002, 8003, each
                             serving an index.html that names it (b1, b2, b3); curl and nc;
                             an echo server on 8004 the test can make refuse connections

The first two balancers check their backends every 0.5 s. A third, lb:8082
(fall=2, check=3, idle=1), has the echo server on 8004 as its one backend.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from support.cli import Output, start_mnet_stack
from support.kernel_peer import KernelPeerSwitchProcessLab
from support.waiting import wait_for

pytestmark = pytest.mark.integration

HOST_IP = "10.0.0.254"
STACK_IP = "10.0.0.9"
PORTS = {b"b1": 8001, b"b2": 8002, b"b3": 8003}
FLAP_PORT = 8004
WAIT = 15.0

# An echo server that, told "refuse" on stdin, closes its listener (connections are refused) and,
# told "listen", listens again; it says what it did, and "accepted PORT" / "closed PORT BYTES" for
# each connection (the balancer's health checks are connections too).
FLAP_BACKEND = """
import selectors, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
sel = selectors.DefaultSelector()
def listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ, "listener")
    return s
listener = listen()
sel.register(sys.stdin, selectors.EVENT_READ, "command")
counts = {}
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "command":
            command = sys.stdin.readline().strip()
            if not command:
                sys.exit(0)
            if command == "refuse":
                sel.unregister(listener)
                listener.close()
            else:
                listener = listen()
            print(command, flush=True)
        elif key.data == "listener":
            conn, peer = listener.accept()
            counts[conn] = 0
            sel.register(conn, selectors.EVENT_READ, peer[1])
            print("accepted", peer[1], flush=True)
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if data:
                key.fileobj.sendall(data)
                counts[key.fileobj] += len(data)
            else:
                sel.unregister(key.fileobj)
                print("closed", key.data, counts.pop(key.fileobj), flush=True)
                key.fileobj.close()
"""


class Lab(KernelPeerSwitchProcessLab):
    """The switch and stack processes, the namespace and its http.server backends."""

    def __init__(self, tmp) -> None:
        super().__init__(tmp, "lb", host_ips=(HOST_IP,), vhost_ports=("stack",))
        self.backends: dict[bytes, subprocess.Popen] = {}
        self.stack = self.output = self.flap = None
        sock = self.sockets["stack"]
        self.own(self, Lab.stop_servers)  # registered after the switch: stopped before it
        try:
            for tag in PORTS:
                self.start_backend(tag)
            self.flap = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", FLAP_BACKEND,
                                          HOST_IP, str(FLAP_PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
            self.flap_output = Output(self.flap)
            self.flap_output.until(r"^ready$", WAIT)
            backends = "".join(f",backend={HOST_IP}:{port}" for port in PORTS.values())
            self.stack, self.output = start_mnet_stack(
                "--nic", f"vhost-user:{sock}", "--ip", f"{STACK_IP}/24",
                "--serve", f"lb:8080{backends},check=0.5", "--serve", f"lb:8081{backends},policy=least-conn,check=0.5",
                "--serve", f"lb:8082,backend={HOST_IP}:{FLAP_PORT},fall=2,check=3,idle=1")
            self.output.until(r"^stack up: ")
        except BaseException:
            self.close()
            raise

    def start_backend(self, tag: bytes) -> None:
        """python3 -m http.server for backend `tag`, serving an index.html that says its tag."""
        root = self.tmp / tag.decode()
        root.mkdir(exist_ok=True)
        (root / "index.html").write_bytes(tag + b"\n")
        port = PORTS[tag]
        self.backends[tag] = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "http.server", str(port), "--bind", HOST_IP,
             "--directory", str(root)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.listening(port), f"http.server listening on port {port}", WAIT)

    def kill_backend(self, tag: bytes) -> None:
        """SIGKILL (`ip netns exec` execs it, so this is http.server itself); returns once it is gone."""
        proc = self.backends.pop(tag)
        proc.kill()
        proc.wait(WAIT)
        assert not self.listening(PORTS[tag])

    def listening(self, port: int) -> bool:
        ss = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Hltn", f"sport = :{port}"],
                            capture_output=True, text=True, timeout=WAIT)
        return bool(ss.stdout.strip())

    def curl(self, port: int, count: int) -> list[bytes]:
        """`count` GETs in one curl (a new connection each: http.server answers HTTP/1.0); the tags."""
        r = subprocess.run(["ip", "netns", "exec", self.netns, "curl", "-sS", "--max-time", "10",
                            *[f"http://{STACK_IP}:{port}/"] * count], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.split()

    def stop_servers(self) -> None:
        try:
            if self.stack is not None and self.stack.poll() is None:
                self.stack.send_signal(signal.SIGINT)
                try:
                    out, err = self.output.finish(timeout=30)
                except subprocess.TimeoutExpired:
                    self.stack.kill()          # (and the error says it did not stop)
                    self.stack.wait(5)
                    raise
                print("\n".join(line for line in out.splitlines() if " is " in line or "backends" in line
                                or "  10." in line), err[-2000:])
        finally:
            # Whatever happened to the stack: no backend outlives the module (the switch
            # and the namespace are the lab's, undone after this in any case).
            for proc in self.backends.values():
                proc.kill()
                proc.wait(WAIT)
            if self.flap is not None:
                self.flap.kill()
                self.flap.wait(WAIT)
                self.flap.stdin.close()
                self.flap.stdout.close()

    def flap_command(self, command: str) -> None:
        """Tell the echo server on FLAP_PORT to "refuse" or "listen"; returns once it did."""
        self.flap.stdin.write(command + "\n")
        self.flap.stdin.flush()
        self.flap_output.until(rf"^{command}$", WAIT)

    def flap_row(self) -> list[str]:
        """lb:8082's row for its backend in the table SIGUSR1 prints: backend, state, active, connections,
        failures, sent, received."""
        self.stack.send_signal(signal.SIGUSR1)
        self.output.until(r"^lb:8082 backends ", WAIT)
        return self.output.until(rf"^  {HOST_IP}:{FLAP_PORT} ", WAIT)[-1].split()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(tmp_path_factory.mktemp("lb")) as lab:
        yield lab


def test_round_robin_gives_curl_each_backend_in_turn(lab):
    tags = lab.curl(8080, 9)
    assert Counter(tags) == {b"b1": 3, b"b2": 3, b"b3": 3}, tags
    assert all(tags[k] == tags[k % 3] for k in range(9)), tags  # in turn, wherever the turn started


def test_least_conn_sends_curl_to_the_backend_nc_leaves_free(lab):
    held = []
    try:
        for _ in range(2):  # two idle connections (nc sends nothing until its stdin ends): on two backends
            held.append(subprocess.Popen(["ip", "netns", "exec", lab.netns, "nc", "-N", STACK_IP, "8081"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        busy = {int(re.search(r"-> [\d.]+:(\d+) relaying", lab.output.until(r"^lb:8081 .* relaying$")[-1]).group(1))
                for _ in held}
        assert len(busy) == 2, busy
        (free,) = [tag for tag, port in PORTS.items() if port not in busy]
        for _ in range(6):
            assert lab.curl(8081, 1) == [free]
            # The balancer learns that curl's connection ended from curl's FIN, which
            # can reach it after the next connection is accepted (one turn of its
            # loop on a loaded machine): until then the free backend counts 1 like
            # the busy ones. The next request goes once the end is reported.
            lab.output.until(rf"^lb:8081 .* -> {HOST_IP}:{PORTS[free]} closed: ")
    finally:
        for proc in held:
            proc.stdin.close()
            proc.wait(WAIT)


# Each request of the client loop is one line: its start (wall clock), curl's status and the answer.
CLIENT_LOOP = """
while [ ! -e "$1" ]; do
    t=$(date +%s.%N)
    out=$(curl -sS --max-time 10 "$2" 2>&1)
    echo "$t $? $out"
done
"""


class ClientLoop:
    """curl in the namespace, one request after the other, until stopped; its lines parsed."""

    def __init__(self, lab, url: str) -> None:
        self.stop_file = lab.tmp / "stop-clients"
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.netns, "sh", "-c", CLIENT_LOOP, "loop",
                                      str(self.stop_file), url], stdout=subprocess.PIPE, text=True)
        self.output = Output(self.proc)
        self.results: list[tuple[float, int, str]] = []

    def answered_after(self, since: float, tags=None) -> int:
        """Requests started after `since` (and answered with one of `tags`) so far."""
        self._take()
        return sum(1 for t, rc, out in self.results if t > since and (tags is None or out in tags))

    def _take(self) -> None:
        while not self.output.lines.empty():
            line = self.output.lines.get()
            if line is not None:
                start, rc, out = (line.rstrip("\n").split(" ", 2) + [""])[:3]
                self.results.append((float(start), int(rc), out))

    def stop(self) -> list[tuple[float, int, str]]:
        self.stop_file.touch()
        self.proc.wait(WAIT + 10)
        self._take()
        return self.results


def test_a_backend_killed_while_clients_connect_loses_no_new_connection(lab):
    loop = ClientLoop(lab, f"http://{STACK_IP}:8080/")
    try:
        wait_for(lambda: loop.answered_after(0, {"b1", "b2", "b3"}) >= 6, "the client loop to get answers", 60)
        lab.kill_backend(b"b2")
        killed = time.time()  # every request started from now on must be answered
        lab.output.until(rf"^lb:8080 backend {HOST_IP}:8002 is down: ", WAIT)
        wait_for(lambda: loop.answered_after(killed) >= 10, "10 requests after the kill", 60)
        restarted = time.time()  # (before: once listening, it may be up and chosen before start_backend returns)
        lab.start_backend(b"b2")
        lab.output.until(rf"^lb:8080 backend {HOST_IP}:8002 is up$", WAIT)
        wait_for(lambda: loop.answered_after(restarted, {"b2"}) >= 1, "b2 to answer again", 60)
    finally:
        results = loop.stop()
    after = [r for r in results if r[0] > killed]
    assert after and all(rc == 0 and out in ("b1", "b2", "b3") for _, rc, out in after), after
    assert not [r for r in after if r[0] < restarted and r[2] == "b2"]  # (b2 was dead then)
    # Only a request already relayed to b2 when it died may fail: the loop has one at a time.
    assert sum(1 for _, rc, _ in results if rc != 0) <= 1, results
    lab.stack.send_signal(signal.SIGUSR1)
    table = "".join(lab.output.until(rf"^  {HOST_IP}:8003 ")[-4:])
    assert re.search(rf"^  {HOST_IP}:8002 +up +0 +\d+ +[1-9]\d* ", table, re.M), table  # it failed, and is back


# A kernel client: connects through lb:8082, has "hello" echoed, then says nothing; prints how its
# connection ended ("eof" for a FIN, "reset") within its bound.
QUIET_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(b"hello\\n")
got = b""
while got != b"hello\\n":
    got += c.recv(100)
try:
    print("eof" if c.recv(100) == b"" else "data")
except ConnectionResetError:
    print("reset")
"""


def test_with_fall_2_a_backend_that_misses_one_check_is_not_marked_down(lab):
    failures = int(lab.flap_row()[4])
    lab.flap_command("refuse")
    try:
        # One check fails (counted) within `check`; the next comes 3 s after it started.
        wait_for(lambda: int(lab.flap_row()[4]) > failures, "a failed health check of the backend to be counted", WAIT)
    finally:
        lab.flap_command("listen")
    lab.flap_output.until(r"^accepted \d+$", WAIT)  # the next check connected
    row = lab.flap_row()
    assert row[1] == "up" and int(row[4]) == failures + 1, row
    assert not [line for line in lab.output.seen if line.startswith(f"lb:8082 backend {HOST_IP}:{FLAP_PORT} is down")]


def test_an_idle_relayed_connection_is_closed_on_both_sides(lab):
    client = subprocess.run(["ip", "netns", "exec", lab.netns, sys.executable, "-c", QUIET_CLIENT, STACK_IP, "8082",
                             str(WAIT)], capture_output=True, text=True, timeout=WAIT + 10)
    assert client.returncode == 0 and client.stdout == "eof\n", (client.stdout, client.stderr)
    lab.output.until(r"^lb:8082 [\d.:]+ -> [\d.:]+ closed: idle for 1 s, 6 bytes to the backend, 6 back$", WAIT)
    lab.flap_output.until(r"^closed \d+ 6$", WAIT)  # the backend's side was closed too (the relayed connection)
    lab.flap_row()
    assert lab.output.until(r"^  closed after 1 s idle: ", WAIT)[-1] == "  closed after 1 s idle: 1\n"
