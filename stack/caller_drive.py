"""Run-to-completion: a caller blocked on a socket drives the NIC itself.

Without this, a blocking ``recv`` costs three thread hand-offs: the NIC wakes
the stack's thread, which takes the frame in and wakes the caller through its
condition variable. With it, the blocked caller's own thread waits on the
NIC's descriptor, and when a frame comes it takes it in and runs the
interface (under the stack's lock, as the stack's thread would), so the reply
reaches the caller on the thread that asked for it.

One caller drives at a time (:attr:`CallerDrive.busy`); other blocked callers
wait on their conditions as before and are woken by the driver's work. A
socket's condition is a :class:`DrivenCondition`: notifying it while its
thread drives (and so sleeps in ``epoll``, not on the condition) kicks that
thread's eventfd, so ``close()`` from another thread, a shutdown or the
stack's failure still wakes it at once.

This module only holds the descriptors and the wake-up; the rounds of work
are the runtime's (:meth:`stack.runtime.Stack.wait_locked`).
"""
from __future__ import annotations

import os
import select
import threading

__all__ = ["CallerDrive", "DrivenCondition"]


class CallerDrive:
    """What a driving caller waits on: the NIC's descriptor and a kick eventfd."""

    def __init__(self, nic_fd: int) -> None:
        self.busy = False  # a caller drives now (the stack's lock guards this)
        self.cond: threading.Condition | None = None  # the driver's condition while it sleeps
        self.close_when_done = False  # the stack stopped while a caller drove
        self._kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(nic_fd, select.EPOLLIN)
        self._epoll.register(self._kick_fd, select.EPOLLIN)
        self.closed = False

    def kick(self) -> None:
        """Wake the driver out of :meth:`wait` (the stack's lock held)."""
        if not self.closed:
            os.eventfd_write(self._kick_fd, 1)

    def wait(self, timeout: float | None) -> None:
        """Sleep until the NIC may have input, a kick, or ``timeout`` seconds (lock released)."""
        for fd, _ in self._epoll.poll(-1 if timeout is None else timeout):
            if fd == self._kick_fd:
                try:
                    os.eventfd_read(self._kick_fd)
                except BlockingIOError:
                    pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._epoll.close()
            os.close(self._kick_fd)


class DrivenCondition(threading.Condition):
    """A socket's condition on the stack's lock that also wakes its thread while it drives."""

    def __init__(self, lock: threading.Lock, drive: CallerDrive | None) -> None:
        super().__init__(lock)
        self._drive = drive

    def notify(self, n: int = 1) -> None:  # notify_all() comes here too
        super().notify(n)
        drive = self._drive
        if drive is not None and drive.cond is self:
            drive.kick()
