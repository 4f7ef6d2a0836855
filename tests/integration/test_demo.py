"""`mnet demo` is the project's tour: it must run end to end, every check of its report passing."""
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

# (check, client) of every line the report must have, in this order.
EXPECTED = [
    ("ping", "host: busybox ping"),
    ("udp echo", "host: socat"),
    ("tcp echo", "host: nc"),
    ("http", "host: curl"),
    ("https", "host: curl --cacert"),
    ("dns", "stack: DnsClient -> dnsmasq"),
    ("boot", "guest: Linux under QEMU"),
    ("ping", "guest: busybox ping"),
    ("udp echo", "guest: socat"),
    ("tcp echo", "guest: socat"),
    ("http", "guest: busybox wget"),
    ("https", "guest: busybox wget"),
    ("chat", "host: nc + guest: busybox nc"),
]
REPORT_LINE = re.compile(r"^(PASS|FAIL)  (.+?) {2,}(.+?) {2,}(\S.*)$")


@pytest.fixture(scope="module")
def demo(guest_image):
    proc = subprocess.Popen([sys.executable, "-m", "mnet.cli.main", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"mnet demo still running after 600 s:\n{out[-4000:]}")
    return proc.pid, proc.returncode, out


def report_of(out: str) -> list[tuple[str, str, str, str]]:
    tail = out.split("==> report\n", 1)[-1]
    return [m.groups() for m in map(REPORT_LINE.match, tail.splitlines()) if m]


def test_demo_runs_end_to_end(demo):
    pid, status, out = demo
    assert status == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    for expected in ("3 packets received", "hello MultiOS, from the guest", "hello MultiOS, from the host kernel",
                     "hello from the MultiOS stack over a Python virtio-net device", "<guest> hello from the guest",
                     "==> demo succeeded"):
        assert expected in out, f"{expected!r} missing from the demo's output:\n{out[-4000:]}"


def test_every_check_of_the_report_passes_with_a_figure(demo):
    pid, status, out = demo
    lines = report_of(out)
    assert [(check, client) for _, check, client, _ in lines] == EXPECTED, out[-4000:]
    for verdict, check, client, figure in lines:
        assert verdict == "PASS", f"{check} ({client}): {figure}\n{out[-4000:]}"
        assert re.search(r"\d", figure), f"{check} ({client}) has no figure: {figure!r}"
    assert f"\n{len(EXPECTED)} of {len(EXPECTED)} checks passed\n" in out, out[-2000:]


def test_the_namespace_is_gone_afterwards(demo):
    pid, status, out = demo
    made = re.search(r"^==> network namespace (mnet-demo-\d+-[0-9a-f]+) ", out, re.M)
    assert made and made[1].startswith(f"mnet-demo-{pid}-"), out[:2000]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert made[1] not in listed, listed
