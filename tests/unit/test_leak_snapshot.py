"""The integration suite's check for what a module leaves behind (tests/support/leaks.py)."""
import subprocess
import threading

from support.leaks import Snapshot, descendants


def test_a_process_started_after_the_snapshot_is_named_and_killed():
    before = Snapshot()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert proc.pid in descendants()
        assert f"process {proc.pid}: sleep 60" in before.settle(grace=0.1)
        before.clean_up()
        assert proc.wait(5) == -9
        assert before.left_behind() == []
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_ends_within_the_grace_is_not_a_leak():
    before = Snapshot()
    proc = subprocess.Popen(["sleep", "0.2"])
    try:
        assert before.settle(grace=5) == []
    finally:
        proc.wait()


def test_a_grandchild_counts_and_older_processes_do_not():
    older = subprocess.Popen(["sleep", "60"])
    before = Snapshot()
    shell = subprocess.Popen(["sh", "-c", "sleep 61 & wait"])
    try:
        def grandchild():
            return [pid for pid, cmd in descendants().items() if cmd == "sleep 61"]
        for _ in range(200):
            if grandchild():
                break
            threading.Event().wait(0.01)
        left = before.left_behind()
        assert any(line.endswith("sleep 61") for line in left), left
        assert not any(line.startswith(f"process {older.pid}:") for line in left), left
        before.clean_up()
        shell.wait(5)
    finally:
        for p in (older, shell):
            p.kill()
            p.wait()


def test_a_thread_still_running_is_named():
    before = Snapshot()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="left-running", daemon=True)
    t.start()
    try:
        assert before.left_behind() == ["thread 'left-running' (daemon)"]
    finally:
        stop.set()
        t.join()
    assert before.settle(grace=1) == []
