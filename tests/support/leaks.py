"""What an integration test module leaves behind on the machine.

A process, a network namespace or a thread that outlives the module that
made it goes on using the machine's two cores (a spinning switch loop, a TCG
guest) or a name another test wants, and makes later tests fail by chance,
far from the cause. The integration conftest takes a `Snapshot` before each
module and, once the module's fixtures are gone, names what is new, removes
it, and fails the module's last test with the list.

Only what is certainly this run's counts, as another run may share the
machine: processes below this one, this process's threads, and namespaces
named by `temporary_netns` for this process (`PREFIX-PID-RANDOM`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

NETNS_DIR = "/run/netns"
# Threads that live as long as the process by design, started by the first user.
PROCESS_THREADS = frozenset({
    "multios-socket-closer",    # closes garbage-collected stack sockets (stack.socket_api)
})
GRACE = 5.0     # seconds for what is already on its way out (a process after SIGTERM, a thread's last turn)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()     # the command name may hold spaces and parentheses
    return fields[0].decode(), int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def descendants(root: int | None = None) -> dict[int, str]:
    """Live (not zombie) processes below `root` (this process): pid -> command line."""
    root = os.getpid() if root is None else root
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[0] != "Z":
                parent[int(name)] = st[1]
    found: dict[int, str] = {}
    for pid in parent:
        p, seen = pid, 0
        while p in parent and seen < 64:
            p, seen = parent[p], seen + 1
            if p == root:
                found[pid] = _cmdline(pid)
                break
    return found


def our_netns() -> set[str]:
    """The namespaces `temporary_netns` made for this process."""
    tag = f"-{os.getpid()}-"
    try:
        return {name for name in os.listdir(NETNS_DIR) if tag in name}
    except FileNotFoundError:
        return set()


@dataclass
class Snapshot:
    processes: dict[int, str] = field(default_factory=descendants)
    netns: set[str] = field(default_factory=our_netns)
    threads: set[threading.Thread] = field(default_factory=lambda: set(threading.enumerate()))

    def left_behind(self) -> list[str]:
        """What is here now and was not at the snapshot, one line each."""
        lines = [f"process {pid}: {cmd}" for pid, cmd in descendants().items() if pid not in self.processes]
        lines += [f"network namespace {n}" for n in sorted(our_netns() - self.netns)]
        lines += [f"thread {t.name!r}" + (" (daemon)" if t.daemon else "")
                  for t in threading.enumerate()
                  if t not in self.threads and t.is_alive() and t.name not in PROCESS_THREADS]
        return lines

    def settle(self, grace: float = GRACE) -> list[str]:
        """`left_behind()` once what is on its way out has had `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            left = self.left_behind()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def clean_up(self) -> None:
        """Remove what is new (a thread cannot be removed: it is only named):
        processes killed, namespaces deleted, so the next module starts on a
        clean machine."""
        for pid in descendants():
            if pid not in self.processes:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name in our_netns() - self.netns:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
