"""The options of ``--serve lb:PORT,backend=IP:PORT,...``, read and checked."""
from __future__ import annotations

from dataclasses import dataclass

from mnet.services.errors import ServiceSpecError
from stack import IpAddress

from .balancer import POLICIES

DEFAULT_CHECK = 1.0     # seconds between two health checks of a backend
DEFAULT_TIMEOUT = 2.0   # seconds a connection attempt (a client's or a check's) may take
DEFAULT_RISE = DEFAULT_FALL = 1  # health checks in a row that bring a backend up / take it down
MIN_SECONDS, MAX_SECONDS = 0.01, 3600.0
MAX_COUNT = 100


@dataclass(frozen=True)
class LbOptions:
    backends: tuple[IpAddress, ...]
    policy: str = "round-robin"
    check: float = DEFAULT_CHECK
    timeout: float = DEFAULT_TIMEOUT
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    idle: float | None = None   # seconds a relayed connection may move no byte (None: no limit)


def lb_options(svc) -> LbOptions:
    """The options of ``svc`` (an ``lb`` spec.Service); ServiceSpecError naming the first bad one."""
    backends = []
    for text in svc.all_options("backend"):
        address = _backend(svc, text)
        if address in backends:
            raise _error(svc, f"backend={text} given twice")
        backends.append(address)
    if not backends:
        raise _error(svc, "needs at least one backend=IP:PORT")
    policy = svc.option("policy", "round-robin")
    if policy not in POLICIES:
        raise _error(svc, f"policy must be {' or '.join(POLICIES)}, not {policy!r}")
    return LbOptions(tuple(backends), policy, _seconds(svc, "check", DEFAULT_CHECK),
                     _seconds(svc, "timeout", DEFAULT_TIMEOUT), _count(svc, "rise", DEFAULT_RISE),
                     _count(svc, "fall", DEFAULT_FALL), _seconds(svc, "idle", None))


def check_options(svc) -> None:
    """spec.KINDS' check of an ``lb`` service."""
    lb_options(svc)


def _backend(svc, text: str) -> IpAddress:
    try:
        address = IpAddress.parse(text)
    except ValueError:
        raise _error(svc, f"backend must be IP:PORT (numeric), not {text!r}") from None
    if address.port == 0 or address.is_unspecified or ":" not in text:
        raise _error(svc, f"backend must be IP:PORT with a port 1..65535 and an address, not {text!r}")
    return address


def _seconds(svc, key: str, default: float | None) -> float | None:
    text = svc.option(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise _error(svc, f"{key} must be a number of seconds in {MIN_SECONDS:g}..{MAX_SECONDS:g}, not {text!r}")
    return value


def _count(svc, key: str, default: int) -> int:
    text = svc.option(key)
    if text is None:
        return default
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= MAX_COUNT:
        raise _error(svc, f"{key} must be a number of checks in 1..{MAX_COUNT}, not {text!r}")
    return value


def _error(svc, what: str) -> ServiceSpecError:
    return ServiceSpecError(f"bad --serve {svc.label}: {what}")
