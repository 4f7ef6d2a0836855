"""The order of the tour: set-up, the host kernel's checks while the guest boots, the guest's, the report."""
from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path

from . import chat, dns, echo
from .lab import open_lab
from .report import Report, step

HOST_CHECKS = [
    ("ping", "host: busybox ping", echo.host_ping),
    ("udp echo", "host: socat", echo.host_udp_echo),
    ("tcp echo", "host: nc", echo.host_tcp_echo),
]
GUEST_CHECKS = [
    ("ping", "guest: busybox ping", echo.guest_ping),
    ("udp echo", "guest: socat", echo.guest_udp_echo),
    ("tcp echo", "guest: socat", echo.guest_tcp_echo),
    ("chat", "host: nc + guest: busybox nc", chat.host_and_guest_chat),
]


def services() -> list[str]:
    """What the stack serves, as `mnet stack --serve` spells it."""
    return [f"udp-echo:{echo.ECHO_PORT}", f"tcp-echo:{echo.ECHO_PORT}", f"chat:{chat.CHAT_PORT}"]


def run_tour(args: argparse.Namespace) -> int:
    from guest.image import build_image

    report = Report()
    step("guest image (built once, then cached)")
    image = build_image(progress=lambda line: print(f"    {line}", flush=True))
    with tempfile.TemporaryDirectory(prefix="mnet-demo-") as tmp, ExitStack() as running:
        workdir = Path(tmp)
        try:
            lab = running.enter_context(open_lab(workdir, image, services()))
            for name, client, probe in HOST_CHECKS:
                report.check(name, client, lambda: probe(lab))
            _dns_checks(running, lab, report)
            _guest_checks(lab, report, args.boot_timeout)
        finally:
            running.close()
            _keep_logs(workdir, args.keep_logs)
    step("report")
    print(report.render(), flush=True)
    step("demo " + ("succeeded" if not report.failed else f"had {report.failed} failing check(s)"))
    return 1 if report.failed else 0


def _dns_checks(running: ExitStack, lab, report: Report) -> None:
    try:
        running.enter_context(dns.running_dnsmasq(lab))
    except (OSError, RuntimeError) as exc:
        report.record("dns", "stack: DnsClient -> dnsmasq", False, f"dnsmasq did not start: {exc}")
        return
    report.check("dns", "stack: DnsClient -> dnsmasq", lambda: dns.stack_resolves(lab))


def _guest_checks(lab, report: Report, boot_timeout: float) -> None:
    step(f"guest: waiting for it to finish booting (up to {boot_timeout:.0f} s)")
    try:
        seconds = lab.wait_for_guest(boot_timeout)
    except Exception as exc:   # the guest's checks fail, the report still comes
        report.record("boot", "guest: Linux under QEMU", False, f"did not boot: {str(exc).splitlines()[0]}")
        return
    report.record("boot", "guest: Linux under QEMU", True, f"ready in {seconds:.1f} s")
    for name, client, probe in GUEST_CHECKS:
        report.check(name, client, lambda: probe(lab))


def _keep_logs(workdir: Path, keep: str | None) -> None:
    if not keep:
        return
    dest = Path(keep)
    dest.mkdir(parents=True, exist_ok=True)
    for log in workdir.rglob("*.log"):   # the guest's console, dnsmasq's queries
        (dest / log.name).write_text(log.read_text(errors="replace"))
    print(f"    logs kept in {dest}", flush=True)
