"""What a person reads: the progress line (stderr) and the one-line summaries."""
from __future__ import annotations

from typing import TextIO

from .transfer import ReceiveResult, SendResult

FIRST_AFTER = 1.0     # seconds: small files finish without a progress line


def rate(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 1e-6) / 1e6:.2f} MB/s"


def send_summary(r: SendResult) -> str:
    c = r.counters
    sent, again = c["datagrams_sent"], c["retransmitted"]
    return (f"sent {r.name}: {r.size} bytes in {r.seconds:.2f} s ({rate(r.size, r.seconds)}); "
            f"{sent} datagrams sent, {again} retransmitted, {c['timeouts']} timeouts; "
            f"sha256 {r.sha256.hex()} {'match' if r.matched else 'MISMATCH'}")


def receive_summary(r: ReceiveResult) -> str:
    c = r.counters
    counts = (f"{c['datagrams_received']} datagrams received, {c['duplicates']} duplicates, "
              f"{c['out_of_window']} out of window, {c['malformed']} malformed")
    if r.ok:
        return (f"received {r.name} from {r.peer[0]}:{r.peer[1]} into {r.path}: {r.size} bytes in "
                f"{r.seconds:.2f} s ({rate(r.size, r.seconds)}); {counts}; sha256 {r.sha256.hex()} match")
    return f"failed to receive {r.name} from {r.peer[0]}:{r.peer[1]}: {r.error} ({counts})"


class Progress:
    """A progress line on ``stream``, rewritten in place on a terminal, one line a second otherwise;
    the first one a second after the transfer started."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._next = 0.0
        self._shown = False

    def show(self, what: str, done: int, total: int, extra: str, started: float, now: float) -> None:
        """``what: done/total bytes (P %), rate, extra``."""
        if now < max(self._next, started + FIRST_AFTER):
            return
        self._next = now + (0.25 if self.tty else 1.0)
        pct = 100.0 * done / total if total else 100.0
        line = f"{what}: {done}/{total} bytes ({pct:.0f} %), {rate(done, now - started)}, {extra}"
        self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.stream.flush()
        self._shown = True

    def end(self) -> None:
        if self._shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
