"""TLS on a stack STREAM socket: Python's ``ssl`` through a pair of ``MemoryBIO``s.

No kernel socket is involved: the ``ssl.SSLObject`` reads ciphertext from an
incoming BIO that this module fills from the stack socket, and writes
ciphertext into an outgoing BIO that this module drains into it. The
:class:`TlsSocket` follows the stack socket's semantics: ``set_timeout``
(None blocks, 0 is non-blocking, > 0 raises ``TimeoutError``), and on a
non-blocking socket a call that needs the peer first raises
:class:`TlsWantRead` or :class:`TlsWantWrite` (both ``BlockingIOError``):
poll the TLS socket for READ or WRITE, then call again. :func:`stack.poll`
takes TLS sockets (one thread drives one TLS socket; the ``SSLObject`` is not
thread-safe).
"""
from __future__ import annotations

import errno
import ssl

from stack.socket_api import AddressLike, PollEvent, Shutdown, Socket, SocketType, socket_error
from stack.tls.config import SecurityConfig, TlsError, tls_error_from

__all__ = ["TlsSocket", "TlsWantRead", "TlsWantWrite", "connect_secure", "accept_secure"]

RECORD_READ = 64 * 1024  # ciphertext read from the stack socket at once
SEND_CHUNK = 64 * 1024  # plaintext encrypted per send() call (four full records)
_EOF = object()


class TlsWantRead(BlockingIOError):
    """Non-blocking: the TLS call needs bytes from the peer; poll for READ and call again."""


class TlsWantWrite(BlockingIOError):
    """Non-blocking: ciphertext is waiting for room in the stack socket; poll for WRITE."""


class TlsSocket:
    """A TLS connection over a connected stack STREAM socket (client or server side).

    Make one with :func:`connect_secure`, :func:`accept_secure`, or
    ``TlsSocket(raw, config, server_side=..., hostname=...)`` followed by
    :meth:`do_handshake`. ``close()`` sends close_notify (best effort) and
    closes the stack socket; ``shutdown(Shutdown.WRITE)`` sends close_notify
    and the TCP FIN; ``recv`` returns ``b""`` once the peer's close_notify
    (or, as HTTP/1.0 servers do, a bare FIN) arrives."""

    _fd_signals_write = True  # for stack.poll: the raw socket's descriptor says WRITE

    def __init__(self, raw: Socket, config: SecurityConfig, *, server_side: bool, hostname: str | None = None):
        if raw.type is not SocketType.STREAM:
            raise socket_error(errno.EPROTOTYPE, "TLS needs a STREAM socket")
        if not server_side and config.verify_hostname and not hostname:
            raise ValueError("a client that verifies hostnames needs hostname=")
        self._raw = raw
        self._stack = raw._stack
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = config.context(server_side)
        self._ssl = ctx.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                 server_hostname=None if server_side else hostname)
        self._unsent = b""  # ciphertext taken from the BIO that the stack socket did not take yet
        # Plaintext of whole records that were already in the incoming BIO: decrypted at once so that
        # poll sees them (the stack socket's descriptor knows nothing of bytes already taken from it).
        self._plain = bytearray()
        self._peer_closed = False
        self._timeout: float | None = raw.get_timeout()
        self._handshaken = False
        self._closed = False

    # -- settings and state ----------------------------------------------------------------
    def set_timeout(self, seconds: float | None) -> None:
        """None blocks, 0 is non-blocking, > 0 bounds each call (TimeoutError)."""
        self._raw.set_timeout(seconds)  # validates, as the stack socket does
        self._timeout = seconds if seconds is None else float(seconds)

    def get_timeout(self) -> float | None:
        return self._timeout

    def set_nonblocking(self, flag: bool) -> None:
        self.set_timeout(0.0 if flag else None)

    @property
    def raw(self) -> Socket:
        """The stack STREAM socket underneath (for its addresses, options, tcp_info)."""
        return self._raw

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def version(self) -> str | None:
        """The negotiated protocol ("TLSv1.2", "TLSv1.3"), None before the handshake."""
        return self._ssl.version()

    def cipher(self):
        return self._ssl.cipher()

    def peer_certificate(self) -> dict | None:
        """The verified peer certificate as ``ssl`` decodes it (None if not verified)."""
        return self._ssl.getpeercert()

    def local_address(self):
        return self._raw.local_address()

    def peer_address(self):
        return self._raw.peer_address()

    # -- the engine: one ssl call, ciphertext moved until it completes -----------------------
    def _deadline(self) -> float | None:
        return None if self._timeout is None else self._stack.now() + self._timeout

    def _raw_timeout(self, deadline: float | None) -> None:
        if self._timeout == 0:
            self._raw.set_timeout(0)
        elif deadline is None:
            self._raw.set_timeout(None)
        else:
            left = deadline - self._stack.now()
            if left <= 0:
                raise socket_error(errno.ETIMEDOUT, "TLS operation timed out")
            self._raw.set_timeout(left)

    def _flush(self, deadline: float | None) -> None:
        """Move all pending ciphertext into the stack socket (TlsWantWrite if it has no room)."""
        self._unsent += self._outgoing.read()
        while self._unsent:
            self._raw_timeout(deadline)
            try:
                n = self._raw.send(self._unsent)
            except BlockingIOError:
                raise TlsWantWrite(errno.EAGAIN, "TLS output waits for room in the socket") from None
            self._unsent = self._unsent[n:]

    def _fill(self, deadline: float | None) -> None:
        """Feed the ssl object what the peer sent (TlsWantRead when nothing is there yet)."""
        self._raw_timeout(deadline)
        try:
            data = self._raw.recv(RECORD_READ)
        except BlockingIOError:
            raise TlsWantRead(errno.EAGAIN, "TLS waits for data from the peer") from None
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _run(self, op, flush: bool = True):
        """Call ``op()`` until it no longer wants the peer, moving ciphertext both ways
        (and, with ``flush``, until what it wrote is in the stack socket)."""
        deadline = self._deadline()
        while True:
            self._check_open()
            try:
                result = op()
            except ssl.SSLWantReadError:
                self._flush(deadline)
                self._fill(deadline)
                continue
            except ssl.SSLWantWriteError:
                self._flush(deadline)
                continue
            except ssl.SSLZeroReturnError:
                result = _EOF
            except ssl.SSLEOFError:
                result = _EOF if self._handshaken else self._raise_eof()
            except ssl.SSLError as exc:
                self._flush_quietly()  # the alert tells the peer why
                raise tls_error_from(exc) from None
            if flush:
                self._flush(deadline)
            return result

    def _raise_eof(self):
        raise TlsError("TLS handshake failed: the peer closed the connection", code=errno.ECONNRESET)

    def _flush_quietly(self) -> None:
        """Best effort: send what is pending within a second (at once when non-blocking)."""
        try:
            self._flush(self._stack.now() + 1.0 if self._timeout != 0 else None)
        except OSError:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise socket_error(errno.EBADF, "TLS socket is closed")

    # -- the socket API --------------------------------------------------------------------
    def do_handshake(self) -> None:
        """Run (or continue, when non-blocking) the handshake; verification errors are
        :class:`~stack.tls.config.TlsVerificationError`."""
        self._run(self._ssl.do_handshake)
        self._handshaken = True

    def send(self, data) -> int:
        """Encrypt and send; returns how many plaintext bytes were taken (at most SEND_CHUNK).

        Non-blocking: TlsWantWrite while earlier records still wait for room;
        once bytes are taken they are sent, so their count is returned even
        if their records only partly fit (the rest goes out with the next call)."""
        view = memoryview(data).cast("B")[:SEND_CHUNK]
        self._check_open()
        if not self._handshaken:
            self.do_handshake()
        deadline = self._deadline()
        self._flush(deadline)  # earlier records first: bounded buffering
        n = self._run(lambda: self._ssl.write(view), flush=False)
        if n is _EOF:
            raise socket_error(errno.EPIPE, "the TLS connection is closed")
        try:
            self._flush(deadline)
        except BlockingIOError:
            pass
        return n

    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += self.send(view[sent:])

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` decrypted bytes; ``b""`` once the peer closed."""
        if bufsize < 0:
            raise ValueError("negative buffer size in recv")
        self._check_open()
        if not self._handshaken:
            self.do_handshake()
        if bufsize == 0:
            return b""
        if not self._plain and not self._peer_closed:
            data = self._run(lambda: self._ssl.read(RECORD_READ))
            if data is _EOF:
                self._peer_closed = True
            else:
                self._plain += data
                self._decrypt_buffered()
        data = bytes(self._plain[:bufsize])
        del self._plain[:bufsize]
        return data

    def _decrypt_buffered(self) -> None:
        """Decrypt every whole record still in the incoming BIO (errors wait for the next recv)."""
        while self._incoming.pending and not self._peer_closed:
            try:
                self._plain += self._ssl.read(RECORD_READ)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._peer_closed = True
            except ssl.SSLError:
                return
    def pending(self) -> int:
        """Decrypted bytes ready to read without touching the socket."""
        return len(self._plain) + self._ssl.pending()

    def shutdown(self, how: Shutdown) -> None:
        """WRITE (or BOTH) sends close_notify, then shuts the stack socket down the same way."""
        self._check_open()
        if Shutdown.WRITE in how and self._handshaken:
            self._send_close_notify()
        self._raw.shutdown(how)

    def _send_close_notify(self) -> None:
        try:
            self._ssl.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            pass  # our close_notify is in the BIO; the peer's answer is not waited for
        except ssl.SSLError as exc:
            raise tls_error_from(exc) from None
        self._flush(self._deadline())

    def close(self) -> None:
        """Send close_notify if the connection is up (best effort) and close the stack socket."""
        if self._closed:
            return
        if self._handshaken:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass  # close_notify is in the BIO (or the connection is already broken)
            self._flush_quietly()  # bounded: a peer that reads nothing must not hold close() up
        self._closed = True
        self._raw.close()

    def __enter__(self) -> "TlsSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- stack.poll's side -----------------------------------------------------------------
    def fileno(self) -> int:
        return -1 if self._closed else self._raw.fileno()

    def _revents(self, wanted: PollEvent) -> PollEvent:
        if self._closed:
            return PollEvent.INVALID
        got = self._raw._revents(wanted)
        if PollEvent.READ in wanted and (self._plain or self._peer_closed or self._ssl.pending()):
            got |= PollEvent.READ  # decrypted bytes (or the end) wait here, not in the socket
        return got

    def __repr__(self) -> str:
        return f"<TlsSocket {self.version or 'handshaking'} over {self._raw!r}>"


def connect_secure(addr: AddressLike, hostname: str | None, config: SecurityConfig | None = None,
                   *, stack=None, timeout: float | None = None) -> TlsSocket:
    """Connect a STREAM socket to ``addr`` (on ``stack``, or the default stack) and run the
    TLS client handshake, verifying the server's certificate for ``hostname``."""
    config = config if config is not None else SecurityConfig()
    raw = Socket(SocketType.STREAM, stack=stack)
    try:
        raw.set_timeout(timeout)
        raw.connect(addr)
        tls = TlsSocket(raw, config, server_side=False, hostname=hostname)
        tls.set_timeout(timeout)
        tls.do_handshake()
    except BaseException:
        raw.close()
        raise
    return tls


def accept_secure(raw: Socket, config: SecurityConfig, *, handshake: bool = True) -> TlsSocket:
    """Wrap an accepted STREAM socket as the TLS server (``config`` holds cert and key) and,
    unless ``handshake=False`` (for a non-blocking server), run the handshake."""
    tls = TlsSocket(raw, config, server_side=True)
    if handshake:
        try:
            tls.do_handshake()
        except BaseException:
            raw.close()
            raise
    return tls
