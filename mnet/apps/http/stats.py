"""What one server has done so far (thread-safe): connections and responses by status."""
from __future__ import annotations

import threading
from collections import Counter


class ServerStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self.active = 0  # connections a worker is serving now

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def response(self, status: int) -> None:
        with self._lock:
            self._counts["responses"] += 1
            self._statuses[status] += 1

    def busy(self, delta: int) -> None:
        with self._lock:
            self.active += delta

    def snapshot(self) -> dict:
        """``{"connections_accepted": ..., "responses": ..., "by_status": {"200": ...}, ...}``."""
        with self._lock:
            return {**self._counts, "active_connections": self.active,
                    "by_status": {str(k): v for k, v in sorted(self._statuses.items())}}
