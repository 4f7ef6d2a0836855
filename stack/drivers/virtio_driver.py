"""The stack's network card: a virtio-net driver over a vhost-user front-end.

`VirtioNetNic(path)` connects to a vhost-user-net back-end (a port of our
switch, DPDK's net_vhost, anything QEMU could use) with
`nicdev.vhost_user.frontend.VhostUserFrontend` and drives queue pair 0 the
way a guest's virtio-net driver does. Each connection's data path (the two
rings, the buffer pool, checksum and segmentation offloads) is a
`stack.drivers.virtio_link.VirtioLink`; this module keeps the card across
connections.

Interrupts: `fileno()` is an epoll fd that is readable when the device
signalled the RX call eventfd, when the back-end hangs up or reports a
broken ring, and when a reconnect attempt is due. `receive()` disables RX
interrupts while it works and re-enables them (then re-checks the used
ring) only when it has drained it.

A back-end that goes away (connection closed or reset, a ring it reports
broken, a ring that breaks the driver's rules) takes the link down: the
reason is logged once and kept in `last_error`, `counters["link_down"]`
counts it, `transmit` drops and counts, `receive` returns []. With
`reconnect=True` the NIC tries again, at most every `reconnect_interval`
seconds, whenever it is called (and the fd wakes the stack's thread when an
attempt is due), and resumes on fresh memory and rings.

Thread safety: one lock serialises transmit, receive, reconnect and close,
so the stack's thread and socket-calling threads (stack/runtime.py) may
call in at the same time.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import select
import threading
import time
from typing import Callable, Iterable

from nicdev.virtio.offload import FrameMeta
from nicdev.vhost_user.frontend import GSO_FEATURES, OPTIONAL_FEATURES, BackendError, VhostUserFrontend
from nicdev.virtio.features import VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_MRG_RXBUF, describe, has
from nicdev.virtio.driver_events import DriverEvents
from nicdev.virtio.memory import GuestMemoryError
from nicdev.virtio.ring import QueueBroken
from nicdev.virtio.trace import DRIVER, Tracer
from stack.drivers.nic import Nic, NicOffloads, TxItem
from stack.drivers.virtio_link import (
    EVENTFD_ONE, RX_RING, TX_RING, VirtioLink, big_tx_slots, drain_eventfd, is_pair, pool_bytes,
)
from stack.wire import MacAddress

__all__ = ["VirtioNetNic", "RX_RING", "TX_RING", "DEFAULT_FEATURES"]

log = logging.getLogger(__name__)

#: What the driver accepts by default: the front-end's optional features
#: plus TCP segmentation both ways (HOST_TSO4, GUEST_TSO4).
DEFAULT_FEATURES = OPTIONAL_FEATURES | GSO_FEATURES


class VirtioNetNic(Nic):
    """A `stack.drivers.nic.Nic` on a vhost-user-net back-end at `socket_path`.

    `mac`: the card's address (a random locally administered one if None).
    `mtu`: the largest IP packet; frames up to MTU + 18 bytes (Ethernet
    header and one VLAN tag) go either way, and the back-end is told the MTU
    if it takes NET_SET_MTU. `queue_size`: entries per ring. `reconnect`:
    come back by itself when the back-end does. `features`: the optional
    virtio features to accept (default: all this driver uses). `timeout`:
    seconds for connecting and for each set-up reply. `trace_sink`: a
    ring trace sink (`nicdev.virtio.trace`) that gets the driver's records
    from the start, the connection's set-up included; more sinks can be
    added to `tracer` at any time. `events`: a
    `nicdev.virtio.driver_events.DriverEvents` that both rings trace their
    work into, on every connection (None: no trace, and no cost).

    Raises `nicdev.vhost_user.frontend.BackendUnavailable` if nobody listens
    on the path, `BackendError` if the set-up fails.
    """

    def __init__(
        self,
        socket_path: str,
        mac: MacAddress | str | bytes | None = None,
        mtu: int = 1500,
        queue_size: int = 256,
        reconnect: bool = True,
        *,
        features: int = DEFAULT_FEATURES,
        reconnect_interval: float = 0.5,
        timeout: float = 5.0,
        name: str | None = None,
        trace_sink: Callable[[dict], None] | None = None,
        events: DriverEvents | None = None,
    ) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        self.socket_path = socket_path
        self.mac = MacAddress(mac) if mac is not None else MacAddress.random_local()
        self.mtu = mtu
        self.queue_size = queue_size
        self.reconnect = reconnect
        self.reconnect_interval = reconnect_interval
        self.timeout = timeout
        self.events = events
        self.name = name or f"virtio-net:{os.path.basename(socket_path)}"
        # The driver's side of the rings, traced (docs/tracing.md); off until a sink is added.
        self.tracer = Tracer(self.name, DRIVER)
        if trace_sink is not None:
            self.tracer.add_sink(trace_sink)
        if not has(features, VIRTIO_NET_F_MRG_RXBUF):
            # Coalesced frames would not fit our MTU-sized receive buffers.
            features &= ~(1 << VIRTIO_NET_F_GUEST_TSO4)
        self.wanted_features = features
        self._big_slots = big_tx_slots(queue_size, features)
        self.offloads = NicOffloads.NONE
        self.counters: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._backlog: collections.deque[tuple[bytes, FrameMeta]] = collections.deque()
        self._link: VirtioLink | None = None
        self._closed = False
        self._next_attempt = 0.0
        self._timer: threading.Timer | None = None
        self._timer_pending = False
        self._wake_lock = threading.Lock()      # guards _wake_fd against close() in the timer thread
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        try:
            self._connect()
        except BaseException:
            self._epoll.close()
            os.close(self._wake_fd)
            raise

    def __repr__(self) -> str:
        state = "link up" if self._link is not None else f"link down ({self.last_error})"
        return f"VirtioNetNic({self.socket_path!r}, mac={self.mac}, mtu={self.mtu}, {state})"

    # -- state -------------------------------------------------------------------
    @property
    def link_up(self) -> bool:
        """Connected to a back-end with working rings."""
        return self._link is not None

    @property
    def features(self) -> int:
        """The virtio features negotiated on the current connection (0 while down)."""
        link = self._link
        return link.features if link is not None else 0

    @property
    def drops(self) -> dict[str, int]:
        """Dropped frames by reason (the counters named *_drop_*)."""
        return {k: v for k, v in self.counters.items() if "_drop_" in k}

    def snapshot(self) -> dict:
        """`Nic.snapshot` with the link's state, the negotiated features and
        both rings' indexes and counters (taken under the NIC's lock)."""
        with self._lock:
            snap = super().snapshot()
            link = self._link
            snap.update(driver="virtio-net", name=self.name, socket=self.socket_path, queue_size=self.queue_size,
                        link=link is not None, last_error=self.last_error, backlog=len(self._backlog),
                        features=[] if link is None else [n for n in describe(link.features)
                                                          if n != "VHOST_USER_PROTOCOL_FEATURES"],
                        rings=[] if link is None or self._closed else link.ring_states())
            return snap

    def describe(self) -> str:
        """One line: link state and negotiated features."""
        link = self._link
        if link is None:
            return f"{self.name}: link down: {self.last_error}"
        feats = "+".join(n for n in describe(link.features) if n != "VHOST_USER_PROTOCOL_FEATURES")
        return f"{self.name}: link up on {self.socket_path}, features {feats}"

    def fileno(self) -> int | None:
        """An epoll fd, readable when receive() has something to do (see module doc)."""
        return None if self._closed else self._epoll.fileno()

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"{self.name} is closed")

    # -- connection life ---------------------------------------------------------
    def _connect(self) -> None:
        frontend = VhostUserFrontend(
            self.socket_path, queue_size=self.queue_size,
            pool_size=pool_bytes(self.queue_size, self.mtu, self._big_slots),
            features=self.wanted_features, mtu=self.mtu, timeout=self.timeout, name=self.name,
            tracer=self.tracer)
        try:
            link = VirtioLink(frontend, self.mtu, self.counters, self._big_slots, self.tracer, self.events)
            for fd in link.fds():
                self._epoll.register(fd, select.EPOLLIN)
        except BaseException:
            frontend.close(stop_rings=False)
            raise
        self._link = link
        offloads = NicOffloads.NONE
        if link.tx_csum:
            offloads |= NicOffloads.TX_CSUM
        if link.tso:
            offloads |= NicOffloads.TSO
        if link.guest_csum:
            offloads |= NicOffloads.RX_CSUM_TRUSTED
        if link.guest_tso:
            offloads |= NicOffloads.RX_GSO
        self.offloads = offloads
        # An interrupt may have been missed while nothing was watching: look now.
        self._poke()

    def _link_down(self, reason: str, *, stop_rings: bool) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        for fd in link.fds():
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        link.close(stop_rings)
        self.counters["link_down"] += 1
        self.last_error = reason
        if self.reconnect:
            log.error("%s: link down: %s; reconnecting every %g s", self.name, reason, self.reconnect_interval)
            self._next_attempt = time.monotonic() + self.reconnect_interval
            self._arm_timer(self.reconnect_interval)
        else:
            log.error("%s: link down: %s", self.name, reason)

    def _maybe_reconnect(self) -> None:
        if not self.reconnect or self._closed:
            return
        now = time.monotonic()
        if now < self._next_attempt:
            self._arm_timer(self._next_attempt - now)
            return
        self._next_attempt = now + self.reconnect_interval
        try:
            self._connect()
        except (BackendError, OSError) as e:
            self.counters["reconnect_failures"] += 1
            log.debug("%s: reconnect failed: %s", self.name, e)
            self._arm_timer(self.reconnect_interval)
            return
        self.counters["reconnects"] += 1
        self.last_error = None
        log.info("%s: link up again: %s", self.name, self.describe())

    def _arm_timer(self, delay: float) -> None:
        # Wakes whoever waits on fileno() when the next attempt is due. At
        # most one timer is pending; it counts as gone once it has fired.
        with self._wake_lock:
            if self._timer_pending or self._wake_fd < 0:
                return
            self._timer_pending = True
        timer = threading.Timer(max(delay, 0.0), self._timer_fired)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _timer_fired(self) -> None:
        with self._wake_lock:
            self._timer_pending = False
        self._poke()

    def _poke(self) -> None:
        """Make fileno() readable (so the owner calls receive())."""
        with self._wake_lock:
            if self._wake_fd >= 0:
                try:
                    os.write(self._wake_fd, EVENTFD_ONE)
                except OSError:
                    pass

    # -- the Nic API ---------------------------------------------------------------
    def transmit(self, frames: Iterable[TxItem]) -> int:
        """Queue a burst of frames (publish once, kick at most once); frames
        that do not fit or cannot be sent are dropped and counted."""
        if not isinstance(frames, list):
            frames = list(frames)
        return self._transmit(VirtioLink.transmit, frames, None)

    def transmit_frames(self, frames, metas: list | None = None) -> int:
        """`transmit` for a burst given as frames (a list or a `TxFrames`) and
        one list of metas (None: all finished): no pair per frame."""
        return self._transmit(VirtioLink.transmit_frames, frames, metas)

    def _transmit(self, send, frames, metas) -> int:
        with self._lock:
            self._check_open()
            link = self._link
            if link is None:
                self._maybe_reconnect()
                link = self._link
                if link is None:
                    self.counters["tx_drop_link_down"] += len(frames)
                    if self.tracer.on:
                        for item in frames:
                            size = len(item[0]) if is_pair(item) else (
                                len(item) if isinstance(item, (bytes, bytearray, memoryview)) else None)
                            self.tracer.emit("drop", TX_RING, "tx", reason="link_down", len=size)
                    return 0
            try:
                taken, full = send(link, frames) if metas is None else send(link, frames, metas)
            except (QueueBroken, GuestMemoryError) as e:
                self._link_down(f"TX ring broken: {e}", stop_rings=True)
                return 0
            except OSError as e:
                self._link_down(f"kicking the TX ring failed: {e.strerror or e}", stop_rings=False)
                return 0
            if full:
                # A ring that stays full may mean the back-end is gone: look.
                reason = link.check()
                if reason is not None:
                    self._link_down(reason, stop_rings=False)
            return taken

    def receive(self, max: int = 64) -> list[tuple[bytes, FrameMeta]]:
        """Up to `max` received frames, never blocking (see the module doc)."""
        with self._lock:
            self._check_open()
            link = self._link
            for fd, _ in self._epoll.poll(0):
                if fd == self._wake_fd:
                    drain_eventfd(fd)
                elif link is not None and fd == link.rx_call_fd:
                    if drain_eventfd(fd):
                        self.counters["rx_interrupts"] += 1
                        if self.tracer.on:
                            self.tracer.emit("call", RX_RING, "rx")
                elif link is not None and (fd == link.sock_fd or fd in link.err_fds):
                    reason = link.check()
                    if reason is not None:
                        self._link_down(reason, stop_rings=fd != link.sock_fd)
                        link = None
            backlog = self._backlog
            if link is None:
                self._maybe_reconnect()
                link = self._link
            if link is not None and len(backlog) < max:
                try:
                    link.poll_rx(backlog)
                except (QueueBroken, GuestMemoryError) as e:
                    self._link_down(f"RX ring broken: {e}", stop_rings=True)
                    link = None
                except OSError as e:
                    self._link_down(f"kicking the RX ring failed: {e.strerror or e}", stop_rings=False)
                    link = None
            out = []
            while backlog and len(out) < max:
                out.append(backlog.popleft())
            if backlog:
                self._poke()                    # more is waiting: stay readable
            elif link is not None:
                try:
                    if link.enable_rx_interrupts():
                        self._poke()            # used buffers came in meanwhile
                except QueueBroken as e:
                    self._link_down(f"RX ring broken: {e}", stop_rings=True)
            return out

    def close(self) -> None:
        """Stop the rings, hang up, release everything; later calls raise EBADF."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            timer = self._timer
            if timer is not None:
                timer.cancel()
            link, self._link = self._link, None
            if link is not None:
                for fd in link.fds():
                    try:
                        self._epoll.unregister(fd)
                    except OSError:
                        pass
                link.close(stop_rings=True)
            self._backlog.clear()
            self._epoll.close()
            with self._wake_lock:
                os.close(self._wake_fd)
                self._wake_fd = -1

    def __enter__(self) -> "VirtioNetNic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
