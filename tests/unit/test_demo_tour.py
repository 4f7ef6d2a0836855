"""The demo's tour (mnet/demo/tour.py) without a guest: what it serves, and a guest that
does not boot is one FAIL line and no guest check is tried."""
from pathlib import Path

from mnet.demo import tour
from mnet.demo.certs import DemoPki
from mnet.demo.report import Report
from mnet.services.spec import parse_service


def test_https_is_served_only_with_a_certificate(tmp_path):
    pki = DemoPki(*(tmp_path / name for name in ("ca.crt", "server.crt", "server.key")))
    without = tour.services(tmp_path, None)
    with_pki = tour.services(tmp_path, pki)
    assert [s.split(":")[0] for s in without] == ["udp-echo", "tcp-echo", "http", "chat"]
    assert with_pki[:-1] == without and with_pki[-1].startswith("https:443,cert=")
    for spec in without:
        parse_service(spec)  # each is a valid --serve spelling


def test_https_serves_busybox_wget(tmp_path):
    # busybox's TLS offers no signature algorithms: without this, no shared cipher (docs/http.md)
    pki = DemoPki(*(tmp_path / name for name in ("ca.crt", "server.crt", "server.key")))
    https = tour.services(tmp_path, pki)[-1]
    assert https.startswith("https:") and "sha1_signatures=yes" in https.split(","), https


class GuestThatNeverBoots:
    def wait_for_guest(self, timeout: float) -> float:
        raise TimeoutError(f"guest command channel did not answer PING within {timeout:g}s\nconsole...")


def test_a_guest_that_does_not_boot_is_one_fail_and_no_guest_check_runs():
    report = Report()
    tour._guest_checks(GuestThatNeverBoots(), report, boot_timeout=5)
    assert [(c.name, c.passed) for c in report.checks] == [("boot", False)]
    assert report.checks[0].figure == "did not boot: guest command channel did not answer PING within 5s"
    assert report.failed == 1


class GuestThatFailsEveryCommand:
    def __init__(self) -> None:
        self.commands: list[str] = []
        self.vm = self

    def wait_for_guest(self, timeout: float) -> float:
        return 1.0

    def run(self, command: str, timeout: float):
        from guest.channel import CommandResult

        self.commands.append(command)
        return CommandResult(1, "sh: not today\n")


def test_without_a_certificate_the_guest_https_check_is_a_fail_and_is_not_tried():
    guest = GuestThatFailsEveryCommand()
    report = Report()
    tour._guest_checks(guest, report, boot_timeout=5, https=False)
    https = [c for c in report.checks if c.name == "https"]
    assert [(c.client, c.passed, c.figure) for c in https] == [
        ("guest: busybox wget", False, "no certificate, so no https service")]
    assert not any("https://" in command for command in guest.commands), guest.commands


def test_no_certificate_is_a_fail_for_https(tmp_path, monkeypatch):
    def no_openssl(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory: 'openssl'")

    monkeypatch.setattr(tour, "make_pki", no_openssl)
    report = Report()
    assert tour._make_pki(Path(tmp_path), report) is None
    (check,) = report.checks
    assert (check.name, check.passed) == ("https", False) and "openssl" in check.figure
