"""The demo's report (mnet/demo/report.py): a failing or raising check is a FAIL line with
its reason, the tour goes on, and the count says so."""
from mnet.demo.report import CheckFailed, Report


def test_checks_pass_fail_and_raise_into_one_line_each(capsys):
    report = Report()
    report.check("udp echo", "host: socat", lambda: "36 bytes back")
    report.check("tcp echo", "host: nc", lambda: (_ for _ in ()).throw(CheckFailed("12 of 100 bytes back")))
    report.check("dns", "stack: DnsClient", lambda: 1 / 0)
    report.record("boot", "guest", False, "did not boot: timeout")
    lines = report.render().splitlines()
    assert lines == [
        "PASS  udp echo  host: socat       36 bytes back",
        "FAIL  tcp echo  host: nc          12 of 100 bytes back",
        "FAIL  dns       stack: DnsClient  ZeroDivisionError: division by zero",
        "FAIL  boot      guest             did not boot: timeout",
        "1 of 4 checks passed",
    ]
    assert report.failed == 3
    assert "==> tcp echo: host: nc" in capsys.readouterr().out  # a progress line per check


def test_a_check_without_a_figure_gets_its_time():
    report = Report()
    check = report.check("ping", "host", lambda: "")
    assert check.passed and check.figure.endswith(" s")
