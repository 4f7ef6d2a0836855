"""The threaded web server: one acceptor thread hands connections to a fixed pool of
worker threads through a bounded queue.

When every worker is busy a connection waits in the queue; when the queue is
full too, it is turned away without blocking the acceptor, in one of two ways.
Plain HTTP: the acceptor answers it itself with ``reject`` (a 503 sent without
blocking) and leaves it in a short lingering close that it finishes between
accepts, so a flood costs no thread. HTTPS, where an answer needs a TLS
handshake first: ``overflow`` runs on one extra thread fed by a queue of
``OVERFLOW_SLOTS``; when that is full too, the connection is closed unanswered
(and counted), so the cost of a flood stays one thread.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

ACCEPT_TICK = 0.25   # seconds between looks at `stopping` (and at lingering rejects)
REJECT_LINGER = 1.0  # seconds a rejected connection's input is read for before it is closed
OVERFLOW_SLOTS = 4   # turned-away connections that may wait for the overflow thread
JOIN = 2.0


class WorkerPool:
    """``serve(sock, peer)`` runs on one of ``workers`` threads per accepted connection
    (and closes the socket). A connection that finds the queue full is answered by
    ``reject(sock)`` on the acceptor (without blocking; True: linger, False: close
    it) or, if given, by ``overflow(sock, peer)`` on the overflow thread (which may
    block, bounded, and closes the socket)."""

    def __init__(self, listener, *, label: str, workers: int, queue_size: int, now: Callable[[], float],
                 stopping: threading.Event, serve: Callable, count: Callable[[str], None],
                 report: Callable[[str], None], reject: Callable | None = None,
                 overflow: Callable | None = None) -> None:
        self.listener, self.label, self.now, self.stopping = listener, label, now, stopping
        self.serve, self.reject, self.overflow, self.count, self.report = serve, reject, overflow, count, report
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.overflow_queue: queue.Queue = queue.Queue(maxsize=OVERFLOW_SLOTS)
        self.workers = [threading.Thread(target=self._work, args=(self.queue, serve), name=f"{label} worker {i}",
                                         daemon=True) for i in range(workers)]
        self.threads = list(self.workers)  # the workers and, for ``overflow``, its thread
        if overflow is not None:
            self.threads.append(threading.Thread(target=self._work, args=(self.overflow_queue, overflow),
                                                 name=f"{label} overflow", daemon=True))
        self.lingering: list[tuple[object, float]] = []  # (rejected socket, close-by time)

    def start(self) -> threading.Thread:
        """Start the workers and the acceptor; the acceptor's thread is returned (it ends once
        ``stopping`` is set, after the workers, and closes the listener)."""
        for thread in self.threads:
            thread.start()
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
            for thread in self.threads:
                thread.join(JOIN)
            self._close_unserved()

    def _hand_over(self, sock, peer) -> None:
        try:
            self.queue.put_nowait((sock, peer))
        except queue.Full:
            self.count("connections_rejected")
            if not self._turn_away(sock, peer):
                sock.close()

    def _turn_away(self, sock, peer) -> bool:
        """Have a connection that found the queue full answered with 503; False if it must be
        closed unanswered."""
        if self.overflow is not None:
            try:
                self.overflow_queue.put_nowait((sock, peer))
                return True
            except queue.Full:
                self.count("connections_dropped")  # the overflow thread is busy too
                return False
        try:
            if self.reject(sock):
                self.lingering.append((sock, self.now() + REJECT_LINGER))
                return True
        except OSError:
            pass
        return False

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

    def _work(self, jobs: queue.Queue, handle: Callable) -> None:
        while not self.stopping.is_set():
            try:
                sock, peer = jobs.get(timeout=ACCEPT_TICK)
            except queue.Empty:
                continue
            try:
                handle(sock, peer)
            except Exception as exc:  # one connection's failure is reported, never the worker's end
                self.report(f"{self.label} {peer}: {type(exc).__name__}: {exc}")
                sock.close()

    def _close_unserved(self) -> None:
        for jobs in (self.queue, self.overflow_queue):
            while True:
                try:
                    sock, _ = jobs.get_nowait()
                except queue.Empty:
                    break
                sock.close()
        for sock, _ in self.lingering:
            sock.close()
        self.lingering = []
