"""The threaded web server: one acceptor thread hands connections to a fixed pool of
worker threads through a bounded queue.

When every worker is busy a connection waits in the queue; when the queue is
full too, the acceptor answers it itself with ``reject`` (plain HTTP: a 503
sent without blocking) and leaves it in a short lingering close that the
acceptor finishes between accepts, so a flood costs no thread and never
blocks accepting.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

ACCEPT_TICK = 0.25   # seconds between looks at `stopping` (and at lingering rejects)
REJECT_LINGER = 1.0  # seconds a rejected connection's input is read for before it is closed
JOIN = 2.0


class WorkerPool:
    """``serve(sock, peer)`` runs on one of ``workers`` threads per accepted connection
    (and closes the socket); ``reject(sock)`` answers one that found the queue full."""

    def __init__(self, listener, *, label: str, workers: int, queue_size: int, now: Callable[[], float],
                 stopping: threading.Event, serve: Callable, reject: Callable, count: Callable[[str], None],
                 report: Callable[[str], None]) -> None:
        self.listener, self.label, self.now, self.stopping = listener, label, now, stopping
        self.serve, self.reject, self.count, self.report = serve, reject, count, report
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.workers = [threading.Thread(target=self._work, name=f"{label} worker {i}", daemon=True)
                        for i in range(workers)]
        self.lingering: list[tuple[object, float]] = []  # (rejected socket, close-by time)

    def start(self) -> threading.Thread:
        """Start the workers and the acceptor; the acceptor's thread is returned (it ends once
        ``stopping`` is set, after the workers, and closes the listener)."""
        for worker in self.workers:
            worker.start()
        acceptor = threading.Thread(target=self._accept_loop, name=f"{self.label} acceptor", daemon=True)
        acceptor.start()
        return acceptor

    def _accept_loop(self) -> None:
        self.listener.set_timeout(ACCEPT_TICK)
        try:
            while not self.stopping.is_set():
                self._finish_lingering()
                try:
                    sock, peer = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break  # the stack stopped (it closes every socket)
                self.count("connections_accepted")
                self._hand_over(sock, peer)
        finally:
            self.stopping.set()
            self.listener.close()
            for worker in self.workers:
                worker.join(JOIN)
            self._close_unserved()

    def _hand_over(self, sock, peer) -> None:
        try:
            self.queue.put_nowait((sock, peer))
        except queue.Full:
            self.count("connections_rejected")
            try:
                if self.reject(sock):
                    self.lingering.append((sock, self.now() + REJECT_LINGER))
                    return
            except OSError:
                pass
            sock.close()

    def _finish_lingering(self) -> None:
        """Close rejected connections whose peer has closed (or whose time is up)."""
        still = []
        for sock, close_by in self.lingering:
            if self._drained(sock) or self.now() >= close_by:
                sock.close()
            else:
                still.append((sock, close_by))
        self.lingering = still

    @staticmethod
    def _drained(sock) -> bool:
        """Read what waits without blocking; True once the peer's FIN (or an error) is seen."""
        try:
            while sock.recv(65536):
                pass
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, peer = self.queue.get(timeout=ACCEPT_TICK)
            except queue.Empty:
                continue
            try:
                self.serve(sock, peer)
            except Exception as exc:  # one connection's failure is reported, never the worker's end
                self.report(f"{self.label} {peer}: {type(exc).__name__}: {exc}")
                sock.close()

    def _close_unserved(self) -> None:
        while True:
            try:
                sock, _ = self.queue.get_nowait()
            except queue.Empty:
                break
            sock.close()
        for sock, _ in self.lingering:
            sock.close()
        self.lingering = []
