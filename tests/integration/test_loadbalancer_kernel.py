"""`mnet stack --serve lb:...` in front of real kernel servers, with curl and nc as clients.

One lab for the module: `mnet switch` and `mnet stack` run as processes, as a
user would run them. The switch has a vhost-user port for the stack and a TAP
port into a namespace this module creates, where the kernel is 10.0.0.254:

  port "stack" vhost-user -> `mnet stack` 10.0.0.9: lb:8080 (round-robin), lb:8081 (least-conn)
  port "host"  TAP        -> namespace: python3 -m http.server on 8001, 8002, 8003, each
                             serving an index.html that names it (b1, b2, b3); curl and nc

The balancers check their backends every 0.5 s.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from support.cli import MnetProcess, Output, start_mnet_stack
from support.waiting import wait_for

pytestmark = pytest.mark.integration

HOST_IP = "10.0.0.254"
STACK_IP = "10.0.0.9"
PORTS = {b"b1": 8001, b"b2": 8002, b"b3": 8003}
WAIT = 15.0


class Lab:
    """The switch and stack processes, the namespace and its http.server backends."""

    def __init__(self, tmp, netns: str) -> None:
        from nicdev.net import netns as ns

        self.tmp, self.netns = tmp, netns
        self.backends: dict[bytes, subprocess.Popen] = {}
        self.stack = self.output = None
        sock = str(tmp / "stack.sock")
        ifname = f"mnlb{os.getpid() % 10000}"
        self.switch = MnetProcess("switch", f"--port=stack=vhost-user:{sock}", f"--port=host=tap:{ifname},netns={netns}")
        try:
            self.switch.expect("switch running")
            ns.set_address(ifname, f"{HOST_IP}/24", netns=netns)
            for tag in PORTS:
                self.start_backend(tag)
            backends = "".join(f",backend={HOST_IP}:{port}" for port in PORTS.values())
            self.stack, self.output = start_mnet_stack(
                "--nic", f"vhost-user:{sock}", "--ip", f"{STACK_IP}/24",
                "--serve", f"lb:8080{backends},check=0.5", "--serve", f"lb:8081{backends},policy=least-conn,check=0.5")
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

    def close(self) -> None:
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
            # Whatever happened to the stack: no backend or switch outlives the module.
            for proc in self.backends.values():
                proc.kill()
                proc.wait(WAIT)
            self.switch.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-lb") as netns:
        lab = Lab(tmp_path_factory.mktemp("lb"), netns)
        try:
            yield lab
        finally:
            lab.close()


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
