"""Frames to and from a non-blocking descriptor a burst at a time.

One Python call moves a burst; with the C data path (`MNET_DATAPATH=c`, the
default) the system calls are made in C (nicdev/virtio/csrc/fd_burst.c):
read() per frame into a preallocated pool for a TAP, recvmmsg/sendmmsg for
a datagram socket. With `MNET_DATAPATH=python` the same calls are plain
os.read/os.write/recvfrom/sendto in a loop: the reference, and what runs
without a compiler. Both give the same results, errors included:

- `FdReader(slot, burst).read(fd)` -> (frames, errno): up to `burst`
  reads of at most `slot` bytes, stopping when the descriptor has nothing
  (errno 0) or a read fails otherwise (its errno; the frames before it are
  good);
- `FdWriter(burst).write(fd, records, heads=None)` -> errnos: one write
  per record (after its head, if given), a failed one (errno in its place)
  not stopping the others; None when all went; any number of records;
- `DgramReader(slot, burst, remote).read(sock)` -> (datagrams, from_remote
  flags, errno), and `DgramWriter(burst, remote).send(sock, records)` ->
  errnos, the same for datagrams to and from `remote` (a `(host, port)`
  tuple or a unix socket path).
"""
from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct

from nicdev.virtio import kernels

__all__ = ["FdReader", "FdWriter", "DgramReader", "DgramWriter", "pack_sockaddr"]



def pack_sockaddr(addr) -> bytes:
    """`addr` as the kernel's struct sockaddr: (host, port) for IPv4/IPv6, a path for unix."""
    if isinstance(addr, str):
        path = os.fsencode(addr)
        return struct.pack("=H", socket.AF_UNIX) + path + b"\0"
    host, port = addr
    if ":" in host:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack(">HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, host) + bytes(4))
    return struct.pack("=H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_pton(socket.AF_INET, host) + bytes(8)


class _Pool:
    """`burst` slots of `slot` bytes and their lengths, allocated once (C data path)."""

    def __init__(self, slot: int, burst: int) -> None:
        if slot < 1 or burst < 1:
            raise ValueError(f"slot ({slot}) and burst ({burst}) must be at least 1")
        self.slot, self.burst = slot, burst
        ffi = kernels.ffi
        self.pool = ffi.new("uint8_t[]", slot * burst)
        self.view = memoryview(ffi.buffer(self.pool))
        self.lengths = ffi.new("uint32_t[]", burst)
        self.err = ffi.new("int *")

    def frames(self, n: int) -> list[bytes]:
        """The first `n` slots' frames, copied out (the pool is reused by the next read)."""
        view, slot = self.view, self.slot
        frames = []
        start = 0
        for length in kernels.ffi.unpack(self.lengths, n):
            frames.append(bytes(view[start:start + length]))
            start += slot
        return frames


class FdReader:
    """Reads up to `burst` frames of at most `slot` bytes, one read() each."""

    def __init__(self, slot: int, burst: int) -> None:
        self.slot, self.burst = slot, burst
        self._c = _Pool(slot, burst) if kernels.use_c() else None

    def read(self, fd: int) -> tuple[list[bytes], int]:
        c = self._c
        if c is not None:
            n = kernels.lib.mnet_fd_read_burst(fd, c.pool, c.slot, c.burst, c.lengths, c.err)
            return c.frames(n), c.err[0]
        frames: list[bytes] = []
        while len(frames) < self.burst:
            try:
                frames.append(os.read(fd, self.slot))
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            except OSError as exc:
                return frames, exc.errno
        return frames, 0


class _Records:
    """Lengths and per-record errnos for up to `burst` records per system-call
    loop (C data path); longer bursts go in several loops."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self.lengths = kernels.ffi.new("uint32_t[]", burst)
        self.errs = kernels.ffi.new("int[]", burst)

    def run(self, records: list, heads: list | None, call) -> list[int] | None:
        """`call(buf, lengths, n, errs)` over chunks of the records (each
        `heads[i] + records[i]` if heads are given); the errnos as the writers return them."""
        errs: list[int] = []
        failed = False
        for start in range(0, len(records), self.burst):
            chunk = records[start:start + self.burst]
            n = len(chunk)
            if heads is None:
                self.lengths[0:n] = [len(r) for r in chunk]
                buf = b"".join(chunk)
            else:
                hchunk = heads[start:start + n]
                self.lengths[0:n] = [len(h) + len(r) for h, r in zip(hchunk, chunk)]
                buf = b"".join([part for pair in zip(hchunk, chunk) for part in pair])
            if call(buf, self.lengths, n, self.errs) != n:
                failed = True
            errs.extend(self.errs[0:n])
        return errs if failed else None


class FdWriter:
    """Writes records (whole frames, each after its head if `heads` are
    given: a TAP's virtio-net header), one write() each."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self._c = _Records(burst) if kernels.use_c() else None

    def write(self, fd: int, records: list, heads: list | None = None) -> list[int] | None:
        c = self._c
        if c is not None:
            return c.run(records, heads, lambda buf, lengths, n, errs: kernels.lib.mnet_fd_write_burst(
                fd, buf, lengths, n, errs))
        errs = [0] * len(records)
        failed = False
        for i, record in enumerate(records):
            try:
                if heads is None:
                    os.write(fd, record)
                else:
                    os.writev(fd, (heads[i], record))
            except OSError as exc:
                errs[i], failed = exc.errno, True
        return errs if failed else None


class DgramReader:
    """recvmmsg up to `burst` datagrams of at most `slot` bytes, each flagged
    whether it came from `remote`."""

    def __init__(self, slot: int, burst: int, remote) -> None:
        self.slot, self.burst, self.remote = slot, burst, remote
        self._c = None
        if kernels.use_c():
            self._c = _Pool(slot, burst)
            self._from = kernels.ffi.new("uint8_t[]", burst)
            self._remote = pack_sockaddr(remote)

    def read(self, sock: socket.socket) -> tuple[list[bytes], list[bool], int]:
        c = self._c
        if c is not None:
            n = kernels.lib.mnet_dgram_recv_burst(sock.fileno(), c.pool, c.slot, c.burst, c.lengths, self._from,
                                                  self._remote, len(self._remote), c.err)
            return c.frames(n), [bool(f) for f in self._from[0:n]], c.err[0]
        frames, flags = [], []
        while len(frames) < self.burst:
            try:
                data, sender = sock.recvfrom(self.slot)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            except OSError as exc:
                return frames, flags, exc.errno
            frames.append(data)
            flags.append(self._is_remote(sender))
        return frames, flags, 0

    def _is_remote(self, sender) -> bool:
        if isinstance(self.remote, str):
            return sender == self.remote
        return isinstance(sender, tuple) and (sender[0], sender[1]) == self.remote


class DgramWriter:
    """sendmmsg records to `remote`, one datagram each."""

    def __init__(self, burst: int, remote) -> None:
        self.burst, self.remote = burst, remote
        self._c = None
        if kernels.use_c():
            self._c = _Records(burst)
            self._remote = pack_sockaddr(remote)

    def send(self, sock: socket.socket, records: list) -> list[int] | None:
        c = self._c
        if c is not None:
            fd, remote = sock.fileno(), self._remote
            return c.run(records, None, lambda buf, lengths, n, errs: kernels.lib.mnet_dgram_send_burst(
                fd, buf, lengths, n, remote, len(remote), errs))
        errs = [0] * len(records)
        failed = False
        for i, record in enumerate(records):
            try:
                sock.sendto(record, self.remote)
            except OSError as exc:
                errs[i], failed = exc.errno or errno_mod.EIO, True
        return errs if failed else None
