"""The stack's TLS (stack.tls) against OpenSSL's own programs, through the host kernel.

One lab for the module (support.tcplab.StackLab): a switch on a thread of this
process with the MultiOS stack on a vhost-user port (10.0.0.9) and a TAP port
into a namespace this module creates (the kernel at 10.0.0.254), where
`openssl s_server` and `openssl s_client` run with certificates made here.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from support.tcplab import HOST_IP, STACK_IP, WAIT, StackLab, assert_stack_healthy
from support.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "server.test"
OPENSSL_PORT = 4433  # s_server in the namespace
STACK_PORT = 8443  # the stack's TLS server
VERSION_FLAG = {"TLSv1.2": "-tls1_2", "TLSv1.3": "-tls1_3"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: run make setup, which installs it")
    with temporary_netns("mnet-tls") as netns:
        lab = StackLab(tmp_path_factory.mktemp("tls"), netns)
        try:
            yield lab
        finally:
            lab.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from support.tls_certs import TestCa

    directory = tmp_path_factory.mktemp("pki")
    ca = TestCa(directory)
    return {"ca": ca, "kernel": ca.issue(NAME, ip=HOST_IP), "stack": ca.issue(NAME, ip=STACK_IP),
            "expired": ca.issue("old.test", expired=True)}


def client_config(pki, **settings):
    from stack.tls import Certificate, SecurityConfig

    config = SecurityConfig(**settings)
    config.add_trusted_certificate(Certificate.from_pem_file(pki["ca"].cert_file))
    return config


class SServer:
    """`openssl s_server -rev` in the namespace for one connection: it echoes lines reversed
    (and, unlike its interactive mode, does not quit when its stdin is empty)."""

    def __init__(self, netns: str, issued, *flags: str) -> None:
        argv = ["ip", "netns", "exec", netns, "openssl", "s_server", "-accept", f"{HOST_IP}:{OPENSSL_PORT}",
                "-cert", str(issued.cert_file), "-key", str(issued.key_file), "-naccept", "1", "-rev", *flags]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.netns = netns
        # Its "ACCEPT" line may sit in a stdio buffer: the listening socket is what counts.
        # (A program starting: seconds on a loaded machine, so WAIT rather than wait_for's
        # default for what takes milliseconds; stopped if it never listens.)
        try:
            wait_for(self._listening, f"openssl s_server listening on port {OPENSSL_PORT}", timeout=WAIT)
        except BaseException:
            if self.proc.poll() is None:
                self.stop()
            raise

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"openssl s_server exited: {self.stop()}")
        ss = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Hltn", f"sport = :{OPENSSL_PORT}"],
                            capture_output=True, text=True, timeout=WAIT)
        return bool(ss.stdout.strip())

    def stop(self) -> str:
        """Its output, once it has ended (-naccept 1: after its one connection; it is
        terminated if it has not by then, so a buffered log may be cut short)."""
        try:
            rest, _ = self.proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
        try:
            rest, _ = self.proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return rest or ""


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_stack_client_talks_to_openssl_s_server(lab, pki, version):
    from stack.tls import connect_secure

    server = SServer(lab.netns, pki["kernel"], VERSION_FLAG[version])
    try:
        lines = b"".join(b"line %d of the MultiOS TLS client\n" % i for i in range(2000))  # about 70 kB
        with connect_secure(f"{HOST_IP}:{OPENSSL_PORT}", NAME, client_config(pki), stack=lab.stack,
                            timeout=WAIT) as tls:
            assert tls.version == version
            tls.sendall(lines)
            got = bytearray()
            while len(got) < len(lines):
                data = tls.recv(65536)
                assert data, f"s_server closed after {len(got)} bytes"
                got += data
        want = b"".join(line[::-1] + b"\n" for line in lines.split(b"\n")[:-1])
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest()
    finally:
        log = server.stop()
    assert f"Protocol version: {version}" in log, log
    assert_stack_healthy(lab.stack)


@pytest.mark.parametrize("issued, hostname, reason", [
    ("kernel", "wrong.test", "wrong hostname"),
    ("expired", "old.test", "expired certificate"),
])
def test_stack_client_refuses_a_bad_s_server_certificate(lab, pki, issued, hostname, reason):
    from stack.tls import TlsVerificationError, connect_secure

    server = SServer(lab.netns, pki[issued])
    try:
        with pytest.raises(TlsVerificationError) as caught:
            connect_secure(f"{HOST_IP}:{OPENSSL_PORT}", hostname, client_config(pki), stack=lab.stack, timeout=WAIT)
    finally:
        server.stop()
    assert caught.value.reason == reason, caught.value


def test_stack_client_refuses_a_server_from_an_untrusted_ca(lab, pki, tmp_path):
    from stack.tls import Certificate, SecurityConfig, TlsVerificationError, connect_secure
    from support.tls_certs import TestCa

    stranger = TestCa(tmp_path, "stranger CA")
    config = SecurityConfig()
    config.add_trusted_certificate(Certificate.from_pem_file(stranger.cert_file))
    server = SServer(lab.netns, pki["kernel"])
    try:
        with pytest.raises(TlsVerificationError, match="untrusted CA"):
            connect_secure(f"{HOST_IP}:{OPENSSL_PORT}", NAME, config, stack=lab.stack, timeout=WAIT)
    finally:
        server.stop()


def stack_tls_server(lab, pki, version: str):
    """A one-connection TLS server on the stack (thread): greets, answers a line upper-cased, closes."""
    import threading

    from stack import IpAddress, SocketOption, SocketType
    from stack.tls import SecurityConfig, TlsVersion, accept_secure

    pinned = TlsVersion.TLS1_2 if version == "TLSv1.2" else TlsVersion.TLS1_3
    config = SecurityConfig(min_version=pinned, max_version=pinned)
    config.set_identity(pki["stack"].cert_file, pki["stack"].key_file)
    listener = lab.stack.socket(SocketType.STREAM)
    # As servers do: the previous test's connection on this port may wait in TIME-WAIT (the stack
    # closed first when its close came before s_client's close_notify), and the port is bound again.
    listener.set_option(SocketOption.REUSE_ADDR, True)
    listener.bind(IpAddress.any(STACK_PORT))
    listener.listen(2)
    listener.set_timeout(WAIT)
    outcome: dict = {}

    def serve():
        try:
            raw, _ = listener.accept()
            raw.set_timeout(WAIT)
            with accept_secure(raw, config) as tls:
                outcome["version"] = tls.version
                tls.sendall(b"hello from the MultiOS stack\n")
                line = bytearray()
                while not line.endswith(b"\n"):
                    data = tls.recv(1024)
                    assert data, "s_client closed before its line"
                    line += data
                outcome["line"] = bytes(line)
                tls.sendall(bytes(line).upper())
        except Exception as exc:  # reported by the test
            outcome["error"] = exc
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_openssl_s_client_talks_to_the_stack_server(lab, pki, version):
    thread, outcome = stack_tls_server(lab, pki, version)
    argv = ["ip", "netns", "exec", lab.netns, "openssl", "s_client", "-connect", f"{STACK_IP}:{STACK_PORT}",
            "-CAfile", str(pki["ca"].cert_file), "-verify_hostname", NAME, "-verify_return_error",
            "-brief", "-ign_eof", VERSION_FLAG[version]]
    done = subprocess.run(argv, input="hello from s_client\n", capture_output=True, text=True, timeout=WAIT * 2)
    thread.join(WAIT)
    assert not thread.is_alive(), "the stack's TLS server did not finish"
    assert "error" not in outcome, outcome
    assert outcome["version"] == version and outcome["line"] == b"hello from s_client\n"
    assert done.returncode == 0, done.stderr
    assert "hello from the MultiOS stack" in done.stdout and "HELLO FROM S_CLIENT" in done.stdout, done.stdout
    assert f"Protocol version: {version}" in done.stderr and "Verification: OK" in done.stderr, done.stderr
    assert_stack_healthy(lab.stack)


def test_openssl_s_client_with_the_wrong_hostname_is_refused(lab, pki):
    thread, outcome = stack_tls_server(lab, pki, "TLSv1.3")
    argv = ["ip", "netns", "exec", lab.netns, "openssl", "s_client", "-connect", f"{STACK_IP}:{STACK_PORT}",
            "-CAfile", str(pki["ca"].cert_file), "-verify_hostname", "wrong.test", "-verify_return_error",
            "-brief"]
    done = subprocess.run(argv, input="", capture_output=True, text=True, timeout=WAIT * 2)
    thread.join(WAIT)
    assert done.returncode != 0 and "hostname mismatch" in done.stderr.lower(), done.stderr
    assert "error" in outcome, "the stack's server must see the handshake fail"
