"""The order of the tour: set-up, the host kernel's checks while the guest boots, the guest's, the report."""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from . import chat, dns, echo, web
from .certs import DemoPki, make_pki
from .lab import STACK_IP, open_lab
from .report import Report, detail, step

HOST_CHECKS = [
    ("ping", "host: busybox ping", echo.host_ping),
    ("udp echo", "host: socat", echo.host_udp_echo),
    ("tcp echo", "host: nc", echo.host_tcp_echo),
    ("http", "host: curl", web.host_http),
]
HTTPS_CHECK = ("https", "host: curl --cacert", web.host_https)
GUEST_HTTPS_CHECK = ("https", "guest: busybox wget", web.guest_https)
GUEST_CHECKS = [
    ("ping", "guest: busybox ping", echo.guest_ping),
    ("udp echo", "guest: socat", echo.guest_udp_echo),
    ("tcp echo", "guest: socat", echo.guest_tcp_echo),
    ("http", "guest: busybox wget", web.guest_http),
    GUEST_HTTPS_CHECK,
    ("chat", "host: nc + guest: busybox nc", chat.host_and_guest_chat),
]


def services(site: Path, pki: DemoPki | None) -> list[str]:
    """What the stack serves, as `mnet stack --serve` spells it (https only with a certificate; with
    sha1_signatures=yes, without which busybox wget's TLS finds no shared cipher: docs/http.md)."""
    served = [f"udp-echo:{echo.ECHO_PORT}", f"tcp-echo:{echo.ECHO_PORT}", f"http:{web.HTTP_PORT},root={site}",
              f"chat:{chat.CHAT_PORT}"]
    if pki is not None:
        served.append(f"https:{web.HTTPS_PORT},cert={pki.cert_file},key={pki.key_file},root={site},"
                      "sha1_signatures=yes")
    return served


def _make_pki(workdir: Path, report: Report) -> DemoPki | None:
    step(f"certificates: a CA of the demo's own, and a server certificate it signs for {dns.NAME} and {STACK_IP}")
    try:
        pki = make_pki(workdir / "pki", dns.NAME, STACK_IP)
    except (OSError, RuntimeError, TimeoutError) as exc:   # no openssl, or it failed: HTTPS is the one FAIL
        report.record(*HTTPS_CHECK[:2], False, f"no certificate: {exc}")
        return None
    detail(f"CA {pki.ca_file}, server {pki.cert_file}")
    return pki


def run_tour(args: argparse.Namespace) -> int:
    from guest.image import build_image

    report = Report()
    step("guest image (built once, then cached)")
    image = build_image(progress=lambda line: print(f"    {line}", flush=True))
    with tempfile.TemporaryDirectory(prefix="mnet-demo-") as tmp, ExitStack() as running:
        workdir = Path(tmp)
        try:
            site = web.make_site(workdir / "www")
            pki = _make_pki(workdir, report)
            lab = running.enter_context(open_lab(workdir, image, services(site, pki)))
            for name, client, probe in HOST_CHECKS + ([HTTPS_CHECK] if pki else []):
                report.check(name, client, lambda: probe(lab))
            _dns_checks(running, lab, report)
            _guest_checks(lab, report, args.boot_timeout, https=pki is not None)
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
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:   # no dnsmasq, or it never answered
        report.record("dns", "stack: DnsClient -> dnsmasq", False, f"dnsmasq did not start: {exc}")
        return
    report.check("dns", "stack: DnsClient -> dnsmasq", lambda: dns.stack_resolves(lab))


def _guest_checks(lab, report: Report, boot_timeout: float, *, https: bool = True) -> None:
    step(f"guest: waiting for it to finish booting (up to {boot_timeout:.0f} s)")
    try:
        seconds = lab.wait_for_guest(boot_timeout)
    except Exception as exc:   # the guest's checks fail, the report still comes
        report.record("boot", "guest: Linux under QEMU", False, f"did not boot: {str(exc).splitlines()[0]}")
        return
    report.record("boot", "guest: Linux under QEMU", True, f"ready in {seconds:.1f} s")
    for check in GUEST_CHECKS:
        name, client, probe = check
        if check is GUEST_HTTPS_CHECK and not https:
            report.record(name, client, False, "no certificate, so no https service")
            continue
        report.check(name, client, lambda: probe(lab))


def _keep_logs(workdir: Path, keep: str | None) -> None:
    if not keep:
        return
    dest = Path(keep)
    dest.mkdir(parents=True, exist_ok=True)
    for log in workdir.rglob("*.log"):   # the guest's console, dnsmasq's queries
        (dest / log.name).write_text(log.read_text(errors="replace"))
    print(f"    logs kept in {dest}", flush=True)
