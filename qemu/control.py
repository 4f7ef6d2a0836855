"""Synchronous QMP control of a running QEMU, built on qemu.qmp.

qemu.qmp's `QMPClient` is asyncio-only. `QmpControl` runs it on a private
event loop in a daemon thread and offers plain blocking methods with time
limits, so callers (the CLI, tests, `qemu.vm`) need no event loop of their
own and do not disturb one they might have. The thread also keeps reading
while nobody is calling, so events (DEVICE_DELETED, RESET, SHUTDOWN...) are
collected as they happen and can be waited for afterwards without a race:
`event_mark()` before a command, then `wait_event(..., after=mark)`.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Mapping

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate

from qemu.errors import (QmpCommandError, QmpConnectError, QmpError,
                         QmpTimeoutError)

__all__ = ["QmpControl", "QmpEvent"]

_log = logging.getLogger(__name__)

QmpEvent = dict   # {"event": NAME, "data": {...}, "timestamp": {...}, "seq": N}
EventMatch = Mapping[str, Any] | Callable[[QmpEvent], bool] | None

# Kept events; old ones fall off so a long-running VM does not grow memory.
EVENT_BACKLOG = 1000


class _Collector(EventListener):
    """Feeds every QMP event into QmpControl's thread-safe backlog."""

    def __init__(self, sink: Callable[[dict], None]) -> None:
        super().__init__()
        self._sink = sink

    async def put(self, event) -> None:   # called on the QMP loop's thread
        self._sink(dict(event))


class QmpControl:
    """A blocking QMP client for one QEMU's monitor socket.

    Every method that talks to QEMU raises `QmpConnectError` when there is
    no (longer a) connection, `QmpCommandError` when QEMU refuses a command
    and `QmpTimeoutError` when an answer or event does not come in time.
    """

    def __init__(self, socket_path: str | os.PathLike, *,
                 command_timeout: float = 30.0) -> None:
        self.socket_path = os.fspath(socket_path)
        self.command_timeout = command_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: QMPClient | None = None
        self._cond = threading.Condition()
        self._events: collections.deque[QmpEvent] = collections.deque(maxlen=EVENT_BACKLOG)
        self._seq = 0

    # -- connection ----------------------------------------------------------

    def connect(self, timeout: float = 10.0,
                alive: Callable[[], bool] | None = None) -> None:
        """Connect and negotiate, retrying until `timeout` s have passed.

        QEMU creates the socket a little after it starts, so refusals are
        retried. `alive` (e.g. ``lambda: proc.alive``) stops the retries as
        soon as it returns False.
        """
        if self.connected:
            return
        self._start_loop()
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            if alive is not None and not alive():
                raise QmpConnectError(f"QEMU exited before its QMP socket "
                                      f"{self.socket_path} could be connected")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpConnectError(f"could not connect to QMP at {self.socket_path} "
                                      f"within {timeout:g} s: {last}")
            if not os.path.exists(self.socket_path):
                # Not created yet; qemu.qmp would log every failed attempt as an error.
                last = FileNotFoundError(f"{self.socket_path} does not exist")
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            client = QMPClient(f"qmp:{os.path.basename(self.socket_path)}")
            client.register_listener(_Collector(self._add_event))
            try:
                self._call(client.connect(self.socket_path), min(remaining, 5.0))
            except (QMPError, OSError, EOFError) as exc:   # incl. QmpTimeoutError
                last = exc
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            self._client = client
            return

    @property
    def connected(self) -> bool:
        """True while the QMP session is up."""
        return self._client is not None and self._client.runstate == Runstate.RUNNING

    def close(self) -> None:
        """Disconnect (errors from a dead QEMU are ignored) and stop the thread."""
        client, self._client = self._client, None
        if client is not None and self._loop is not None:
            try:
                self._call(client.disconnect(), 5.0)
            except (QMPError, OSError, EOFError, QmpError):
                pass   # QEMU already gone: nothing left to tidy.
        if self._loop is not None:
            try:
                self._call(_cancel_other_tasks(), 5.0)
            except QmpTimeoutError:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5.0)
            if not self._loop.is_running():
                self._loop.close()
            self._loop = None
            self._thread = None
            atexit.unregister(self._atexit)

    def __enter__(self) -> "QmpControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands ------------------------------------------------------------

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        client = self._client
        if client is None or self._loop is None:
            raise QmpConnectError(f"not connected to QMP at {self.socket_path}")
        args = dict(arguments) if arguments else None
        try:
            return self._call(client.execute(command, args),
                              self.command_timeout if timeout is None else timeout,
                              what=f"QMP {command}")
        except ExecuteError as exc:
            raise QmpCommandError(command, exc.error_class, str(exc)) from None
        except QmpError:
            raise
        except (QMPError, OSError, EOFError) as exc:
            raise QmpConnectError(f"QMP {command} failed: connection to "
                                  f"{self.socket_path} lost ({exc or type(exc).__name__})") from exc

    def query_status(self) -> dict:
        """``{'status': 'running'|'paused'|..., 'running': bool, ...}``."""
        return self.execute("query-status")

    def set_link(self, name: str, up: bool) -> None:
        """Set the link of a NIC (device id) or of a netdev (netdev id)."""
        self.execute("set_link", {"name": name, "up": bool(up)})

    def device_add(self, driver: str = "virtio-net-pci", *, id: str,
                   **props: Any) -> None:
        """Hot-plug a device, e.g. ``device_add(id='net0-dev', netdev='net0',
        mac='52:54:00:..', bus='net0-rp')``. None-valued props are left out."""
        args = {"driver": driver, "id": id}
        args.update({k: v for k, v in props.items() if v is not None})
        self.execute("device_add", args)

    def device_del(self, id: str, timeout: float = 10.0) -> QmpEvent:
        """Hot-unplug device `id` and wait for QEMU's DEVICE_DELETED event.

        The guest has to cooperate (ACPI hot-plug on pc, PCIe hot-plug on a
        q35 root port); a guest that ignores the request gets a
        QmpTimeoutError after `timeout` s and the device stays.
        """
        mark = self.event_mark()
        self.execute("device_del", {"id": id})
        try:
            return self.wait_event("DEVICE_DELETED", timeout,
                                   match={"device": id}, after=mark)
        except QmpTimeoutError:
            raise QmpTimeoutError(f"device {id!r} was not removed within {timeout:g} s "
                                  "(the guest did not accept the unplug request)") from None

    def netdev_add(self, type: str, id: str, **props: Any) -> None:
        """Add a netdev: ``netdev_add('stream', 'net1', server=False,
        addr={'type': 'unix', 'path': PATH})``."""
        self.execute("netdev_add", {"type": type, "id": id, **props})

    def netdev_del(self, id: str) -> None:
        self.execute("netdev_del", {"id": id})

    def chardev_add(self, id: str, backend: Mapping[str, Any]) -> Any:
        """Add a chardev, e.g. a vhost-user socket: ``chardev_add('net1-chr',
        {'type': 'socket', 'data': {'addr': {'type': 'unix', 'data':
        {'path': PATH}}, 'server': False, 'reconnect': 1}})``."""
        return self.execute("chardev-add", {"id": id, "backend": dict(backend)})

    def chardev_remove(self, id: str) -> None:
        self.execute("chardev-remove", {"id": id})

    def set_action(self, **actions: str) -> None:
        """Change what QEMU does on reboot/shutdown/panic/watchdog at runtime."""
        self.execute("set-action", actions)

    def system_reset(self) -> None:
        """Hard-reset the guest (like the reset button)."""
        self.execute("system_reset")

    def system_powerdown(self) -> None:
        """Press the ACPI power button; the guest decides what to do."""
        self.execute("system_powerdown")

    def quit(self) -> None:
        """Ask QEMU to exit. A connection dropped by the exiting QEMU is fine."""
        try:
            self.execute("quit", timeout=5.0)
        except (QmpConnectError, QmpTimeoutError):
            pass

    # -- events --------------------------------------------------------------

    def event_mark(self) -> int:
        """Sequence number of the newest event so far (0 if none yet)."""
        with self._cond:
            return self._seq

    def events(self, after: int = 0) -> list[QmpEvent]:
        """Copies of the kept events newer than `after`."""
        with self._cond:
            return [dict(e) for e in self._events if e["seq"] > after]

    def wait_event(self, name: str, timeout: float, *, match: EventMatch = None,
                   after: int = 0) -> QmpEvent:
        """Wait for event `name` newer than mark `after` and return it.

        match: a dict of ``data`` members the event must have, or a
        predicate on the whole event.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events:
                    if event["seq"] > after and event["event"] == name \
                            and _matches(event, match):
                        return dict(event)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QmpTimeoutError(f"no QMP event {name} within {timeout:g} s")
                if self._client is None:
                    raise QmpConnectError(f"waiting for QMP event {name}: not connected")
                self._cond.wait(min(remaining, 0.5))

    def _add_event(self, event: dict) -> None:
        with self._cond:
            self._seq += 1
            event["seq"] = self._seq
            self._events.append(event)
            self._cond.notify_all()

    # -- the private event loop ------------------------------------------------

    def _start_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        # Tasks of a connection QEMU dropped end with errors nobody awaits;
        # log them for debugging instead of printing them on stderr.
        loop.set_exception_handler(
            lambda _loop, ctx: _log.debug("QMP loop: %s", ctx.get("message"),
                                          exc_info=ctx.get("exception")))
        thread = threading.Thread(target=loop.run_forever, daemon=True,
                                  name=f"qmp-{os.path.basename(self.socket_path)}")
        thread.start()
        self._loop, self._thread = loop, thread
        # A forgotten close() would leave the loop's tasks to be destroyed
        # noisily at interpreter exit; close quietly instead.
        ref = weakref.ref(self)
        self._atexit = lambda: (ref() is not None and ref().close())
        atexit.register(self._atexit)

    def _call(self, coro, timeout: float, what: str = "QMP") -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise QmpTimeoutError(f"{what}: no answer from {self.socket_path} "
                                  f"within {timeout:g} s") from None


async def _cancel_other_tasks() -> None:
    # Leftovers of a connection QEMU dropped; cancel them so that stopping the
    # loop does not leave pending tasks behind.
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _matches(event: QmpEvent, match: EventMatch) -> bool:
    if match is None:
        return True
    if callable(match):
        return bool(match(event))
    data = event.get("data") or {}
    return all(data.get(k) == v for k, v in match.items())
