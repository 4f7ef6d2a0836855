"""TLS over the stack's own TCP (Python's ssl through MemoryBIO) between two stacks on a
LoopbackNicPair, with certificates made in the test: both TLS versions, 1 MB each way,
close_notify, every verification failure by name, and a non-blocking handshake driven by poll."""
from __future__ import annotations

import hashlib
import random
import threading

import pytest

from stack import LoopbackNicPair, PollEvent, Shutdown, SocketType, Stack, poll
from stack.tls import (Certificate, SecurityConfig, TlsError, TlsSocket, TlsVerificationError, TlsVersion,
                       TlsVersionError, TlsWantRead, TlsWantWrite, accept_secure, connect_secure)
from support.tls_certs import TestCa

pytest.importorskip("cryptography")

WAIT = 10.0  # bound on every blocking call (handshakes are milliseconds; 1 MB is well under a second)
# poll()'s bound: 10 s in milliseconds, as poll(2) counts (read as seconds, it is only a looser bound).
POLL_TIMEOUT = 10_000
SERVER = "10.0.0.2:443"
NAME = "server.test"


@pytest.fixture
def stacks():
    pair = LoopbackNicPair()
    with Stack(pair.a, "10.0.0.1/24") as a, Stack(pair.b, "10.0.0.2/24") as b:
        yield a, b


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCa(directory)
    return {"ca": ca, "good": ca.issue(NAME, ip="10.0.0.2"), "expired": ca.issue(NAME, expired=True),
            "other_ca": TestCa(directory, "another CA")}


def server_config(issued, **settings) -> SecurityConfig:
    config = SecurityConfig(**settings)
    config.set_identity(issued.cert_file, issued.key_file)
    return config


def client_config(ca, **settings) -> SecurityConfig:
    config = SecurityConfig(**settings)
    config.add_trusted_certificate(Certificate.from_pem_file(ca.cert_file))
    return config


class Server:
    """One TLS server connection on its own thread: accept, handshake, then ``handler(tls)``."""

    def __init__(self, st, config: SecurityConfig, handler=lambda tls: None, port: int = 443,
                 hold: threading.Event | None = None) -> None:
        self.hold = hold  # when given, the server answers nothing until it is set
        self.listener = st.socket(SocketType.STREAM)
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(4)
        self.listener.set_timeout(WAIT)
        self.result, self.error = None, None
        self._thread = threading.Thread(target=self._run, args=(config, handler), daemon=True)
        self._thread.start()

    def _run(self, config, handler) -> None:
        try:
            raw, _ = self.listener.accept()
            raw.set_timeout(WAIT)
            if self.hold is not None:
                assert self.hold.wait(WAIT), "the test never let the server answer"
            with accept_secure(raw, config) as tls:
                self.result = handler(tls)
        except Exception as exc:  # handed to the test, which asserts on it
            self.error = exc

    def join(self):
        self._thread.join(WAIT * 3)
        assert not self._thread.is_alive(), "the TLS server thread did not finish"
        self.listener.close()
        return self.result


def read_exactly(tls, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        data = tls.recv(size - got)
        assert data, f"the TLS stream ended after {got} of {size} bytes"
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


@pytest.mark.parametrize("version", [TlsVersion.TLS1_2, TlsVersion.TLS1_3])
def test_one_megabyte_each_way_over_each_version(stacks, pki, version):
    a, b = stacks
    size = 1 << 20
    up, down = random.Random(1).randbytes(size), random.Random(2).randbytes(size)

    def echo_digest(tls):
        got = read_exactly(tls, size)
        tls.sendall(down)
        return tls.version, hashlib.sha256(got).hexdigest()

    server = Server(b, server_config(pki["good"], min_version=version, max_version=version), echo_digest)
    with connect_secure(SERVER, NAME, client_config(pki["ca"]), stack=a, timeout=WAIT) as tls:
        assert tls.version == {TlsVersion.TLS1_2: "TLSv1.2", TlsVersion.TLS1_3: "TLSv1.3"}[version]
        assert tls.peer_certificate()["subject"] == ((("commonName", NAME),),)
        tls.sendall(up)
        assert hashlib.sha256(read_exactly(tls, size)).digest() == hashlib.sha256(down).digest()
    server_version, digest = server.join()
    assert server.error is None
    assert server_version == tls.version and digest == hashlib.sha256(up).hexdigest()


def test_the_ip_address_in_the_certificate_verifies_too(stacks, pki):
    a, b = stacks
    server = Server(b, server_config(pki["good"]), lambda tls: tls.recv(10))
    with connect_secure(SERVER, "10.0.0.2", client_config(pki["ca"]), stack=a, timeout=WAIT) as tls:
        tls.sendall(b"by ip")
    assert server.join() == b"by ip"


def test_shutdown_sends_close_notify_and_the_other_way_still_works(stacks, pki):
    a, b = stacks

    def answer_after_eof(tls):
        got = read_exactly(tls, 5)
        assert tls.recv(100) == b""  # the client's close_notify
        tls.sendall(b"bye")
        return got

    server = Server(b, server_config(pki["good"]), answer_after_eof)
    tls = connect_secure(SERVER, NAME, client_config(pki["ca"]), stack=a, timeout=WAIT)
    tls.sendall(b"hello")
    tls.shutdown(Shutdown.WRITE)
    assert read_exactly(tls, 3) == b"bye"
    assert tls.recv(100) == b""  # the server closed with close_notify
    tls.close()
    assert server.join() == b"hello" and server.error is None
    with pytest.raises(OSError):
        tls.recv(1)


def refused(stacks, issued, config, hostname=NAME) -> tuple[BaseException, Server]:
    a, b = stacks
    server = Server(b, server_config(issued), lambda tls: tls.recv(1))
    with pytest.raises(TlsError) as caught:
        connect_secure(SERVER, hostname, config, stack=a, timeout=WAIT)
    server.join()
    return caught.value, server


def test_wrong_hostname_is_named(stacks, pki):
    error, server = refused(stacks, pki["good"], client_config(pki["ca"]), hostname="other.test")
    assert isinstance(error, TlsVerificationError) and isinstance(error, OSError)
    assert error.reason == "wrong hostname" and "Hostname mismatch" in error.verify_message
    assert "wrong hostname" in str(error)
    assert isinstance(server.error, TlsError)  # the server hears the client's alert


def test_untrusted_ca_is_named(stacks, pki):
    error, _ = refused(stacks, pki["good"], client_config(pki["other_ca"]))
    assert isinstance(error, TlsVerificationError) and error.reason == "untrusted CA"
    assert "unable to get local issuer certificate" in error.verify_message


def test_nothing_is_trusted_by_default(stacks, pki):
    error, _ = refused(stacks, pki["good"], SecurityConfig())
    assert isinstance(error, TlsVerificationError) and error.reason == "untrusted CA"


def test_expired_certificate_is_named(stacks, pki):
    error, _ = refused(stacks, pki["expired"], client_config(pki["ca"]))
    assert isinstance(error, TlsVerificationError) and error.reason == "expired certificate"
    assert "expired" in error.verify_message and "expired certificate" in str(error)


def test_client_minimum_above_server_maximum_is_a_version_mismatch(stacks, pki):
    a, b = stacks
    server = Server(b, server_config(pki["good"], max_version=TlsVersion.TLS1_2))
    with pytest.raises(TlsVersionError, match="version mismatch"):
        connect_secure(SERVER, NAME, client_config(pki["ca"], min_version=TlsVersion.TLS1_3), stack=a, timeout=WAIT)
    server.join()
    assert isinstance(server.error, TlsVersionError)


def test_verification_can_be_turned_off_explicitly(stacks, pki):
    a, b = stacks
    server = Server(b, server_config(pki["expired"]), lambda tls: tls.recv(10))
    config = SecurityConfig(verify_hostname=False, verify_certificates=False)
    with connect_secure(SERVER, "anything", config, stack=a, timeout=WAIT) as tls:
        tls.sendall(b"unchecked")
        assert tls.peer_certificate() == {}
    assert server.join() == b"unchecked"


def test_impossible_settings_are_refused_clearly(pki):
    with pytest.raises(ValueError, match="min_version TLS1_3 is above max_version TLS1_2"):
        SecurityConfig(min_version=TlsVersion.TLS1_3, max_version=TlsVersion.TLS1_2).context(server_side=False)
    with pytest.raises(ValueError, match="a server needs set_identity"):
        SecurityConfig().context(server_side=True)
    with pytest.raises(ValueError, match="no PEM certificate"):
        Certificate.from_pem_file(pki["good"].key_file)
    with pytest.raises(TypeError):
        SecurityConfig().add_trusted_certificate(str(pki["ca"].cert_file))


def test_a_datagram_socket_cannot_carry_tls(stacks, pki):
    a, _ = stacks
    with a.socket(SocketType.DATAGRAM) as udp, pytest.raises(OSError, match="STREAM"):
        TlsSocket(udp, client_config(pki["ca"]), server_side=False, hostname=NAME)


def drive(tls: TlsSocket, call):
    """Run a non-blocking TLS call to completion the way an event loop does: poll on WANT_*."""
    for _ in range(1000):
        try:
            return call()
        except TlsWantRead:
            ready = poll([tls], PollEvent.READ, timeout=POLL_TIMEOUT)
        except TlsWantWrite:
            ready = poll([tls], PollEvent.WRITE, timeout=POLL_TIMEOUT)
        assert ready, "poll ran out of time while TLS waited for the peer"
    pytest.fail("a non-blocking TLS call did not finish in 1000 polls")


def test_non_blocking_handshake_and_data_driven_by_poll(stacks, pki):
    a, b = stacks
    size = 300_000
    payload = random.Random(3).randbytes(size)
    answer = threading.Event()  # the server holds its ServerHello until the client's first step is done
    server = Server(b, server_config(pki["good"]), lambda tls: (tls.sendall(payload), read_exactly(tls, 4))[1],
                    hold=answer)
    raw = a.socket(SocketType.STREAM)
    raw.set_timeout(WAIT)
    raw.connect(SERVER)
    tls = TlsSocket(raw, client_config(pki["ca"]), server_side=False, hostname=NAME)
    tls.set_nonblocking(True)
    wants = []
    try:
        tls.do_handshake()
    except TlsWantRead as exc:
        wants.append(exc)
    answer.set()
    assert wants, "the first step of a non-blocking handshake must wait for the server"
    drive(tls, tls.do_handshake)
    assert tls.version in ("TLSv1.2", "TLSv1.3")
    got = bytearray()
    while len(got) < size:
        got += drive(tls, lambda: tls.recv(65536))
    assert bytes(got) == payload
    sent = 0
    while sent < 4:
        sent += drive(tls, lambda: tls.send(b"done"[sent:]))
    assert server.join() == b"done" and server.error is None
    tls.close()
    assert poll([tls], PollEvent.READ, timeout=0) == [(tls, PollEvent.INVALID)]


def test_poll_sees_records_already_taken_from_the_socket(stacks, pki):
    """An event loop polls before each recv: whole records that one read of the stack socket
    took along must make the TLS socket readable, or poll would wait for bytes that came."""
    a, b = stacks
    size = 200_000
    payload = random.Random(4).randbytes(size)
    server = Server(b, server_config(pki["good"]), lambda tls: (tls.sendall(payload), read_exactly(tls, 2))[1])
    tls = connect_secure(SERVER, NAME, client_config(pki["ca"]), stack=a, timeout=WAIT)
    tls.set_nonblocking(True)
    got = bytearray()
    while len(got) < size:
        assert poll([tls], PollEvent.READ, timeout=POLL_TIMEOUT), f"poll missed data after {len(got)} bytes"
        try:
            got += tls.recv(20_000)  # more than one record (16 KiB), less than one socket read
        except TlsWantRead:
            continue  # only part of a record had arrived
    assert bytes(got) == payload
    tls.set_timeout(WAIT)
    tls.sendall(b"ok")
    assert server.join() == b"ok"
    tls.close()


def test_a_server_that_trusts_a_ca_asks_the_client_for_a_certificate(stacks, pki, tmp_path):
    a, b = stacks
    config = server_config(pki["good"])
    config.add_trusted_certificate(Certificate.from_pem_file(pki["ca"].cert_file))
    server = Server(b, config, lambda tls: tls.peer_certificate()["subject"])
    with_identity = client_config(pki["ca"])
    client_cert = pki["ca"].issue("client.test")
    with_identity.set_identity(client_cert.cert_file, client_cert.key_file)
    with connect_secure(SERVER, NAME, with_identity, stack=a, timeout=WAIT) as tls:
        tls.recv(1)  # b"": the server closes once it has looked at our certificate
    assert server.join() == ((("commonName", "client.test"),),)

    server = Server(b, config, port=444)
    with pytest.raises(TlsError):  # no certificate: TLS 1.3 clients hear of it on their first read
        with connect_secure("10.0.0.2:444", NAME, client_config(pki["ca"]), stack=a, timeout=WAIT) as tls:
            tls.recv(1)
    server.join()
    assert isinstance(server.error, TlsError)


def test_a_timeout_bounds_a_tls_recv(stacks, pki):
    a, b = stacks
    release = threading.Event()
    server = Server(b, server_config(pki["good"]), lambda tls: release.wait(WAIT))
    with connect_secure(SERVER, NAME, client_config(pki["ca"]), stack=a, timeout=WAIT) as tls:
        tls.set_timeout(0.2)
        with pytest.raises(TimeoutError):
            tls.recv(10)
        release.set()
    server.join()


def test_one_thread_drives_both_ends_non_blocking(stacks, pki):
    """An event loop's view: client and server TLS sockets, both non-blocking, in one thread;
    each handshake step that wants the peer waits in one poll over both."""
    a, b = stacks
    lst = b.socket(SocketType.STREAM)
    lst.bind("0.0.0.0:443")
    lst.listen(1)
    lst.set_timeout(WAIT)
    raw_client = a.socket(SocketType.STREAM)
    raw_client.set_timeout(WAIT)
    raw_client.connect(SERVER)
    raw_server, _ = lst.accept()
    server = accept_secure(raw_server, server_config(pki["good"]), handshake=False)
    client = TlsSocket(raw_client, client_config(pki["ca"]), server_side=False, hostname=NAME)
    pending = {client, server}
    for sock in pending:
        sock.set_nonblocking(True)
    for _ in range(100):
        for sock in list(pending):
            try:
                sock.do_handshake()
                pending.discard(sock)
            except (TlsWantRead, TlsWantWrite):
                pass
        if not pending:
            break
        assert poll(list(pending), PollEvent.READ, timeout=POLL_TIMEOUT), "no handshake step became possible"
    assert not pending, "the handshakes did not finish in 100 rounds"
    assert client.version == server.version
    client.sendall(b"ping")
    assert poll([server], PollEvent.READ, timeout=POLL_TIMEOUT)
    assert drive(server, lambda: server.recv(10)) == b"ping"
    server.close()
    assert drive(client, lambda: client.recv(10)) == b""  # close_notify
    client.close()
    lst.close()


def test_close_does_not_wait_for_a_peer_that_reads_nothing(stacks, pki):
    a, b = stacks
    release = threading.Event()
    server = Server(b, server_config(pki["good"]), lambda tls: release.wait(WAIT))
    tls = connect_secure(SERVER, NAME, client_config(pki["ca"]), stack=a, timeout=WAIT)
    tls.set_nonblocking(True)
    with pytest.raises(TlsWantWrite):
        for _ in range(10_000):  # until the peer's window and our send buffer are full
            tls.send(bytes(65536))
    tls.set_timeout(None)  # a blocking socket: close_notify cannot go out, close must not hang
    closer = threading.Thread(target=tls.close, daemon=True)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() of a TLS socket waited on a peer that reads nothing"
    assert tls.closed
    release.set()
    server.join()
