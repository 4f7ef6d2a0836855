"""The command line's port syntax, `NAME=KIND:ARG[,key=value...]`, parsed and built.

Parsing checks everything that can be checked without touching the system
(names, keys, addresses, lengths) so a typo is reported before any port is
opened; `build_port()` then makes the Port object (which opens nothing until
the switch starts it). See docs/switch.md for the kinds.

Every kind but pcap also takes impairment keys (loss, delay, ...); the port
is then wrapped in a `nicdev.net.impair.ImpairedPort`.

As in QEMU's options, a literal comma inside a value is written twice (",,").
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Iterable

from nicdev.virtio.impairment import Impairment

from .errors import PortError
from .faults import parse_fault
from .impair import ImpairedPort
from .polling import DEFAULT_POLL, MAX_POLL_BUDGET, PollMode
from .port import Port

__all__ = ["PortSpec", "PortSpecError", "KINDS", "IMPAIR_KEYS", "PORT_SPEC_HELP", "parse_port_spec",
           "parse_port_specs", "parse_poll", "parse_impairment_spec", "build_port", "build_ports"]

KINDS = ("vhost-user", "tap", "stream", "dgram", "pcap")

PORT_SPEC_HELP = """\
  NAME=vhost-user:PATH[,offloads=on|off][,poll=off|adaptive[:T]|busy][,qmp=QMP[,qmp_device=ID]]
                   [,fault=MODE]
                                        a virtio-net device; QEMU connects to unix socket PATH;
                                        offloads=off offers no checksum/TSO (default on);
                                        poll: after traffic, poll the guest's rings for T of
                                        idle time (10us..1s) with its kicks off, or always
                                        (busy), or never (off); default DEFAULT_POLL;
                                        qmp: the guest QEMU's QMP socket (`mnet vm --qmp QMP`),
                                        so a link change (`mnet ctl link`) reaches the guest
                                        (its NIC ID, default net0-dev)
                                        fault: misbehave on purpose for driver tests: stall-tx,
                                        drop-calls, delay-used=T, bad-rx-len, reorder-used,
                                        starve-rx, several joined by '+' (docs/device-modes.md)
  NAME=tap:IFNAME[,netns=NS][,offloads=on|off][,vnet_hdr=on|off]
                                        a TAP interface (the host kernel as peer), optionally
                                        moved into network namespace NS; by default with a
                                        virtio-net header and the kernel's checksum/TSO offloads:
                                        offloads=off keeps the header, the kernel sends MTU-sized
                                        frames; vnet_hdr=off drops the header (and the offloads)
  NAME=stream:PATH                      QEMU -netdev stream: we listen on unix socket PATH
  NAME=dgram:LOCAL,remote=REMOTE        QEMU -netdev dgram: LOCAL and REMOTE are both HOST:PORT
                                        (UDP, numeric address; [IPv6]:PORT) or both unix socket
                                        paths containing a '/' (e.g. ./a.sock)
  NAME=pcap:FILE[,snaplen=N]            write every forwarded or flooded frame to FILE (pcap)
NAME: letters, digits, '_', '.', '-' (at most 32). A ',' inside a value is written ',,'.
Impairments, like tc netem (any kind but pcap; e.g. host=tap:mnet0,loss=2%,delay=5ms,seed=1):
  loss=P, duplicate=P, reorder=P, corrupt=P
                                        P as 5% or 0.05; reorder sends a frame after the next one,
                                        corrupt flips one bit after the Ethernet header
  delay=T, jitter=T                     T as 10ms, 500us or 0.2s (jitter +-, never reorders)
  seed=N                                the same random pattern every run
  limit=N                               frames waiting for their delay at most (default 1000)
  impair=both|out|in                    which way (default both; out = to the port's peer)""".replace(
    "DEFAULT_POLL", str(DEFAULT_POLL))

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_SUN_PATH_MAX = 107
_GENERIC = "expected NAME=KIND:ARG, kinds are " + ", ".join(KINDS)
_KEYS = {"vhost-user": ("offloads", "poll", "qmp", "qmp_device", "fault"), "tap": ("netns", "vnet_hdr", "offloads"), "stream": (), "dgram": ("remote",),
         "pcap": ("snaplen",)}
IMPAIR_KEYS = ("loss", "duplicate", "reorder", "corrupt", "delay", "jitter", "seed", "limit", "impair")
_IMPAIRABLE = ("vhost-user", "tap", "stream", "dgram")   # a capture port is no link
_CLASSES = {
    # Imported when a port of that kind is built, so a kind's module (and its
    # dependencies) are only needed by users of that kind.
    "vhost-user": ("nicdev.net.vhost_user_port", "VhostUserPort"),
    "tap": ("nicdev.net.tap_port", "TapPort"),
    "stream": ("nicdev.net.socket_port", "StreamPort"),
    "dgram": ("nicdev.net.socket_port", "DgramPort"),
    "pcap": ("nicdev.net.pcap_port", "PcapPort"),
}
_BOOLS = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}


class PortSpecError(ValueError):
    """A --port argument the user has to fix; the message is one line naming the argument."""


@dataclass(frozen=True)
class PortSpec:
    """One parsed port: `params` are the keyword arguments for the port class."""

    name: str
    kind: str
    arg: str
    options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    text: str = ""
    impair_out: Impairment | None = None    # frames to the peer
    impair_in: Impairment | None = None     # frames from the peer

    def __str__(self) -> str:
        return self.text or f"{self.name}={self.kind}:{self.arg}"


def _split(body: str) -> list[str]:
    """Split on ',' except ',,' which stands for a literal comma."""
    parts, cur, i = [], [], 0
    while i < len(body):
        c = body[i]
        if c == ",":
            if body[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_port_spec(text: str) -> PortSpec:
    """Parse one `NAME=KIND:ARG[,key=value...]`; raises PortSpecError with a one-line reason."""

    def fail(reason: str) -> PortSpecError:
        return PortSpecError(f"bad port spec {text!r}: {reason}")

    name, eq, rest = text.partition("=")
    kind, colon, body = rest.partition(":")
    if not eq or not colon or not name:
        raise fail(_GENERIC)
    if not _NAME_RE.fullmatch(name):
        raise fail(f"bad port name {name!r}: use letters, digits, '_', '.', '-' (at most 32)")
    if kind not in KINDS:
        raise fail(f"unknown kind {kind!r}; kinds are " + ", ".join(KINDS))
    arg, *pairs = _split(body)
    options: dict[str, str] = {}
    impair: dict[str, str] = {}
    for pair in pairs:
        key, has_eq, value = pair.partition("=")
        if not has_eq or not key:
            raise fail(f"expected key=value after ',', got {pair!r}")
        impairment_key = kind in _IMPAIRABLE and key in IMPAIR_KEYS
        if key not in _KEYS[kind] and not impairment_key:
            known = ", ".join(_KEYS[kind]) or "none"
            more = f"; impairments: {', '.join(IMPAIR_KEYS)}" if kind in _IMPAIRABLE else ""
            raise fail(f"unknown key {key!r} for {kind} (keys: {known}){more}")
        if key in options:
            raise fail(f"key {key!r} given twice")
        if not value:
            raise fail(f"empty value for {key!r}")
        options[key] = value
        if impairment_key:
            impair[key] = value
    try:
        params = _PARAMS[kind](arg, {k: v for k, v in options.items() if k not in impair})
        out, in_ = _impairments(impair) if impair else (None, None)
    except ValueError as exc:
        raise fail(str(exc)) from None
    return PortSpec(name=name, kind=kind, arg=arg, options=options, params=params, text=text,
                    impair_out=out, impair_in=in_)


# -- impairment keys -> Impairment per direction (ValueError on bad input)
_PERCENT_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)%")
_FRACTION_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _probability(key: str, text: str) -> float:
    m = _PERCENT_RE.fullmatch(text)
    if m:
        value = float(m.group(1)) / 100
    elif _FRACTION_RE.fullmatch(text):
        value = float(text)
        if value > 1:
            raise ValueError(f"{key}={text} is more than 1: write {text}% for a percentage")
    else:
        raise ValueError(f"{key} must be a percentage (5%) or a fraction (0.05), not {text!r}")
    if value > 1:
        raise ValueError(f"{key}={text} is more than 100%")
    return value


def _duration(key: str, text: str) -> float:
    if text == "0":
        return 0.0
    m = _DURATION_RE.fullmatch(text)
    if not m:
        raise ValueError(f"{key} must be a time with a unit (10ms, 500us, 0.2s), not {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value >= 3600:
        raise ValueError(f"{key}={text} is an hour or more")
    return value


def _impairments(keys: dict) -> tuple[Impairment | None, Impairment | None]:
    kwargs: dict = {}
    for key in ("loss", "duplicate", "reorder", "corrupt"):
        if key in keys:
            kwargs[key] = _probability(key, keys[key])
    for key in ("delay", "jitter"):
        if key in keys:
            kwargs[key] = _duration(key, keys[key])
    if not kwargs:
        raise ValueError("seed, limit and impair need an impairment (loss, duplicate, reorder, corrupt, delay, jitter)")
    for key in ("seed", "limit"):
        if key in keys:
            if not keys[key].isdigit():
                raise ValueError(f"{key} must be a whole number, not {keys[key]!r}")
            kwargs[key] = int(keys[key])
    if kwargs.get("limit") == 0:
        raise ValueError("limit must be at least 1")
    way = keys.get("impair", "both").lower()
    if way not in ("both", "in", "out"):
        raise ValueError(f"impair must be both, in or out, not {keys['impair']!r}")
    impairment = Impairment(**kwargs)
    return (impairment if way != "in" else None), (impairment if way != "out" else None)


def parse_impairment_spec(text: str) -> tuple[Impairment | None, Impairment | None]:
    """The impairment keys of a port spec alone, `loss=5%,delay=10ms[,impair=out]`,
    as (to the peer, from the peer); what a running switch's control socket
    takes. Raises PortSpecError with a one-line reason."""
    keys: dict[str, str] = {}
    for pair in _split(text):
        key, has_eq, value = pair.partition("=")
        if not has_eq or not key or not value:
            raise PortSpecError(f"bad impairment {text!r}: expected key=value[,key=value...], got {pair!r}")
        if key not in IMPAIR_KEYS:
            raise PortSpecError(f"bad impairment {text!r}: unknown key {key!r} (keys: {', '.join(IMPAIR_KEYS)})")
        if key in keys:
            raise PortSpecError(f"bad impairment {text!r}: key {key!r} given twice")
        keys[key] = value
    try:
        return _impairments(keys)
    except ValueError as exc:
        raise PortSpecError(f"bad impairment {text!r}: {exc}") from None


# -- per kind: ARG and options -> constructor keywords (ValueError on bad input)
def _path(arg: str, what: str = "path") -> str:
    if not arg:
        raise ValueError(f"empty {what}")
    if "\0" in arg:
        raise ValueError(f"{what} contains a NUL byte")
    return arg


def _socket_path(arg: str) -> str:
    path = _path(arg, "socket path")
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ValueError(f"socket path longer than {_SUN_PATH_MAX} bytes (a unix socket limit)")
    return path


_MIN_POLL_BUDGET = 10e-6       # shorter than one turn of the loop: no poll at all


def parse_poll(text: str) -> PollMode:
    """`off`, `busy`, `adaptive` (the default budget) or `adaptive:T` (T as 200us, 2ms);
    ValueError with the reason."""
    kind, colon, budget = text.partition(":")
    if kind in ("off", "busy") and not colon:
        return PollMode(kind)
    if kind != "adaptive":
        raise ValueError(f"poll must be off, adaptive[:TIME] or busy, not {text!r}")
    if not colon:
        return PollMode.adaptive(DEFAULT_POLL.budget)
    seconds = round(_duration("poll budget", budget), 9)     # 50us is 5e-05, not 4.99..e-05
    if not _MIN_POLL_BUDGET <= seconds <= MAX_POLL_BUDGET:
        raise ValueError(f"poll budget must be from 10us to {MAX_POLL_BUDGET:g}s, not {budget!r} "
                         "(poll=off never polls, poll=busy always does)")
    return PollMode.adaptive(seconds)


def _vhost_user(arg: str, options: dict) -> dict:
    offloads = options.get("offloads", "on").lower()
    if offloads not in _BOOLS:
        raise ValueError(f"offloads must be on or off, not {options['offloads']!r}")
    params = {"socket_path": _socket_path(arg), "offloads": _BOOLS[offloads]}
    if "poll" in options:
        params["poll"] = parse_poll(options["poll"])
    if "qmp" in options:
        params["qmp"] = _socket_path(options["qmp"])
    if "qmp_device" in options:
        if "qmp" not in options:
            raise ValueError("qmp_device needs qmp=PATH")
        params["qmp_device"] = options["qmp_device"]
    if "fault" in options:
        fault = parse_fault(options["fault"])
        if fault is not None:
            params["fault"] = fault
    return params


def _tap(arg: str, options: dict) -> dict:
    from .netns import check_netns_name
    from .tap_port import check_ifname

    if not arg:
        raise ValueError("empty interface name")
    try:
        check_ifname(arg)
        if "netns" in options:
            check_netns_name(options["netns"])
    except PortError as exc:
        raise ValueError(str(exc)) from None
    params = {"ifname": arg, "netns": options.get("netns"), "vnet_hdr": _on_off(options, "vnet_hdr", "on")}
    if "offloads" in options:
        # Without the key the offloads follow the header (on by default).
        params["offloads"] = _on_off(options, "offloads", "on")
        if params["offloads"] and not params["vnet_hdr"]:
            raise ValueError("offloads=on needs vnet_hdr=on (the kernel says what to do in that header)")
    return params


def _on_off(options: dict, key: str, default: str) -> bool:
    value = options.get(key, default).lower()
    if value not in _BOOLS:
        raise ValueError(f"{key} must be on or off, not {options[key]!r}")
    return _BOOLS[value]


def _stream(arg: str, options: dict) -> dict:
    return {"path": _socket_path(arg)}


def _dgram_address(text: str, what: str):
    from .socket_port import parse_inet_address

    if not text:
        raise ValueError(f"empty {what} address")
    if "/" in text:
        return _socket_path(text)
    try:
        return parse_inet_address(text)
    except ValueError as exc:
        raise ValueError(f"{what} address: {exc} (a unix socket path must contain '/')") from None


def _dgram(arg: str, options: dict) -> dict:
    if "remote" not in options:
        raise ValueError("dgram needs remote=HOST:PORT (or remote=PATH)")
    local = _dgram_address(arg, "local")
    remote = _dgram_address(options["remote"], "remote")
    if isinstance(local, str) != isinstance(remote, str):
        raise ValueError("local and remote must both be HOST:PORT or both unix socket paths")
    if not isinstance(local, str) and (":" in local[0]) != (":" in remote[0]):
        raise ValueError("local and remote must be of the same IP version")
    if local == remote:
        raise ValueError("local and remote are the same address")
    return {"local": local, "remote": remote}


def _pcap(arg: str, options: dict) -> dict:
    params = {"path": _path(arg, "file name")}
    if "snaplen" in options:
        text = options["snaplen"]
        if not text.isdigit() or not 14 <= int(text) <= 262144:
            raise ValueError(f"snaplen must be a number from 14 to 262144, not {text!r}")
        params["snaplen"] = int(text)
    return params


_PARAMS = {"vhost-user": _vhost_user, "tap": _tap, "stream": _stream, "dgram": _dgram, "pcap": _pcap}


def _resource(spec: PortSpec) -> tuple[str, object] | None:
    """What two ports must not share: a socket path, an interface, a UDP address, a file."""
    p = spec.params
    if spec.kind in ("vhost-user", "stream"):
        return "socket path", os.path.abspath(p.get("socket_path") or p["path"])
    if spec.kind == "tap":
        return "interface", (p["ifname"], p["netns"])
    if spec.kind == "dgram":
        local = p["local"]
        return ("socket path", os.path.abspath(local)) if isinstance(local, str) else ("local address", local)
    if spec.kind == "pcap":
        return "capture file", os.path.abspath(p["path"])
    return None


def parse_port_specs(texts: Iterable[str]) -> list[PortSpec]:
    """Parse every --port argument; also refuses duplicate names and two ports on one resource."""
    specs: list[PortSpec] = []
    names: dict[str, PortSpec] = {}
    used: dict[tuple, PortSpec] = {}
    for text in texts:
        spec = parse_port_spec(text)
        if spec.name in names:
            raise PortSpecError(f"duplicate port name {spec.name!r} in {names[spec.name].text!r} and {text!r}")
        names[spec.name] = spec
        res = _resource(spec)
        if res is not None:
            if res in used:
                raise PortSpecError(f"ports {used[res].name!r} and {spec.name!r} use the same {res[0]} "
                                    f"({used[res].text!r}, {text!r})")
            used[res] = spec
        specs.append(spec)
    return specs


def build_port(spec: PortSpec) -> Port:
    """Make the Port for `spec` (not started: the switch's add_port does that).

    May raise PortError from the port's constructor (e.g. a missing namespace).
    """
    module_name, class_name = _CLASSES[spec.kind]
    cls = getattr(importlib.import_module(module_name), class_name)
    port = cls(spec.name, **spec.params)
    if spec.impair_out is not None or spec.impair_in is not None:
        port = ImpairedPort(port, out=spec.impair_out, in_=spec.impair_in)
    return port


def build_ports(specs: Iterable[PortSpec]) -> list[Port]:
    """build_port for each spec, in order."""
    return [build_port(spec) for spec in specs]
