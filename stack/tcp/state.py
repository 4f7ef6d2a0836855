"""The eleven connection states of RFC 9293 (section 3.3.2) and the moves between them.

The transitions of RFC 9293 figure 5 are kept here as data: the connection
looks its next state up in these tables rather than spelling it out in each
place an event happens.
"""
from __future__ import annotations

import enum

__all__ = [
    "TcpState",
    "RECEIVING",
    "SENDING",
    "RST_ON_ABORT",
    "AFTER_CLOSE",
    "AFTER_FIN",
    "AFTER_FIN_ACKED",
    "TRANSITIONS",
]


class TcpState(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    def __str__(self) -> str:
        return self.value


S = TcpState

# -- which states allow what ---------------------------------------------------------
#: The peer may still send us data (and its FIN).
RECEIVING = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
#: Our data (or FIN) may be outstanding: segments go out, the retransmission timer runs.
SENDING = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
#: An ABORT sends a RST (RFC 9293 3.10.5).
RST_ON_ABORT = frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT})

# -- RFC 9293 figure 5, the closing half, as data ------------------------------------
#: The application's CLOSE queues our FIN (RFC 9293 3.10.4); in SYN-RECEIVED it waits.
AFTER_CLOSE = {S.ESTABLISHED: S.FIN_WAIT_1, S.CLOSE_WAIT: S.LAST_ACK}
#: The peer's FIN is taken (3.10.7.4, eighth step). FIN-WAIT-1 with our FIN
#: already acknowledged is FIN-WAIT-2 in all but name: TIME-WAIT then.
AFTER_FIN = {
    S.SYN_RECEIVED: S.CLOSE_WAIT,
    S.ESTABLISHED: S.CLOSE_WAIT,
    S.FIN_WAIT_1: S.CLOSING,  # simultaneous close
    S.FIN_WAIT_2: S.TIME_WAIT,
}
#: Our FIN is acknowledged (fifth step).
AFTER_FIN_ACKED = {S.FIN_WAIT_1: S.FIN_WAIT_2, S.CLOSING: S.TIME_WAIT, S.LAST_ACK: S.CLOSED}

#: Every move a connection makes: the opening half of figure 5 (with
#: simultaneous open, and a CLOSE that waited for ESTABLISHED), the tables
#: above, and any state to CLOSED (ABORT, RST, timeouts, the TIME-WAIT timer).
TRANSITIONS = frozenset(
    {
        (S.CLOSED, S.SYN_SENT),
        (S.CLOSED, S.SYN_RECEIVED),
        (S.CLOSED, S.ESTABLISHED),  # from a SYN cookie
        (S.SYN_SENT, S.SYN_RECEIVED),
        (S.SYN_SENT, S.ESTABLISHED),
        (S.SYN_RECEIVED, S.ESTABLISHED),
        (S.ESTABLISHED, S.FIN_WAIT_1),
        (S.FIN_WAIT_1, S.TIME_WAIT),
    }
    | {(a, b) for table in (AFTER_CLOSE, AFTER_FIN, AFTER_FIN_ACKED) for a, b in table.items()}
    | {(a, S.CLOSED) for a in S}
)
