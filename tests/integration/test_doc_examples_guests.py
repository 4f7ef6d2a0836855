"""The ```python blocks of README.md and docs/*.md marked ``<!-- doc-test: integration -->``:
pytest modules that use the ``mnet`` plugin's fixtures (QEMU guests, DPDK...), each run by
pytest as a user would run it, in an empty directory; and those marked
``<!-- doc-test: integration, setup=NAME -->``: programs run by python in an empty directory
once the set-up NAME (doc_blocks.SETUPS; a ``setup_NAME`` fixture here) is in place.
The convention: tests/support/doc_blocks.py."""
import subprocess
import sys

import pytest

from support.cli import MnetProcess
from support.doc_blocks import SETUPS, DocBlock, all_blocks

pytestmark = pytest.mark.integration

INTEGRATION = [b for b in all_blocks() if b.kind == "integration" and not b.setup]
PROGRAMS = [b for b in all_blocks() if b.kind == "integration" and b.setup]
RUN_TIMEOUT = 600.0  # seconds; a bound (a guest boots in 6-15 s under TCG), not a measurement

LAB_NETNS = "lab"
LAB_CONTROL = "/run/mnet/switch-4242.sock"
LAB_VHOST_USER = "/run/mnet/vm0.sock"
LAB_TAP = "lab0"
LAB_KERNEL_IP = "10.0.0.1/24"


@pytest.mark.parametrize("block", INTEGRATION, ids=[b.id for b in INTEGRATION])
def test_the_example_passes(block: DocBlock, tmp_path):
    assert "def test_" in block.code, f"{block.id}: an integration block is a pytest module"
    (tmp_path / "test_doc_example.py").write_text(block.code)
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                               "test_doc_example.py"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {RUN_TIMEOUT:.0f} s")
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("block", PROGRAMS, ids=[b.id for b in PROGRAMS])
def test_the_example_program_runs(block: DocBlock, tmp_path, request):
    request.getfixturevalue(f"setup_{block.setup}")
    (tmp_path / "example.py").write_text(block.code)
    try:
        done = subprocess.run([sys.executable, "-X", "dev", "example.py"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {RUN_TIMEOUT:.0f} s")
    print(done.stdout[-3000:])
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "ResourceWarning" not in done.stderr, f"{block.id} leaves something unclosed:\n{done.stderr[-3000:]}"


def test_every_setup_has_its_fixture():
    assert all(f"setup_{name}" in globals() for name in SETUPS), sorted(SETUPS)


@pytest.fixture
def setup_none():
    return None


@pytest.fixture
def setup_lab():
    """SETUPS["lab"]: a namespace `lab`, and `mnet switch` with its control socket where the docs say."""
    from nicdev.net import netns as ns

    if ns.netns_exists(LAB_NETNS):
        pytest.fail(f"a network namespace {LAB_NETNS!r} is there already (left by someone else?): "
                    f"`ip netns del {LAB_NETNS}` if it is not in use")
    ns.create_netns(LAB_NETNS)
    switch = None
    try:
        switch = MnetProcess("switch", "--control", LAB_CONTROL, "--port", f"vm=vhost-user:{LAB_VHOST_USER}",
                             "--port", f"host=tap:{LAB_TAP},netns={LAB_NETNS}")
        switch.expect(f"control socket {LAB_CONTROL}")
        ns.set_address(LAB_TAP, LAB_KERNEL_IP, netns=LAB_NETNS)
        ns.link_up("lo", netns=LAB_NETNS)
        yield
    finally:
        if switch is not None:
            switch.close()
            print(switch.out.decode(errors="replace")[-3000:], switch.err.decode(errors="replace")[-2000:])
        ns.remove_netns(LAB_NETNS)


@pytest.fixture
def setup_trace(tmp_path, mnet_switch, mnet_vm, mnet_trace):
    """SETUPS["trace"]: ring.trace in tmp_path, recorded as the test in docs/tracing.md records it."""
    from stack import Stack
    from stack.drivers import VirtioNetNic

    nic = VirtioNetNic(mnet_switch.vhost_user_port("stack").socket_path, timeout=30)
    stack = Stack(nic, "10.0.0.9/24").start()
    try:
        vm = mnet_vm("vm0", ip="10.0.0.1/24")
        r = vm.run("ping -c 5 -i 0.2 -w 20 10.0.0.9", timeout=40)
        assert r.status == 0 and "5 packets received" in r.output, r.output
    finally:
        stack.stop()
        nic.close()
    mnet_trace.stop()
    assert mnet_trace.path == str(tmp_path / "ring.trace")  # where the program looks for it
    return mnet_trace.path
