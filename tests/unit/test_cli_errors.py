"""Wrong input to `mnet`: one clear line on stderr, a non-zero status, no
traceback. `mnet` runs as a subprocess, as a user would run it. Nothing here
boots QEMU or needs root: the cases that do are in
tests/integration/test_cli.py."""
from __future__ import annotations

import os
import re
import socket

import pytest

from support.cli import MnetProcess, assert_one_line_error, mnet, path_without


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    """A running `mnet switch` with two vhost-user ports, `a` and `b`."""
    tmp = tmp_path_factory.mktemp("cli-sw")
    paths = {name: str(tmp / f"{name}.sock") for name in ("a", "b")}
    proc = MnetProcess("switch", *(f"--port={name}=vhost-user:{path}" for name, path in paths.items()))
    try:
        proc.expect("switch running")
        yield paths
    finally:
        proc.close()


@pytest.fixture
def stale_socket(tmp_path):
    """A socket file nobody listens on (its process is gone)."""
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    return path


# -- mnet switch -------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    ([], "no ports"),
    (["--port", "bad"], "bad port spec 'bad'"),
    (["--port", "a=foo:x"], "unknown kind 'foo'"),
    (["--port", "a=vhost-user:"], "bad port spec"),
    (["--port", "a=tap:"], "bad port spec"),
    (["--port", "a=stream:/tmp/x.sock", "--port", "a=stream:/tmp/y.sock"], "duplicate port name 'a'"),
    (["--port", "a=dgram:1.2.3.4:99999,remote=1.1.1.1:5"], "bad port '99999'"),
    (["--port", "a=vhost-user:/nonexistent-dir/a.sock"], "cannot listen on /nonexistent-dir/a.sock"),
    (["--port", "a=vhost-user:/tmp/a.sock,fault=stall"], "unknown fault mode 'stall'; modes are stall-tx"),
    (["--port", "a=vhost-user:/tmp/a.sock,fault=delay-used=1h"], "delay-used needs a time with a unit"),
    (["--port", "a=pcap:/nonexistent-dir/x.pcap"], "cannot write /nonexistent-dir/x.pcap"),
    (["--port", "a=stream:/tmp/x.sock", "--ageing", "-1"], "bad --ageing"),
    (["--port", "a=stream:/tmp/x.sock", "--stats-interval", "-1"], "bad --stats-interval"),
    (["--port", "a=stream:/tmp/x.sock", "--trace", "/nonexistent-dir/t.jsonl"],
     "cannot write trace file /nonexistent-dir/t.jsonl"),
])
def test_switch_wrong_input(args, fragment):
    assert_one_line_error(mnet("switch", *args), "switch", fragment)


def test_switch_pcap_to_a_file_it_cannot_write(tmp_path):
    missing = tmp_path / "no" / "x.pcapng"
    r = mnet("switch", "--port", f"a=vhost-user:{tmp_path / 'a.sock'}", "--pcap", str(missing))
    assert_one_line_error(r, "switch", f"bad --pcap: cannot write pcapng file {missing}: No such file or directory")


def test_switch_socket_path_in_use_by_another_switch_then_sigint_summary(tmp_path):
    path = str(tmp_path / "vm0.sock")
    first = MnetProcess("switch", f"--port=vm0=vhost-user:{path}", f"--port=q=stream:{tmp_path / 'q.sock'}")
    try:
        first.expect("switch running")
        r = mnet("switch", f"--port=other=vhost-user:{path}")
        assert_one_line_error(r, "switch", "socket path in use", path)
        assert os.path.exists(path), "the losing switch removed the winner's socket"
        status, out, err = first.interrupt()
    finally:
        first.close()
    assert status == 0, err
    assert "Traceback" not in err, err
    tail = out.split("switch running", 1)[1]
    assert "port vm0: waiting for frontend on " + path in tail, out
    assert "port q: " in tail, out
    assert "switch: forwarded 0, flooded 0" in tail, out
    assert not os.path.exists(path), "the socket file was left behind"


def test_switch_trace_file_records_from_the_start(tmp_path):
    """`--trace FILE`: a front-end's vhost-user messages, from the first one,
    are in the file when the switch stops."""
    from nicdev.virtio.trace import read_trace
    from support.vhost_user_guest import Frontend, GuestNic, GuestRam

    path, trace = str(tmp_path / "vm0.sock"), str(tmp_path / "t.jsonl")
    proc = MnetProcess("switch", f"--port=vm0=vhost-user:{path}", "--trace", trace)
    ram = nic = sock = None
    try:
        proc.expect("switch running")
        ram = GuestRam()
        nic = GuestNic(ram, queue_size=16)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        Frontend(sock).connect(nic)
        sock.close()
        sock = None
        status, out, err = proc.interrupt()
    finally:
        for thing in (sock, nic, ram):
            if thing is not None:
                thing.close()
        proc.close()
    assert status == 0, err
    assert re.search(r"^trace: \d+ records in " + re.escape(trace), out, re.M), out
    records = list(read_trace(trace))
    assert records[0]["kind"] == "header"
    messages = [r["request"] for r in records if r["kind"] == "vhost_msg"]
    assert messages[:3] == ["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES"], messages
    assert {r["port"] for r in records[1:]} == {"vm0"}


def test_switch_missing_namespace():
    from nicdev.net.netns import netns_exists

    assert not netns_exists("mnet-no-such-ns")
    r = mnet("switch", "--port", "h=tap:mnetx0,netns=mnet-no-such-ns")
    assert_one_line_error(r, "switch", "network namespace 'mnet-no-such-ns' does not exist")


# -- mnet vm: options --------------------------------------------------------

VM = ["vm", "--nic", "vhost-user:/tmp/mnet-none.sock", "--ip", "10.0.0.1/24"]


@pytest.mark.parametrize("args, fragment", [
    (["vm", "--nic", "x", "--ip", "10.0.0.1/24"], "bad --nic 'x'"),
    (["vm", "--nic", "tap:mnet0", "--ip", "10.0.0.1/24"], "bad --nic 'tap:mnet0'"),
    (["vm", "--nic", "vhost-user:", "--ip", "10.0.0.1/24"], "bad --nic 'vhost-user:'"),
    (["vm", "--nic", "vhost-user:/tmp/x.sock", "--ip", "10.0.0.1"], "give the prefix length too"),
    (["vm", "--nic", "vhost-user:/tmp/x.sock", "--ip", "300.0.0.1/24"], "bad --ip '300.0.0.1/24'"),
    (["vm", "--nic", "vhost-user:/tmp/x.sock", "--ip", "ten/8"], "bad --ip 'ten/8'"),
    ([*VM, "--gateway", "x"], "bad --gateway 'x'"),
    ([*VM, "--gateway", "10.0.1.1"], "not in 10.0.0.0/24"),
    ([*VM, "--mac", "zz"], "bad --mac"),
    ([*VM, "--mac", "01:00:5e:00:00:01"], "multicast"),
    ([*VM, "--kernel", "/boot/x"], "--kernel and --initrd go together"),
    ([*VM, "--memory", "10"], "bad --memory 10"),
    ([*VM, "--timeout", "0"], "must be positive"),
])
def test_vm_wrong_options(args, fragment):
    assert_one_line_error(mnet(*args), "vm", fragment)


def test_vm_no_socket_at_path(tmp_path):
    path = str(tmp_path / "none.sock")
    r = mnet("vm", "--nic", f"vhost-user:{path}", "--ip", "10.0.0.1/24")
    assert_one_line_error(r, "vm", f"no vhost-user socket at {path}", "mnet switch --port")


def test_vm_stale_socket_nobody_listens(stale_socket):
    r = mnet("vm", "--nic", f"vhost-user:{stale_socket}", "--ip", "10.0.0.1/24")
    assert_one_line_error(r, "vm", f"nothing is listening on {stale_socket}")
    r = mnet("vm", "--nic", f"stream:{stale_socket}", "--ip", "10.0.0.1/24")
    assert_one_line_error(r, "vm", f"nothing is listening on {stale_socket}", "stream:")


def test_vm_path_is_not_a_socket(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    r = mnet("vm", "--nic", f"vhost-user:{path}", "--ip", "10.0.0.1/24")
    assert_one_line_error(r, "vm", "is not a unix socket")


def test_vm_port_that_already_has_a_front_end(switch):
    from nicdev.vhost_user.frontend import VhostUserFrontend

    front = VhostUserFrontend(switch["a"], name="occupant")   # a real front-end on port a
    try:
        r = mnet("vm", "--nic", f"vhost-user:{switch['a']}", "--ip", "10.0.0.1/24")
    finally:
        front.close()
    assert_one_line_error(r, "vm", "hung up at once", "another VM")


def test_vm_missing_kernel(switch, tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x")
    r = mnet("vm", "--nic", f"vhost-user:{switch['b']}", "--ip", "10.0.0.1/24",
             "--kernel", str(tmp_path / "no-vmlinuz"), "--initrd", str(initrd))
    assert_one_line_error(r, "vm", "kernel image", "no-vmlinuz", "does not exist")


def test_vm_missing_qemu(switch, tmp_path):
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"x")
    initrd.write_bytes(b"x")
    env = dict(os.environ, PATH=path_without(tmp_path / "bin", "qemu-system-"))
    assert "python3" in os.listdir(tmp_path / "bin")       # the rest of the PATH is all there
    r = mnet("vm", "--nic", f"vhost-user:{switch['b']}", "--ip", "10.0.0.1/24",
             "--kernel", str(kernel), "--initrd", str(initrd), "--run", "true", env=env)
    assert_one_line_error(r, "vm", "qemu-system-x86_64 not found", "apt-get install qemu-system-x86")


# -- mnet stack / mnet ping ----------------------------------------------------

@pytest.mark.parametrize("command", ["stack", "ping"])
@pytest.mark.parametrize("args, fragment", [
    (["--nic", "x", "--ip", "10.0.0.9/24"], "bad --nic 'x'"),
    (["--nic", "stream:/tmp/x.sock", "--ip", "10.0.0.9/24"], "expected vhost-user:PATH"),
    (["--nic", "vhost-user:/tmp/x.sock", "--ip", "10.0.0.9"], "give the prefix length too"),
    (["--nic", "vhost-user:/tmp/x.sock", "--ip", "10.0.0.999/24"], "bad --ip"),
    (["--nic", "vhost-user:/tmp/x.sock", "--ip", "10.0.0.9/24", "--gateway", "gw"], "bad --gateway 'gw'"),
    (["--nic", "vhost-user:/tmp/x.sock", "--ip", "10.0.0.9/24", "--gateway", "10.9.9.9"],
     "bad --gateway '10.9.9.9': not in 10.0.0.0/24"),
    (["--nic", "vhost-user:/tmp/x.sock", "--ip", "10.0.0.9/24", "--mac", "52:54"], "bad --mac '52:54'"),
])
def test_stack_and_ping_wrong_options(command, args, fragment):
    extra = ["10.0.0.1"] if command == "ping" else []
    assert_one_line_error(mnet(command, *args, *extra), command, fragment)


@pytest.mark.parametrize("command", ["stack", "ping"])
def test_stack_and_ping_without_a_backend(command, tmp_path, stale_socket):
    extra = ["10.0.0.1"] if command == "ping" else []
    missing = str(tmp_path / "none.sock")
    r = mnet(command, "--nic", f"vhost-user:{missing}", "--ip", "10.0.0.9/24", *extra)
    assert_one_line_error(r, command, f"no vhost-user backend listening on {missing}")
    r = mnet(command, "--nic", f"vhost-user:{stale_socket}", "--ip", "10.0.0.9/24", *extra)
    assert_one_line_error(r, command, f"no vhost-user backend listening on {stale_socket}", "refused")


def test_stack_trace_file_it_cannot_write(tmp_path):
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24",
             "--trace", str(tmp_path / "no" / "dir" / "t.trace"))
    assert_one_line_error(r, "stack", "bad --trace: cannot write trace file", "No such file or directory")


@pytest.mark.parametrize("args, fragment", [
    (["--serve", "sctp-echo:7"], "bad --serve 'sctp-echo:7'"),
    (["--serve", "udp-echo:0"], "port must be 1..65535"),
])
def test_stack_bad_service(args, fragment, tmp_path):
    r = mnet("stack", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24", *args)
    assert_one_line_error(r, "stack", fragment)


@pytest.mark.parametrize("args, fragment", [
    (["nohost"], "bad host 'nohost'"),
    (["-c", "0", "10.0.0.1"], "bad -c/-s/-i/-W"),
])
def test_ping_bad_arguments(args, fragment, tmp_path):
    r = mnet("ping", "--nic", f"vhost-user:{tmp_path / 'x.sock'}", "--ip", "10.0.0.9/24", *args)
    assert_one_line_error(r, "ping", fragment)


# -- mnet guest ----------------------------------------------------------------

def test_guest_build_with_a_missing_program():
    r = mnet("guest", "build", "--add", "/nonexistent/prog")
    assert_one_line_error(r, "guest", "program '/nonexistent/prog' not found")


def test_argparse_errors_exit_2_without_traceback():
    # argparse's own usage errors (unknown option, missing required option):
    # one line naming the command and pointing at --help, status 2.
    for args in (["vm", "--ip", "10.0.0.1/24"], ["switch", "--bogus"], ["vm", "--nic", "x", "--ip", "1/1",
                                                                        "--memory", "lots"]):
        r = mnet(*args)
        assert r.returncode == 2, r
        assert_one_line_error(r, args[0], "--help")
        assert re.match(r"mnet( \w+)?: .*\(see mnet( \w+)? --help\)$", r.stderr.strip()), r.stderr


# -- mnet ctl ------------------------------------------------------------------
def test_ctl_without_a_switch_says_so(tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    assert_one_line_error(mnet("ctl", "ports", env=env), "ctl", f"no switch listening in {tmp_path}/mnet",
                          "give --control PATH")
    assert_one_line_error(mnet("ctl", f"--control={tmp_path}/x.sock", "ports"), "ctl",
                          f"no switch listening at {tmp_path}/x.sock")


def test_ctl_usage_mistakes_are_one_line(tmp_path):
    for args, fragment in ((["link", "a"], "usage: mnet ctl link PORT up|down"),
                           (["link", "a", "sideways"], "not 'sideways'"),
                           (["trace", "all", "maybe"], "usage: mnet ctl trace PORT|all on|off"),
                           (["ports", "extra"], "usage: mnet ctl ports")):
        assert_one_line_error(mnet("ctl", f"--control={tmp_path}/x.sock", *args), "ctl", fragment)


def test_ctl_finds_the_one_switch_and_refuses_to_guess_between_two(tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    switches = [MnetProcess("switch", f"--port=a0=vhost-user:{tmp_path}/a0.sock", env=env)]
    try:
        switches[0].expect("switch running")
        r = mnet("ctl", "ports", env=env)
        assert r.returncode == 0 and r.stdout.startswith("a0  vhost-user  link up"), r
        switches.append(MnetProcess("switch", f"--port=a1=vhost-user:{tmp_path}/a1.sock", env=env))
        switches[1].expect("switch running")
        assert_one_line_error(mnet("ctl", "ports", env=env), "ctl", "several switches are running")
    finally:
        for proc in switches:
            proc.close()
    assert os.listdir(tmp_path / "mnet") == []


# -- mnet dns --------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    ([], "give an action: mnet dns lookup"),
    (["lookup", "x.org", "--server", "dns.lan"], "bad --server 'dns.lan'"),
    (["lookup", "x.org", "--server", "10.0.0.1", "--timeout", "0"], "bad --port/--timeout/--attempts"),
    (["lookup", "x.org", "--server", "10.0.0.1", "--ip", "10.0.0.9"], "give the prefix length too"),
])
def test_dns_wrong_options(args, fragment, tmp_path):
    stack_opts = ["--nic", f"vhost-user:{tmp_path / 'x.sock'}"] if args else []
    if args and "--ip" not in args:
        stack_opts += ["--ip", "10.0.0.9/24"]
    assert_one_line_error(mnet("dns", *args, *stack_opts), "dns", fragment)


def test_dns_without_a_backend(tmp_path):
    missing = str(tmp_path / "none.sock")
    r = mnet("dns", "lookup", "x.org", "--server", "10.0.0.1", "--nic", f"vhost-user:{missing}", "--ip", "10.0.0.9/24")
    assert_one_line_error(r, "dns", f"no vhost-user backend listening on {missing}")
