"""A capture port: every frame the switch forwards or floods, written to a pcap file.

The classic libpcap format (what tcpdump -r and Wireshark read): a 24-byte
file header, then per frame a 16-byte record header (seconds, microseconds,
captured length, original length) and the frame. Link type 1 is Ethernet.
The port takes no offload metadata, so the switch hands it finished frames
(GSO frames segmented, partial checksums completed), as a wire would carry:
`transmit`'s `meta` is always None.
"""
from __future__ import annotations

import logging
import struct

from nicdev.virtio.offload import FrameMeta

from .capture_time import FLUSH_INTERVAL, CaptureClock
from .errors import PortError
from .port import Port

log = logging.getLogger(__name__)

__all__ = ["PcapPort", "PCAP_MAGIC", "LINKTYPE_ETHERNET"]

PCAP_MAGIC = 0xA1B2C3D4            # microsecond timestamps, native byte order
LINKTYPE_ETHERNET = 1
_FILE_HEADER = struct.Struct("=IHHiIII")
_RECORD_HEADER = struct.Struct("=IIII")


class PcapPort(Port):
    """Writes the frames the switch gives it to `path`; never sends anything back."""

    kind = "pcap"
    captures_all = True          # the switch copies every forwarded/flooded frame here

    def __init__(self, name: str, path: str, *, snaplen: int = 65535) -> None:
        super().__init__(name)
        if not path:
            raise PortError(f"pcap port {name!r}: empty file name")
        if not 14 <= snaplen <= 262144:
            raise PortError(f"pcap port {name!r}: snaplen must be 14..262144, not {snaplen}")
        self.path = path
        self.snaplen = snaplen
        self._file = None
        self._clock = CaptureClock()
        self._loop = None
        self._timer = None
        self._dirty = False
        self._failed: str | None = None

    def start(self, loop) -> None:
        try:
            self._file = open(self.path, "wb")
            self._file.write(_FILE_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, self.snaplen, LINKTYPE_ETHERNET))
            self._file.flush()
        except OSError as exc:
            self._close_file()
            raise PortError(f"pcap port {self.name!r}: cannot write {self.path}: {exc.strerror or exc}") from None
        self._loop = loop
        self._timer = loop.call_later(FLUSH_INTERVAL, self._periodic_flush)

    def transmit(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        if self._file is None:
            self.counters.tx_dropped += 1
            return False
        ns = self._clock.now_ns()
        caplen = min(len(frame), self.snaplen)
        try:
            self._file.write(_RECORD_HEADER.pack(ns // 1_000_000_000, (ns // 1000) % 1_000_000, caplen, len(frame)))
            self._file.write(frame[:caplen])
        except OSError as exc:
            # A full disk must not take the switch down: stop capturing, say why.
            self.counters.tx_dropped += 1
            self.counters.count_error("write failed")
            self._failed = exc.strerror or str(exc)
            log.error("pcap port %s: writing %s failed (%s); capture stopped", self.name, self.path, self._failed)
            self._close_file()
            return False
        self._dirty = True
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(frame)
        return True

    def _periodic_flush(self) -> None:
        if self._file is None:
            return
        if self._dirty:
            try:
                self._file.flush()
            except OSError as exc:
                self.counters.count_error("write failed")
                self._failed = exc.strerror or str(exc)
                log.error("pcap port %s: flushing %s failed (%s); capture stopped", self.name, self.path, self._failed)
                self._close_file()
                return
            self._dirty = False
        self._timer = self._loop.call_later(FLUSH_INTERVAL, self._periodic_flush)

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as exc:
                log.error("pcap port %s: closing %s failed: %s", self.name, self.path, exc)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_file()

    @property
    def status(self) -> str:
        if self._failed:
            return f"stopped: {self._failed}"
        if self._file is None:
            return "closed" if self._loop else "not started"
        return f"writing {self.path}"
