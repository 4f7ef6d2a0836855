"""The file transfer on its two I/O edges: two MultiOS stacks on a lossy
loopback pair, the host kernel's sockets on 127.0.0.1 (through the `mnet
transfer` command), the receiver's files, `--serve udp-file` and the CLI's
one-line errors."""
import hashlib
import io
import random
import re
import subprocess
import threading

import pytest

from mnet.apps.filetransfer import transfer
from mnet.apps.filetransfer.config import TransferConfig
from mnet.apps.filetransfer.endpoints import KernelEndpoint, NothingListens, StackEndpoint
from mnet.apps.filetransfer.report import Progress
from mnet.apps.filetransfer.transfer import TransferError, receive_files, send_file
from mnet.services.errors import ServiceSpecError
from mnet.services.runner import start_service
from mnet.services.spec import parse_service
from stack import Impairment, LoopbackNicPair, Stack
from support.cli import MNET, assert_one_line_error, mnet

WAIT = 60.0
FAST = TransferConfig(give_up=5.0, linger=0.5)


@pytest.fixture
def stacks():
    nic_a, nic_b = LoopbackNicPair()
    a = Stack(nic_a, "10.0.0.1/24").start()
    b = Stack(nic_b, "10.0.0.2/24").start()
    yield a, b
    a.stop()
    b.stop()
    nic_a.close()
    nic_b.close()


def write_file(path, size: int, seed: int = 1) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def receive_in_thread(endpoint, directory, **kw):
    results = []
    thread = threading.Thread(target=lambda: results.extend(receive_files(endpoint, directory, once=True, **kw)))
    thread.start()
    return thread, results


def test_stack_to_stack_through_ten_percent_loss(stacks, tmp_path):
    a, b = stacks
    a.nic.impairment = Impairment(loss=0.1, seed=1)
    b.nic.impairment = Impairment(loss=0.1, seed=2)
    data = write_file(tmp_path / "src.bin", 1_000_000)
    (tmp_path / "out").mkdir()
    with StackEndpoint(b, 6969) as rx, StackEndpoint(a) as tx:
        thread, results = receive_in_thread(rx, tmp_path / "out", config=FAST)
        result = send_file(tx, tmp_path / "src.bin", ("10.0.0.2", 6969), FAST)
        thread.join(WAIT)
    assert not thread.is_alive()
    assert result.matched and result.counters["retransmitted"] > 0
    (received,) = results
    assert received.ok and received.path == tmp_path / "out" / "src.bin" and received.peer[0] == "10.0.0.1"
    assert received.path.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["src.bin"]  # no partial file left


def test_a_mismatch_leaves_no_file_under_the_final_name(stacks, tmp_path, monkeypatch):
    a, b = stacks
    write_file(tmp_path / "src.bin", 50_000)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "src.bin").write_bytes(b"the old file")
    monkeypatch.setattr(transfer, "sha256_of", lambda path: (50_000, hashlib.sha256(b"not it").digest()))
    with StackEndpoint(b, 6970) as rx, StackEndpoint(a) as tx:
        thread, results = receive_in_thread(rx, tmp_path / "out", config=FAST)
        with pytest.raises(TransferError, match="receiver's SHA-256 of the file is"):
            send_file(tx, tmp_path / "src.bin", ("10.0.0.2", 6970), FAST)
        thread.join(WAIT)
    (received,) = results
    assert not received.ok and received.error.startswith("SHA-256 mismatch") and received.path is None
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["src.bin"]
    assert (tmp_path / "out" / "src.bin").read_bytes() == b"the old file"


def test_an_unwritable_directory_aborts_the_transfer_at_both_ends(stacks, tmp_path):
    a, b = stacks
    write_file(tmp_path / "src.bin", 1000)
    with StackEndpoint(b, 6971) as rx, StackEndpoint(a) as tx:
        thread, results = receive_in_thread(rx, tmp_path / "missing", config=FAST)
        with pytest.raises(TransferError, match="the receiver aborted: cannot write src.bin into"):
            send_file(tx, tmp_path / "src.bin", ("10.0.0.2", 6971), FAST)
        thread.join(WAIT)
    (received,) = results
    assert "No such file or directory" in received.error


def test_nothing_listening_is_said_at_once():
    with KernelEndpoint(("127.0.0.1", 0)) as free:
        port = free.local[1]
    with KernelEndpoint() as endpoint, pytest.raises(NothingListens, match=f"nothing listens on 127.0.0.1:{port}"):
        send_file(endpoint, __file__, ("127.0.0.1", port), FAST)


def test_kernel_to_kernel_with_the_mnet_command(tmp_path):
    data = write_file(tmp_path / "big.bin", 3_000_000)
    (tmp_path / "out").mkdir()
    receiver = subprocess.Popen([*MNET, "transfer", "receive", "--kernel", "--bind", "127.0.0.1", "--port", "0",
                                 "--dir", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        line = receiver.stdout.readline()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+), saving into .*\n", line)
        assert match, line + receiver.stderr.read()
        r = mnet("transfer", "send", str(tmp_path / "big.bin"), "--to", f"127.0.0.1:{match[1]}", "--kernel",
                 "--name", "copy.bin", timeout=WAIT)
        out, err = receiver.communicate(timeout=WAIT)
    finally:
        receiver.kill()
    digest = hashlib.sha256(data).hexdigest()
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"sent copy\.bin: 3000000 bytes in [\d.]+ s \([\d.]+ MB/s\); \d+ datagrams sent, "
                        rf"\d+ retransmitted, \d+ timeouts; sha256 {digest} match\n", r.stdout), r.stdout
    assert receiver.returncode == 0, err
    assert re.fullmatch(rf"received copy\.bin from 127\.0\.0\.1:\d+ into .*/out/copy\.bin: 3000000 bytes .*"
                        rf"sha256 {digest} match\n", out), out
    assert (tmp_path / "out" / "copy.bin").read_bytes() == data


@pytest.mark.parametrize("args, fragments", [
    (["transfer"], ["give an action"]),
    (["transfer", "send", "setup.py", "--to", "10.0.0.1:80"], ["either --nic", "or --kernel"]),
    (["transfer", "send", "setup.py", "--to", "10.0.0.1:80", "--kernel", "--ip", "10.0.0.2/24"], ["either --nic"]),
    (["transfer", "send", "setup.py", "--to", "10.0.0.1", "--kernel"], ["bad --to '10.0.0.1'"]),
    (["transfer", "send", "setup.py", "--to", "host:99999", "--kernel"], ["bad --to"]),
    (["transfer", "send", "no-such-file", "--to", "10.0.0.1:80", "--kernel"], ["cannot send 'no-such-file'"]),
    (["transfer", "send", "setup.py", "--to", "10.0.0.1:80", "--kernel", "--window", "0"], ["window must be"]),
    (["transfer", "send", "setup.py", "--to", "10.0.0.1:80", "--kernel", "--chunk", "1500"], ["chunk size must be"]),
    (["transfer", "receive", "--port", "7", "--dir", "no-such-dir", "--kernel"], ["bad --dir 'no-such-dir'"]),
    (["transfer", "receive", "--port", "70000", "--dir", ".", "--nic", "vhost-user:/x", "--ip", "10.0.0.2/24"],
     ["bad --port 70000"]),
    (["transfer", "receive", "--port", "7", "--dir", ".", "--nic", "vhost-user:/x"], ["needs both --nic"]),
])
def test_cli_mistakes_are_one_line(args, fragments):
    assert_one_line_error(mnet(*args), "transfer", *fragments)


def test_serve_spec_needs_an_existing_directory(tmp_path):
    assert parse_service(f"udp-file:69,dir={tmp_path}").option("dir") == str(tmp_path)
    with pytest.raises(ServiceSpecError, match="udp-file needs dir=DIR, as in udp-file:69,dir=DIR"):
        parse_service("udp-file:69")
    with pytest.raises(ServiceSpecError, match="is not a directory"):
        parse_service(f"udp-file:69,dir={tmp_path}/nope")


def test_serve_udp_file_receives_several_files(stacks, tmp_path):
    a, b = stacks
    (tmp_path / "out").mkdir()
    lines = []
    stopping = threading.Event()
    thread = start_service(b, parse_service(f"udp-file:69,dir={tmp_path / 'out'}"), stopping, lines.append)
    try:
        for k in range(2):
            data = write_file(tmp_path / f"f{k}", 30_000 * (k + 1), seed=k)
            with StackEndpoint(a) as tx:
                assert send_file(tx, tmp_path / f"f{k}", ("10.0.0.2", 69), FAST).matched
            assert (tmp_path / "out" / f"f{k}").read_bytes() == data
    finally:
        stopping.set()
        thread.join(WAIT)
    assert len(lines) == 2 and all(re.match(r"udp-file:69 received f\d from 10\.0\.0\.1:\d+ into ", x) for x in lines)


def test_an_interrupted_sender_tells_the_receiver_which_removes_the_partial_file(stacks, tmp_path):
    a, b = stacks
    write_file(tmp_path / "src.bin", 2_000_000)
    (tmp_path / "out").mkdir()

    def interrupt_halfway(sender, now):
        if sender.acked_bytes > 200_000:
            raise KeyboardInterrupt

    with StackEndpoint(b, 6972) as rx, StackEndpoint(a) as tx:
        thread, results = receive_in_thread(rx, tmp_path / "out", config=FAST)
        with pytest.raises(KeyboardInterrupt):
            send_file(tx, tmp_path / "src.bin", ("10.0.0.2", 6972), FAST, progress=interrupt_halfway)
        thread.join(WAIT)
    (received,) = results
    assert received.error == "the sender aborted: the sender stopped: KeyboardInterrupt"
    assert list((tmp_path / "out").iterdir()) == []


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_the_progress_line(tty):
    stream = FakeStream(tty)
    bar = Progress(stream)
    bar.show("sending f", 100, 1000, "0 retransmitted", started=10.0, now=10.5)
    assert stream.getvalue() == ""  # nothing in the first second
    bar.show("sending f", 2_000_000, 4_000_000, "3 retransmitted", started=10.0, now=12.0)
    bar.show("sending f", 2_100_000, 4_000_000, "3 retransmitted", started=10.0, now=12.1)  # too soon
    bar.end()
    line = "sending f: 2000000/4000000 bytes (50 %), 1.00 MB/s, 3 retransmitted"
    assert stream.getvalue() == (f"\r{line}\x1b[K\n" if tty else f"{line}\n")


def test_a_peer_nobody_answers_for_gives_up_with_a_clear_error(stacks, tmp_path):
    a, _ = stacks
    write_file(tmp_path / "src.bin", 1000)
    config = TransferConfig(give_up=1.5, initial_rto=0.3, min_rto=0.2)
    with StackEndpoint(a) as tx, pytest.raises(TransferError) as err:
        send_file(tx, tmp_path / "src.bin", ("10.0.0.77", 6969), config)  # no ARP answer: unreachable
    assert str(err.value).startswith("no progress for 1.5 s waiting for an answer to START (is a receiver listening")
