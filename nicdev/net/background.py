"""Run a switch's event loop on a background thread.

For programs that do other things while the switch runs (the demo, tests,
benchmarks): everything that touches the switch or its ports runs on the
loop's thread through `call()`, so the single-threaded design holds.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, TypeVar

from .loop import EventLoop

T = TypeVar("T")

__all__ = ["BackgroundSwitch"]


class BackgroundSwitch:
    def __init__(self, ageing: float = 300.0) -> None:
        from .switch import Switch

        self.loop = EventLoop()
        self.switch = Switch(self.loop, ageing=ageing)
        self._thread = threading.Thread(target=self.loop.run, name="mnet-switch", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run fn() on the loop thread and return its result (or raise its exception)."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def runner() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the caller's thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(runner)
        return future.result(timeout)

    def add_port(self, port):
        self.call(lambda: self.switch.add_port(port))
        return port

    def remove_port(self, name: str) -> None:
        self.call(lambda: self.switch.remove_port(name))

    def summary(self) -> str:
        return self.call(self.switch.summary)

    def stats(self) -> dict:
        return self.call(self.switch.stats)

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.switch.close, timeout=10)
            finally:
                self.loop.stop()
                self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> "BackgroundSwitch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
