"""The I/O edge of the stack: a thread that drives the sans-IO interface.

:class:`Stack` owns an :class:`~stack.iface.Interface` and a :class:`~stack.drivers.nic.Nic`.
A background thread waits (``epoll``) on the NIC's descriptor and on a
wake-up pipe, with the interface's ``poll_at()`` as the timeout; it feeds
received frames in and transmits what ``poll()`` returns. Sockets call into
the interface from their own threads under the stack's one lock, so the
core never sees two callers at once.

Run-to-completion (:mod:`stack.caller_drive`): a socket call that must block
(:meth:`Stack.wait_locked`) does the background thread's work itself while it
waits: it sleeps on the NIC's descriptor, and takes in and answers what
comes, so a reply reaches it without a hand-off between threads. Meanwhile
the background thread stops watching the NIC (it still runs the timers and
follows a virtual clock); it takes the NIC back when nobody drives.

:meth:`Stack.socket` is the one factory of sockets (``Socket(...)`` calls it
too). The socket modules know the stack only through the small public
interface of :class:`stack.socket_host.SocketHost` (``lock``, ``now``,
``register``, ``unregister``, ``pump``, ``iface``'s socket calls), so they
never import this module; it imports them. Time comes from a
:class:`stack.clock.Clock`: the monotonic clock, or a virtual one in tests.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
import weakref
from ipaddress import IPv4Interface
from typing import Any, Sequence

from stack.caller_drive import CallerDrive, DrivenCondition
from stack.clock import Clock, MonotonicClock
from stack.datagram_socket import DatagramSocket
from stack.iface import Interface
from stack.drivers import Nic, NicOffloads, TxItem
from stack.snapshot import interface_snapshot
from stack.socket_api import PollEvent, Socket, SocketType, poll
from stack.stream_socket import StreamSocket
from stack.tcp.config import TSO_MAX_PAYLOAD, TcpConfig
from stack.tcp.connection import TcpInfo
from stack.tcp.glue import ListenerInfo, format_table

log = logging.getLogger(__name__)

__all__ = ["Stack"]

RX_BURST = 64
# Bound the time one round holds the lock: while thousands of handshakes arrive, the
# services' loops need it between rounds to accept them (with 8 bursts, 512 frames, a
# service's accept queue of 4,096 overflowed and SYNs were dropped; with 2 it did not).
RX_BURSTS_PER_ROUND = 2
NO_FD_POLL_INTERVAL = 0.005  # how often to ask a NIC without a descriptor
RX_GSO_RCVBUF = 2 << 20  # TCP's receive buffer with NicOffloads.RX_GSO (Linux autotunes up to 6 MiB)


def _offload_tcp_config(offloads: NicOffloads, tso: bool) -> TcpConfig:
    """TCP's defaults for a NIC with segmentation offloads."""
    options = {}
    if tso:
        # The NIC segments and checksums: TCP may hand it whole-MSS multiples.
        options["tso_max"] = TSO_MAX_PAYLOAD
    if NicOffloads.RX_GSO in offloads:
        # 64 KiB frames come in: the default window would be four of them in flight.
        options["rcvbuf"] = RX_GSO_RCVBUF
    return TcpConfig(**options)


class Stack:
    """A running MultiOS stack on one NIC.

    ``ip`` is one address with prefix (``"10.0.0.2/24"``) or a list of them.
    A ``privileged`` stack hands out RAW sockets (like CAP_NET_RAW).
    ``interface_options`` go to :class:`~stack.iface.Interface` (for example
    ``arp_cache=ArpCache(retry_interval=0.1)`` in tests, or
    ``tcp_config=TcpConfig(syn_retries=2)`` for every TCP socket's defaults).
    ``clock`` is where the runtime and the sockets read the time and wait
    (:class:`~stack.clock.MonotonicClock` unless a test gives a
    :class:`~stack.clock.VirtualClock`).
    """

    def __init__(
        self,
        nic: Nic,
        ip: str | IPv4Interface | Sequence[str | IPv4Interface] = "10.0.0.2/24",
        gateway: str | None = None,
        privileged: bool = False,
        *,
        clock: Clock | None = None,
        **interface_options: Any,
    ) -> None:
        addresses = [ip] if isinstance(ip, (str, IPv4Interface)) else list(ip)
        for a in addresses:
            if isinstance(a, str) and "/" not in a:
                # A bare address would be a /32: nothing would be on-link.
                raise ValueError(f"give the address with its prefix length, e.g. '{a}/24'")
        self.nic = nic
        self.privileged = privileged
        tso = NicOffloads.TSO in nic.offloads and NicOffloads.TX_CSUM in nic.offloads
        # A caller's own tcp_config decides for itself.
        if interface_options.get("tcp_config") is None and (tso or NicOffloads.RX_GSO in nic.offloads):
            interface_options["tcp_config"] = _offload_tcp_config(nic.offloads, tso)
        self.iface = Interface(
            nic.mac,
            addresses,
            gateway,
            mtu=nic.mtu,
            tx_csum_offload=NicOffloads.TX_CSUM in nic.offloads,
            **interface_options,
        )
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.lock = threading.Lock()  # the one lock around the core (sockets wait on conditions built on it)
        # Weak: a socket its user dropped is garbage-collected and closed (stack.socket_api.Socket.__del__).
        self._sockets: weakref.WeakSet[Socket] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopped = False
        self._thread_deadline: float | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._nic_fd = nic.fileno()
        # What the thread sleeps on; a driving caller takes the NIC's descriptor out of it.
        self._epoll = select.epoll()
        self._epoll.register(self._wake_r, select.EPOLLIN)
        if self._nic_fd is not None:
            self._epoll.register(self._nic_fd, select.EPOLLIN)
        self._drive = CallerDrive(self._nic_fd) if self._nic_fd is not None else None
        self.failure: BaseException | None = None  # why the thread stopped, if it failed

    # -- life cycle -------------------------------------------------------------
    def start(self) -> "Stack":
        """Announce the addresses (gratuitous ARP) and start the thread."""
        with self.lock:
            if self._stopped:
                raise OSError(errno.ENETDOWN, "this stack was stopped; make a new one")
            if self._running:
                return self
            self._running = True
            self.iface.start(self.clock.now())
            self.pump()
        # Known to the clock before start() returns (not once the thread runs): a virtual
        # clock's settle() must wait for this thread's first round. advance() wakes it; settle()
        # asks whether frames wait for it. The thread detaches when it ends.
        self.clock.attach(self._wake, self._input_waiting)
        self._thread = threading.Thread(target=self._run, name=f"multios-stack-{self.iface.mac}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every socket of this stack and stop the thread (the NIC stays open).

        TCP connections get their FIN (or RST) out, but nothing is retransmitted
        afterwards: linger on a socket first if its data must arrive.
        """
        with self.lock:
            if self._stopped:
                return
            self._stopped = True  # no new sockets from here on
            sockets = list(self._sockets)
        for sock in sockets:
            sock.close()  # while still running, so TCP's FINs and RSTs go out
        with self.lock:
            self._running = False
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self.lock:
            drive = self._drive
            if drive is not None:
                if drive.busy:
                    drive.close_when_done = True  # the driving caller closes it on its way out
                else:
                    drive.close()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # -- public helpers -----------------------------------------------------------
    def socket(self, type: SocketType | None = None, protocol: int | None = None) -> Socket:
        """A new socket on this stack (DATAGRAM unless ``type`` says otherwise): the one
        factory of sockets, which ``Socket(type, protocol, stack=...)`` calls too."""
        if type is None:
            type = SocketType.DATAGRAM
        if not isinstance(type, SocketType):
            raise TypeError(f"type must be a SocketType, got {type!r}")
        if type is SocketType.STREAM:
            return StreamSocket(self, protocol)
        return DatagramSocket(self, type, protocol)

    def poll(
        self, sockets: Sequence[Socket], events: PollEvent | Sequence[PollEvent], timeout: float | None = None
    ) -> list[tuple[Socket, PollEvent]]:
        """Same as :func:`stack.socket_api.poll`."""
        return poll(sockets, events, timeout)

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-protocol counters of the interface, plus the NIC's if it has any."""
        with self.lock:
            return self._counters_locked()

    def _counters_locked(self) -> dict[str, dict[str, int]]:
        snap = self.iface.counters.snapshot()
        nic_counters = getattr(self.nic, "counters", None)
        if nic_counters is not None:
            snap["nic"] = dict(nic_counters)
        snap["reassembly"] = dict(self.iface.reassembler.counters)
        # The interface counts TCP segments in and out and their drops; the
        # engine's glue counts RSTs, opens, ICMP verdicts: one "tcp" line.
        tcp = snap.setdefault("tcp", {})
        for name, value in self.iface.tcp.counters.items():
            tcp[name] = tcp.get(name, 0) + value
        return snap

    def snapshot(self) -> dict:
        """Everything a monitor shows, as plain data (JSON as it is), taken at
        one instant under the stack's lock: ``time`` (the stack's clock),
        ``running``, ``interface``, ``neighbours``, ``routes``, ``sockets``
        (:func:`stack.snapshot.interface_snapshot`), ``counters`` (as
        :meth:`counters`) and ``nic`` (:meth:`stack.drivers.Nic.snapshot`:
        link, counters, and for the virtio driver its rings). Read only."""
        with self.lock:
            now = self.clock.now()
            snap = {"time": now, "running": self._running, **interface_snapshot(self.iface, now),
                    "counters": self._counters_locked(), "nic": self.nic.snapshot()}
        return snap

    def connections(self) -> list[TcpInfo]:
        """A :class:`~stack.tcp.connection.TcpInfo` per TCP connection (TIME-WAIT and
        orphans included), sorted by local then remote address.

        Each is a snapshot taken under the stack's lock, the engine's
        per-connection ``counters`` included: the same one ``Socket.tcp_info()``
        gives for a socket and the table of :meth:`connection_table` shows.
        """
        with self.lock:
            return self.iface.tcp.table()

    def tcp_listeners(self) -> list[ListenerInfo]:
        """A :class:`~stack.tcp.listener.ListenerInfo` per listening TCP socket: address,
        backlog, accept and SYN queue lengths and the listener's ``counters``."""
        with self.lock:
            return self.iface.tcp.listeners()

    def connection_table(self) -> str:
        """Listeners and connections as text, like ``ss -tin``."""
        with self.lock:
            return format_table(self.iface.tcp.table(), self.iface.tcp.listeners())

    # -- the interface sockets use (stack.socket_host.SocketHost; self.lock held) -------
    def now(self) -> float:
        """The time on this stack's clock."""
        return self.clock.now()

    def register(self, sock: Socket) -> None:
        """Count ``sock`` as open: :meth:`stop` closes it and a failure reaches it.
        ``OSError(ENETDOWN)`` once the stack is stopped or its thread failed."""
        self._check_alive()
        if self._stopped:
            raise OSError(errno.ENETDOWN, "the stack is stopped")
        self._sockets.add(sock)

    def unregister(self, sock: Socket) -> None:
        """Forget a closed socket."""
        self._sockets.discard(sock)

    def pump(self) -> None:
        """Send what the core has queued now (a socket call just queued something);
        wake the thread if its next timer moved earlier."""
        self._check_alive()
        if not self._running:
            return  # frames wait in the core until start()
        self._transmit(self.iface.poll(self.clock.now()))
        self._wake_thread_if_due_locked()

    def condition(self) -> threading.Condition:
        """A condition on :attr:`lock` for one socket's waiters (it wakes them while they drive)."""
        return DrivenCondition(self.lock, self._drive)

    def wait_locked(self, cond: threading.Condition, deadline: float | None) -> None:
        """Block a socket call until ``cond`` is notified or ``deadline`` passes; may return early.

        The first caller to block drives the NIC while it waits (run-to-completion,
        see the module doc); the others wait on their conditions, woken by its work.
        """
        drive = self._drive
        # Only a condition that kicks the drive may drive: a plain one's notify would not wake it.
        if drive is None or drive.busy or drive.closed or not self._running or not isinstance(cond, DrivenCondition):
            self.clock.wait(cond, deadline)
            return
        drive.busy = True
        self._watch_nic(False)  # the thread leaves the NIC to us
        try:
            self._drive_locked(drive, cond, deadline)
        finally:
            drive.busy = False
            if self._running:
                self._watch_nic(True)  # (level-triggered: input that waits wakes it)
                self._wake_thread_if_due_locked()
            if drive.close_when_done:
                drive.close()

    def _watch_nic(self, on: bool) -> None:
        """Let the thread's epoll watch the NIC's descriptor or not (safe while it sleeps in it)."""
        try:
            if on:
                self._epoll.register(self._nic_fd, select.EPOLLIN)
            else:
                self._epoll.unregister(self._nic_fd)
        except OSError:
            pass  # the NIC was closed under the stack: its next receive says so

    def _drive_locked(self, drive: CallerDrive, cond: threading.Condition, deadline: float | None) -> None:
        """One wait of a driving caller: sleep on the NIC (lock released), then do a round.

        No round before the sleep: input that already waits makes the NIC's
        descriptor readable (level-triggered), and a timer due makes the timeout 0."""
        try:
            at = self.iface.poll_at()
            if deadline is not None and (at is None or deadline < at):
                at = deadline
            timeout = self.clock.timeout(at)
            drive.cond = cond
            self.lock.release()
            try:
                with self.clock.sleeping(cond):
                    drive.wait(timeout)
            finally:
                self.lock.acquire()
                drive.cond = None
            if self._running:
                self._round_locked()
        except Exception as exc:  # the NIC went away or a bug: as if the thread had failed
            self._fail_locked(exc)

    def _wake_thread_if_due_locked(self) -> None:
        at = self.iface.poll_at()
        if at is not None and (self._thread_deadline is None or at < self._thread_deadline):
            self._wake()

    def _check_alive(self) -> None:
        if self.failure is not None:
            raise OSError(errno.ENETDOWN, f"the stack's thread failed: {self.failure!r}")

    # -- the thread -------------------------------------------------------------------
    def _transmit(self, frames: list[TxItem]) -> None:
        if frames:
            self.nic.transmit(frames)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # already pending, or closing

    def _receive_locked(self) -> int:
        got = 0
        for _ in range(RX_BURSTS_PER_ROUND):
            frames = self.nic.receive(RX_BURST)
            if frames:
                got += len(frames)
                now = self.clock.now()
                for frame, meta in frames:
                    self.iface.receive_frame(frame, now, meta)
            if len(frames) < RX_BURST:
                break
        return got

    def _round_locked(self, receive: bool = True) -> int:
        """Take input in (if ``receive``), do the work due now, send; return how many frames came in.

        Whoever runs it (the thread or a driving caller) tells the clock, so a
        virtual clock knows the stack has worked up to the time it read."""
        self.clock.busy(self._wake)  # before the receive: a frame taken is a frame being worked on
        seen = self.clock.now()  # this round does all the work due by then
        got = self._receive_locked() if receive else 0
        self._transmit(self.iface.poll(self.clock.now()))
        self.clock.idle(self._wake, seen)
        return got

    def _fail_locked(self, exc: BaseException) -> None:
        """The NIC failed under the thread or a driving caller: every socket learns ENETDOWN."""
        log.error("MultiOS stack failed", exc_info=exc)
        if self.failure is None:
            self.failure = exc
        self._running = False
        for sock in list(self._sockets):
            sock.stack_failed(errno.ENETDOWN)
        self._wake()  # the thread sees it is over

    def _run(self) -> None:
        try:
            while self._run_round():
                pass
        except Exception as exc:  # the NIC went away or a bug: fail loudly, not silently
            with self.lock:
                self._fail_locked(exc)
        finally:
            self.clock.detach(self._wake)

    def _input_waiting(self) -> bool:
        """Frames wait on the NIC for the next round (never blocks; False for a NIC without a descriptor)."""
        fd = self.nic.fileno()
        if fd is None:
            return False
        try:
            readable, _, _ = select.select([fd], [], [], 0)
        except (OSError, ValueError):
            return False  # closed under us: nothing more will come
        return bool(readable)

    def _run_round(self) -> bool:
        """Receive, do the timed work, sleep until the next timer or input; False once stopped."""
        with self.lock:
            if not self._running:
                return False
            # Input that woke us while a caller drives is the caller's (it watches the NIC
            # too): taking it here would cost the hand-off run-to-completion saves.
            drive = self._drive
            self._round_locked(receive=drive is None or not drive.busy)
            at = self.iface.poll_at()
            self._thread_deadline = at
        timeout = self.clock.timeout(at)
        if self._nic_fd is None:
            timeout = NO_FD_POLL_INTERVAL if timeout is None else min(timeout, NO_FD_POLL_INTERVAL)
        self._epoll.poll(-1 if timeout is None else timeout)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        return True
