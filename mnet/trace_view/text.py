"""One human-readable line per trace record, e.g.

    +0.001234 a q1 tx chain head=17 descs=2 bytes=1514 [0x7f3a2000:12 N, 0x7f3a3000:1502]

Time is seconds after the trace start; driver-side records carry `drv` after
the port; records about the whole device show `*` for queue and direction.
"""
from __future__ import annotations

from nicdev.virtio.trace import COMMON, DRIVER

# The virtio descriptor flags, as letters: NEXT, WRITE, INDIRECT.
_FLAG_LETTERS = ((1, "N"), (2, "W"), (4, "I"))


def format_descriptor(desc) -> str:
    addr, length, flags = desc
    letters = "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)
    return f"{addr:#x}:{length}" + (f" {letters}" if letters else "")


def _chain(r: dict) -> str:
    descs = r["descs"]
    text = f"head={r['head']} descs={len(descs)} bytes={r['bytes']}"
    if r["indirect"]:
        text += " indirect"
    return text + " [" + ", ".join(format_descriptor(d) for d in descs) + "]"


def _features(r: dict) -> str:
    value = r["value"]
    return (f"{'protocol ' if r['protocol'] else ''}value="
            + (f"{value:#x}" if isinstance(value, int) else str(value)))


def _index_move(r: dict) -> str:
    # old is null at the first look after a ring (re)start: not known yet.
    return f"{'?' if r['old'] is None else r['old']} -> {r['new']}"


def _fault(r: dict) -> str:
    return f"mode={r['mode'] if r['mode'] is not None else 'none (cleared)'}"


# kind -> its details, for kinds whose fields read better than key=value.
_DETAILS = {
    "chain": _chain,
    "used": lambda r: f"id={r['id']} len={r['len']}",
    "avail_idx": lambda r: _index_move(r),
    "used_idx": lambda r: _index_move(r),
    "features": _features,
    "link": lambda r: "up" if r["up"] else "down",
    "fault": _fault,
}
_SPECIAL_FIELDS = {"chain": {"head", "descs", "indirect", "bytes"}, "used": {"id", "len"},
                   "avail_idx": {"old", "new"}, "used_idx": {"old", "new"},
                   "features": {"value", "protocol"}, "link": {"up"}, "fault": {"mode"}}


def format_record(record: dict, start: float = 0.0) -> str:
    """The line for one record; fields beyond the ones a kind is known for
    follow as key=value, so nothing in the record is hidden."""
    kind = record["kind"]
    where = record["port"] + (" drv" if record["side"] == DRIVER else "")
    if record["queue"] is None:
        queue = "*"
    else:
        queue = f"q{record['queue']}" + (f" {record['dir']}" if record["dir"] else "")
    parts = [f"+{record['t'] - start:.6f}", where, queue, kind]
    if kind in _DETAILS:
        parts.append(_DETAILS[kind](record))
    skip = set(COMMON) | _SPECIAL_FIELDS.get(kind, set())
    parts.extend(f"{key}={value}" for key, value in record.items() if key not in skip)
    return " ".join(p for p in parts if p)
