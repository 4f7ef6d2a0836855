"""Chat: the host kernel's nc and the guest's busybox nc in one room of the stack's chat service.

Each waits for what the other said before it speaks (bounded waits), so the
check shows both ways: the host sees the guest join and its line, the guest
sees the host's line and that it left.
"""
from __future__ import annotations

import queue
import threading
import time

from .lab import STACK_IP
from .report import CheckFailed, detail

CHAT_PORT = 7000
WAIT = 30.0          # seconds for each expected line (the guest's CPU is emulated)
HOST_LINE = "hello from the host kernel"
GUEST_LINE = "hello from the guest"

# busybox sh in the guest: nickname, then speak once the host has spoken, leave once it has left.
GUEST_SCRIPT = f"""
wait_for() {{ i=0; while ! grep -q "$1" /tmp/chat.out 2>/dev/null; do
    usleep 100000; i=$((i+1)); [ $i -lt {int(WAIT * 10)} ] || return 1; done; }}
( echo guest
  wait_for '<host> {HOST_LINE}' && echo '{GUEST_LINE}'
  wait_for '[*] host left'
  echo /quit ) | nc {STACK_IP} {CHAT_PORT} > /tmp/chat.out 2>&1
cat /tmp/chat.out
"""


class HostClient:
    """netcat-openbsd in the namespace; its lines come through a queue, read with a deadline."""

    def __init__(self, lab) -> None:
        self.proc = lab.host_process(["nc", STACK_IP, str(CHAT_PORT)])
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, name="chat-host-nc", daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def say(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(text):
                return line
        raise CheckFailed(f"the host's nc did not get {text!r} within {WAIT:.0f} s; it got {self.seen[-4:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)


def host_and_guest_chat(lab) -> str:
    started = time.monotonic()
    host = HostClient(lab)
    guest_result: list = []
    try:
        host.wait_for("* welcome to the chat")
        host.say("host")
        host.wait_for("* hello host")
        guest = threading.Thread(target=lambda: guest_result.append(lab.vm.run(GUEST_SCRIPT, timeout=4 * WAIT)),
                                 name="chat-guest", daemon=True)
        guest.start()
        detail(host.wait_for("* guest joined"))
        host.say(HOST_LINE)
        detail(host.wait_for(f"<guest> {GUEST_LINE}"))
        host.say("/quit")
        host.wait_for("* bye")
        guest.join(4 * WAIT + 10)
    finally:
        host.close()
    if not guest_result:
        raise CheckFailed("the guest's nc did not finish")
    output = guest_result[0].output
    detail("guest saw: " + " | ".join(output.strip().splitlines()[1:]))
    for want in (f"<host> {HOST_LINE}", "* host left", "* bye"):
        if want not in output:
            raise CheckFailed(f"the guest's nc did not get {want!r}: {output.strip()[-300:]!r}")
    return f"2 clients, each saw the other's line and notices, in {time.monotonic() - started:.2f} s"
