"""pcapng capture of the frames the switch's ports move through their rings.

The file follows the pcapng format (the IETF draft "PCAP Next Generation
(pcapng) Capture File Format"): a Section Header Block, then an Interface
Description Block per switch port (link type Ethernet, its name in
`if_name`, nanosecond timestamps in `if_tsresol`), then an Enhanced Packet
Block per frame. Each packet carries

* `epb_flags` with its direction, seen from the switch: a frame the guest's
  driver transmitted (the port's TX queue) came *in* to the switch, a frame
  written to the guest's RX queue went *out*;
* an `opt_comment` naming port, queue and descriptor head, e.g.
  "port a queue 1 (tx) head 17", the same `port`, `queue` and `head` as the
  frame's `chain` record in a ring trace (docs/tracing.md), so a packet in
  Wireshark leads to its ring event.

`PcapngWriter` is a frame sink for `nicdev.virtio.trace.Tracer.add_frame_sink`:
it is called as `writer(port, t, queue, direction, head, data)`, `t` on the
monotonic clock, which `CaptureClock` maps to wall time. A port the writer
has not seen gets its interface block on its first frame, so ports may come
and go while it runs. Every block is written in little-endian byte order
(the section header's byte-order magic says so, as the format allows).

The block encoders are plain functions over bytes (sans-IO); the writer
adds the file, a lock (frames may come from more than one thread) and
flushing, so a reader of a running capture sees recent packets.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from typing import Callable

from .capture_time import FLUSH_INTERVAL, CaptureClock

log = logging.getLogger(__name__)

__all__ = [
    "PcapngWriter", "BLOCK_SHB", "BLOCK_IDB", "BLOCK_EPB", "BYTE_ORDER_MAGIC", "LINKTYPE_ETHERNET",
    "OPT_ENDOFOPT", "OPT_COMMENT", "SHB_USERAPPL", "IF_NAME", "IF_DESCRIPTION", "IF_TSRESOL", "EPB_FLAGS",
    "EPB_INBOUND", "EPB_OUTBOUND", "option", "section_header_block", "interface_description_block",
    "enhanced_packet_block", "packet_comment", "direction_flags",
]

BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 0x00000001
BLOCK_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2

# epb_flags bits 0-1: the packet's direction.
EPB_INBOUND = 1
EPB_OUTBOUND = 2

_TSRESOL_NS = 9                 # if_tsresol: 10^-9 s per timestamp unit
_OPTION_HEAD = struct.Struct("<HH")
_BLOCK_HEAD = struct.Struct("<II")
_BLOCK_TAIL = struct.Struct("<I")
_SHB_BODY = struct.Struct("<IHHq")
_IDB_BODY = struct.Struct("<HHI")
_EPB_BODY = struct.Struct("<IIIII")


def _pad(length: int) -> int:
    """Bytes of padding that bring `length` to a 32-bit boundary."""
    return -length % 4


def option(code: int, value: bytes) -> bytes:
    """One option: code, length, the value padded to 32 bits."""
    if len(value) > 0xFFFF:
        raise ValueError(f"a pcapng option holds at most 65535 bytes, not {len(value)}")
    return _OPTION_HEAD.pack(code, len(value)) + value + bytes(_pad(len(value)))


def _options(opts: list[bytes]) -> bytes:
    # The end-of-options marker closes a non-empty list only.
    return b"".join(opts) + option(OPT_ENDOFOPT, b"") if opts else b""


def _block(block_type: int, body: bytes) -> bytes:
    """A block: type, total length, body (already padded), total length again."""
    total = _BLOCK_HEAD.size + len(body) + _BLOCK_TAIL.size
    return _BLOCK_HEAD.pack(block_type, total) + body + _BLOCK_TAIL.pack(total)


def section_header_block(application: str | None = None) -> bytes:
    """Version 1.0, section length unknown (-1), `shb_userappl` if given."""
    opts = [option(SHB_USERAPPL, application.encode())] if application else []
    return _block(BLOCK_SHB, _SHB_BODY.pack(BYTE_ORDER_MAGIC, 1, 0, -1) + _options(opts))


def interface_description_block(name: str, description: str | None = None) -> bytes:
    """An Ethernet interface with no snap length limit and nanosecond timestamps."""
    opts = [option(IF_NAME, name.encode())]
    if description:
        opts.append(option(IF_DESCRIPTION, description.encode()))
    opts.append(option(IF_TSRESOL, bytes([_TSRESOL_NS])))
    return _block(BLOCK_IDB, _IDB_BODY.pack(LINKTYPE_ETHERNET, 0, 0) + _options(opts))


def enhanced_packet_block(interface: int, ts_ns: int, data: bytes, flags: int | None = None,
                          comment: str | None = None) -> bytes:
    """One captured frame, whole, stamped `ts_ns` (Unix nanoseconds)."""
    opts = []
    if flags is not None:
        opts.append(option(EPB_FLAGS, struct.pack("<I", flags)))
    if comment:
        opts.append(option(OPT_COMMENT, comment.encode()))
    n = len(data)
    head = _EPB_BODY.pack(interface, ts_ns >> 32, ts_ns & 0xFFFF_FFFF, n, n)
    return _block(BLOCK_EPB, head + bytes(data) + bytes(_pad(n)) + _options(opts))


def direction_flags(direction: str) -> int:
    """epb_flags for a frame on the `direction` queue, seen from the switch."""
    if direction == "tx":
        return EPB_INBOUND          # the driver transmitted it: into the switch
    if direction == "rx":
        return EPB_OUTBOUND         # written to the driver's receive ring: out of the switch
    raise ValueError(f"a frame's queue direction is rx or tx, not {direction!r}")


def packet_comment(port: str, queue: int, direction: str, head: int) -> str:
    """The comment that leads from a packet to its ring event."""
    return f"port {port} queue {queue} ({direction}) head {head}"


class PcapngWriter:
    """A pcapng file of frames, one interface per port (see the module doc).

    Opening an unwritable `path` raises OSError with a one-line message. A
    write that fails later (a full disk) must not stop the switch: the
    capture stops, `failed` says why, and further frames are counted in
    `lost`."""

    def __init__(self, path: str, *, flush_interval: float = FLUSH_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, application: str = "mnet") -> None:
        try:
            f = open(path, "wb")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write pcapng file {path}: {exc.strerror}") from None
        try:
            f.write(section_header_block(application))
            f.flush()
        except OSError as exc:
            self._discard(f)
            raise OSError(exc.errno, f"cannot write pcapng file {path}: {exc.strerror}") from None
        self._file = f
        self.path = path
        self._lock = threading.Lock()
        self._wall = CaptureClock(clock)
        self._clock = clock
        self._flush_interval = flush_interval
        self._last_flush = clock()
        self._interfaces: dict[str, int] = {}
        self.packets = 0
        self.lost = 0
        self.failed: str | None = None

    @property
    def interfaces(self) -> list[str]:
        """The port names, in interface id order."""
        return list(self._interfaces)

    def add_interface(self, port: str, description: str | None = None) -> int:
        """The interface id of `port`, writing its block the first time."""
        with self._lock:
            return self._interface(port, description)

    def _interface(self, port: str, description: str | None = None) -> int:
        ifid = self._interfaces.get(port)
        if ifid is None:
            ifid = self._interfaces[port] = len(self._interfaces)
            self._write(interface_description_block(port, description))
        return ifid

    def __call__(self, port: str, t: float, queue: int, direction: str, head: int, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                self.lost += 1
                return
            ifid = self._interface(port)
            block = enhanced_packet_block(ifid, self._wall.wall_ns(t), data, direction_flags(direction),
                                          packet_comment(port, queue, direction, head))
            if self._write(block):
                self.packets += 1
            if t - self._last_flush >= self._flush_interval:
                self._flush()

    def flush(self) -> None:
        """Write out what is buffered (the switch calls this periodically)."""
        with self._lock:
            self._flush()

    def _write(self, block: bytes) -> bool:
        if self._file is None:
            return False
        try:
            self._file.write(block)
            return True
        except OSError as exc:
            self._fail(exc)
            return False

    def _flush(self) -> None:
        if self._file is None:
            return
        self._last_flush = self._clock()
        try:
            self._file.flush()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.failed = exc.strerror or str(exc)
        self.lost += 1
        log.error("pcapng capture %s: writing failed (%s); capture stopped", self.path, self.failed)
        self._close()

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as exc:
                log.error("pcapng capture %s: closing failed: %s", self.path, exc.strerror or exc)

    def close(self) -> None:
        with self._lock:
            self._close()

    @staticmethod
    def _discard(f) -> None:
        try:
            f.close()
        except OSError:
            pass            # the error that brought us here is the one to report

    @property
    def status(self) -> str:
        if self.failed:
            return f"pcapng {self.path}: stopped ({self.failed}), {self.packets} packets"
        return f"pcapng {self.path}: {self.packets} packets on {len(self._interfaces)} interfaces"
