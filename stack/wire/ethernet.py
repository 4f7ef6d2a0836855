"""Ethernet II frames: MAC addresses, a frame view and a checked repr."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import MalformedPacket

__all__ = [
    "HEADER_LEN",
    "MIN_FRAME_LEN",
    "EtherType",
    "EthernetFrame",
    "EthernetRepr",
    "MacAddress",
]

HEADER_LEN = 14
#: Smallest frame on the wire without the FCS; shorter frames get zero padding.
MIN_FRAME_LEN = 60

_HDR = struct.Struct("!6s6sH")
_U16 = struct.Struct("!H")


class MacAddress:
    """A 48-bit IEEE MAC address; immutable and hashable.

    Built from ``"aa:bb:cc:dd:ee:ff"`` (``-`` also accepted), 6 bytes, or
    another MacAddress.
    """

    __slots__ = ("_b",)

    def __init__(self, value) -> None:
        if isinstance(value, MacAddress):
            b = value._b
        elif isinstance(value, str):
            parts = value.replace("-", ":").split(":")
            if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
                raise ValueError(f"not a MAC address: {value!r}")
            try:
                b = bytes(int(p, 16) for p in parts)
            except ValueError:
                raise ValueError(f"not a MAC address: {value!r}") from None
        else:
            b = bytes(value)
            if len(b) != 6:
                raise ValueError(f"a MAC address is 6 bytes, got {len(b)}")
        self._b = b

    @classmethod
    def _trusted(cls, b: bytes) -> "MacAddress":
        # Parsers already hold exactly 6 bytes: skip the checks.
        obj = object.__new__(cls)
        obj._b = b
        return obj

    @classmethod
    def broadcast(cls) -> "MacAddress":
        """ff:ff:ff:ff:ff:ff."""
        return _BROADCAST

    @classmethod
    def random_local(cls) -> "MacAddress":
        """A random unicast, locally administered address (like QEMU's 52:54:... but random)."""
        b = bytearray(os.urandom(6))
        b[0] = (b[0] & 0xFC) | 0x02
        return cls._trusted(bytes(b))

    @property
    def packed(self) -> bytes:
        """The 6 bytes, in wire order."""
        return self._b

    @property
    def is_broadcast(self) -> bool:
        return self._b == b"\xff\xff\xff\xff\xff\xff"

    @property
    def is_multicast(self) -> bool:
        """True for group addresses (broadcast included), as the I/G bit says."""
        return bool(self._b[0] & 1)

    @property
    def is_unicast(self) -> bool:
        return not self._b[0] & 1

    @property
    def is_local(self) -> bool:
        """True if the locally administered (U/L) bit is set."""
        return bool(self._b[0] & 2)

    def __bytes__(self) -> bytes:
        return self._b

    def __str__(self) -> str:
        return self._b.hex(":")

    def __repr__(self) -> str:
        return f"MacAddress('{self._b.hex(':')}')"

    def __eq__(self, other) -> bool:
        if isinstance(other, MacAddress):
            return self._b == other._b
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._b)


_BROADCAST = MacAddress(b"\xff" * 6)


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


# Dict lookup is several times cheaper than calling the enum per frame.
_ETHERTYPES = {int(e): e for e in EtherType}


def ethertype_of(value: int):
    """The EtherType member for ``value``, or the plain int if unknown."""
    return _ETHERTYPES.get(value, value)


class EthernetFrame:
    """A zero-copy view of an Ethernet II frame in ``buf``.

    Reading needs any buffer; the setters need a writable one (bytearray or a
    memoryview of one).  Construction checks only that the header fits.
    """

    __slots__ = ("buf",)

    def __init__(self, buf) -> None:
        if len(buf) < HEADER_LEN:
            raise MalformedPacket("ethernet: truncated", f"{len(buf)} bytes")
        self.buf = buf

    @property
    def dst(self) -> MacAddress:
        return MacAddress._trusted(bytes(self.buf[0:6]))

    @dst.setter
    def dst(self, mac: MacAddress) -> None:
        self.buf[0:6] = mac.packed

    @property
    def src(self) -> MacAddress:
        return MacAddress._trusted(bytes(self.buf[6:12]))

    @src.setter
    def src(self, mac: MacAddress) -> None:
        self.buf[6:12] = mac.packed

    @property
    def ethertype(self):
        return ethertype_of(_U16.unpack_from(self.buf, 12)[0])

    @ethertype.setter
    def ethertype(self, value: int) -> None:
        _U16.pack_into(self.buf, 12, value)

    @property
    def payload(self) -> memoryview:
        return memoryview(self.buf)[HEADER_LEN:]


@dataclass(slots=True)
class EthernetRepr:
    """An Ethernet II header: destination, source, EtherType.

    ``ethertype`` is an :class:`EtherType` when known, else the plain int (the
    interface drops those).  VLAN tags are not stripped: a tagged frame parses
    with ``ethertype == EtherType.VLAN``.
    """

    dst: MacAddress
    src: MacAddress
    ethertype: int

    @classmethod
    def parse(cls, buf) -> tuple["EthernetRepr", memoryview]:
        """Parse a frame; return the header and a view of the payload (padding included)."""
        if len(buf) < HEADER_LEN:
            raise MalformedPacket("ethernet: truncated", f"{len(buf)} bytes")
        dst, src, et = _HDR.unpack_from(buf, 0)
        return (
            cls(MacAddress._trusted(dst), MacAddress._trusted(src), _ETHERTYPES.get(et, et)),
            memoryview(buf)[HEADER_LEN:],
        )

    def header_bytes(self) -> bytes:
        """The 14 header bytes."""
        return _HDR.pack(self.dst.packed, self.src.packed, self.ethertype)

    def emit(self, payload=b"", pad: bool = False) -> bytes:
        """Return header + payload; with ``pad`` zero-fill up to the 60-byte minimum."""
        frame = _HDR.pack(self.dst.packed, self.src.packed, self.ethertype) + payload
        if pad and len(frame) < MIN_FRAME_LEN:
            frame += bytes(MIN_FRAME_LEN - len(frame))
        return frame
