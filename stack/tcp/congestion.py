"""Congestion control: NewReno (RFC 5681/6582) and CUBIC (RFC 9438).

The connection owns loss detection and recovery (which bytes are lost,
what may be sent); an algorithm here only answers "how large is cwnd" and
"what is ssthresh" at four moments: an ACK of new data outside recovery,
entering fast recovery, a retransmission timeout, and leaving recovery.
Windows are in bytes; ``mss`` is the sender's effective MSS.

Pick one by name with :func:`make_congestion_control` (``"cubic"``, the
default as in Linux, or ``"newreno"``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["CongestionControl", "NewReno", "Cubic", "make_congestion_control", "ALGORITHMS"]

INFINITE_SSTHRESH = 1 << 62


class CongestionControl(ABC):
    """Common state: ``cwnd`` and ``ssthresh`` in bytes, slow start."""

    name = "base"

    def __init__(self, mss: int, initial_window: int = 10) -> None:
        if mss <= 0 or initial_window <= 0:
            raise ValueError("mss and the initial window must be positive")
        self.mss = mss
        self.initial_window = initial_window
        self.cwnd = initial_window * mss  # RFC 6928 IW10, like Linux
        self.ssthresh = INFINITE_SSTHRESH

    def set_mss(self, mss: int) -> None:
        """The handshake settled the MSS: rescale the initial window to it."""
        if mss > 0 and mss != self.mss:
            segs = max(1, self.cwnd // self.mss)
            self.mss = mss
            self.cwnd = segs * mss

    def set_cwnd(self, cwnd: int) -> None:
        """Set the window directly (undoing a needless reduction)."""
        self.cwnd = max(int(cwnd), self.mss)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def _slow_start(self, acked: int) -> int:
        """Grow by the bytes acked, up to ssthresh; return what is left for
        congestion avoidance."""
        # Byte counting (RFC 3465) without the L limit, as Linux: a stretch ACK
        # (one ACK for a whole burst, MUST-58) still doubles cwnd per round trip.
        # But not past ssthresh (as Linux's tcp_slow_start): after recovery, one
        # ACK for a whole window would otherwise overshoot the reduced target.
        grow = min(acked, self.ssthresh - self.cwnd)
        self.cwnd += grow
        return acked - grow

    @abstractmethod
    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        """``acked`` new bytes were acknowledged outside recovery: grow cwnd."""

    @abstractmethod
    def on_congestion(self, now: float, flight: int) -> None:
        """Fast retransmit: set ssthresh and cwnd for recovery."""

    @abstractmethod
    def on_rto(self, now: float, flight: int) -> None:
        """Retransmission timeout: ssthresh from the algorithm, cwnd = 1 segment."""

    def on_rto_in_recovery(self, now: float) -> None:
        """A timeout while a recovery is already under way (fast recovery, or the
        same data timing out again): cwnd = 1 segment, ssthresh kept.

        The reduction for this loss was made when the episode began; the
        flight now is what the recovery left and would cut ssthresh twice for
        one event (RFC 5681 3.1 sets ssthresh when a segment "has not yet been
        resent by way of the retransmission timer"; Linux's tcp_enter_loss
        keeps the ssthresh of a recovery or loss episode still running).
        """
        self.cwnd = self.mss

    def on_recovery_exit(self, now: float, flight: int) -> None:
        """Fast recovery ended: cwnd = ssthresh (RFC 6582 3.2 step 6, its second
        choice; where RFC 6937 PRR ends, and what Linux does).

        Not the first choice, min(ssthresh, flight + SMSS): the connection
        takes a batch of ACKs before it sends again, so the flight it sees at
        the ACK that ends recovery is only what is left of the batch, and cwnd
        would fall below ssthresh after nearly every recovery.
        """
        self.cwnd = max(self.ssthresh, self.mss)


class NewReno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance; halve on loss."""

    name = "newreno"

    def __init__(self, mss: int, initial_window: int = 10) -> None:
        super().__init__(mss, initial_window)
        self._acked = 0  # bytes acked since cwnd last grew in congestion avoidance

    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        if self.cwnd < self.ssthresh:
            acked = self._slow_start(acked)
            if acked <= 0:
                return
        self._acked += acked
        if self._acked >= self.cwnd:
            self._acked -= self.cwnd
            self.cwnd += self.mss

    def on_congestion(self, now: float, flight: int) -> None:
        # Half of cwnd, as Linux's tcp_reno_ssthresh (RFC 9438 4.6 allows cwnd where it
        # only grows while it is the limit). ``flight`` is what is left of a batch of
        # ACKs the connection has not answered yet, and includes limited transmit.
        self.ssthresh = max(self.cwnd // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._acked = 0

    def on_rto(self, now: float, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._acked = 0

    def on_rto_in_recovery(self, now: float) -> None:
        super().on_rto_in_recovery(now)
        self._acked = 0


class Cubic(CongestionControl):
    """RFC 9438 CUBIC: a cubic window curve around W_max, Reno-friendly below it.

    Internally in segments (floats); ``cwnd`` stays in bytes for the
    connection.
    """

    name = "cubic"
    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int, initial_window: int = 10) -> None:
        super().__init__(mss, initial_window)
        self.w_max = 0.0  # segments, window before the last reduction
        self.k = 0.0
        self.epoch_start: float | None = None
        self.w_est = 0.0
        self.cwnd_prior = 0.0
        self._seg = float(self.cwnd) / mss  # cwnd in segments, fractional
        self.alpha = 3 * (1 - self.BETA) / (1 + self.BETA)

    def set_mss(self, mss: int) -> None:
        super().set_mss(mss)
        self._seg = float(self.cwnd) / self.mss

    def set_cwnd(self, cwnd: int) -> None:
        super().set_cwnd(cwnd)
        self._seg = float(self.cwnd) / self.mss

    def _w_cubic(self, t: float) -> float:
        return self.C * (t - self.k) ** 3 + self.w_max

    def _set_seg(self, seg: float) -> None:
        self._seg = seg
        self.cwnd = max(int(seg * self.mss), self.mss)

    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        if self.cwnd < self.ssthresh:
            acked = self._slow_start(acked)
            self._seg = float(self.cwnd) / self.mss
            if acked <= 0:
                return
        seg = self._seg
        if self.epoch_start is None:
            # A new congestion avoidance stage (RFC 9438 4.2).
            self.epoch_start = now
            if seg < self.w_max:
                self.k = ((self.w_max - seg) / self.C) ** (1 / 3)
            else:
                self.k = 0.0
                self.w_max = seg
            self.w_est = seg
        t = now - self.epoch_start
        rtt = srtt if srtt is not None else 0.0
        acked_seg = acked / self.mss
        # Reno-friendly estimate (4.3): alpha until it reaches the old window.
        alpha = self.alpha if self.w_est < self.cwnd_prior else 1.0
        self.w_est += alpha * acked_seg / seg
        w_t = self._w_cubic(t)
        if w_t < self.w_est:
            self._set_seg(max(seg, self.w_est))
            return
        target = self._w_cubic(t + rtt)
        target = min(max(target, seg), 1.5 * seg)
        self._set_seg(seg + (target - seg) / seg * acked_seg)

    def _reduce(self) -> None:
        seg = self._seg
        # Fast convergence (4.7): give up bandwidth sooner when W_max shrinks.
        self.w_max = seg * (1 + self.BETA) / 2 if seg < self.w_max else seg
        self.cwnd_prior = seg
        self.epoch_start = None
        self.ssthresh = max(round(seg * self.BETA * self.mss), 2 * self.mss)

    def on_congestion(self, now: float, flight: int) -> None:
        self._reduce()
        self._set_seg(self.ssthresh / self.mss)

    def on_rto(self, now: float, flight: int) -> None:
        self._reduce()
        self._set_seg(1.0)

    def on_rto_in_recovery(self, now: float) -> None:
        # W_max and K stay those of the reduction already made; growth starts a new epoch.
        self.epoch_start = None
        self._set_seg(1.0)

    def on_recovery_exit(self, now: float, flight: int) -> None:
        super().on_recovery_exit(now, flight)
        self._seg = float(self.cwnd) / self.mss


ALGORITHMS = {"cubic": Cubic, "newreno": NewReno, "reno": NewReno}


def make_congestion_control(name: str, mss: int, initial_window: int = 10) -> CongestionControl:
    """A fresh instance of the algorithm called ``name``."""
    try:
        cls = ALGORITHMS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; have {sorted(ALGORITHMS)}") from None
    return cls(mss, initial_window)
