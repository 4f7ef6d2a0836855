"""A TAP device as a switch port: the Linux kernel is the peer.

Opening /dev/net/tun and asking for IFF_TAP | IFF_NO_PI creates the
interface and hands us a file descriptor that reads and writes whole
Ethernet frames. The interface can then be moved into a network namespace
(pyroute2) and the descriptor keeps working; it is brought up there, but its
addresses are the user's business (see nicdev.net.netns.set_address). Closing
the descriptor of a TAP we created removes the interface, wherever it is.

By default (`vnet_hdr=True`) every frame carries a 12-byte virtio_net_hdr
and (`offloads=True`) TUNSETOFFLOAD tells the kernel we take partial
checksums and TCP segmentation (v4, v6, ECN): the kernel then hands us
NEEDS_CSUM and GSO frames (its TSO, up to 64 KiB each) and DATA_VALID ones,
and takes ours the same way, doing the checksums and segmentation itself
when it must. That is the fast default: one frame per 64 KiB of TCP
instead of 45. `offloads=False` keeps the header but makes the kernel
hand over finished, MTU-sized frames; `vnet_hdr=False` drops the header
too, and then only finished frames pass either way.

Link down/up (`set_link`, `mnet ctl link`): besides the switch forwarding
nothing either way, the kernel is told the carrier went (TUNSETCARRIER): the
interface shows NO-CARRIER (its `carrier` reads 0) and stops sending, as a
NIC whose cable was pulled.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct

from nicdev.virtio.net_hdr import NetHdr

from nicdev.virtio import offload
from .errors import PortError
from .fd_burst import FdReader, FdWriter
from .ethernet import MAX_FRAME_LEN
from .netns import NetnsError, check_netns_name, link_up, move_link, netns_exists
from nicdev.virtio.offload import GSO_ECN, GSO_TCPV4, GSO_TCPV6, FrameMeta, OffloadError
from .port import Port

log = logging.getLogger(__name__)

__all__ = ["TapPort", "PortError", "check_ifname"]

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETVNETHDRSZ = 0x400454D8
TUNSETOFFLOAD = 0x400454D0
TUNSETCARRIER = 0x400454E2        # _IOW('T', 226, int), Linux 5.0 and later
TUN_F_CSUM = 0x01                       # we take partial checksums
TUN_F_TSO4 = 0x02                       # ... and TCP GSO frames (needs TUN_F_CSUM)
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
_IFREQ = struct.Struct("16sH22x")       # ifr_name, ifr_flags, rest of the union
# With vnet_hdr we ask for the 12-byte header (virtio 1.0 layout with
# num_buffers), the same size our virtio-net device uses.
VNET_HDR_LEN = 12
_VNET_ZERO = bytes(VNET_HDR_LEN)
_TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
_GSO_KINDS = frozenset({GSO_TCPV4, GSO_TCPV6, GSO_ECN})
_VLAN_TAG = 4
_BURST = 64                              # frames per readable event, so other ports get a turn


def check_ifname(ifname: str) -> str:
    """Return `ifname` if Linux would accept it as an interface name, else raise PortError."""
    if (not isinstance(ifname, str) or not ifname or len(ifname.encode()) > 15 or ifname in (".", "..")
            or any(c in ifname for c in "/:") or any(c.isspace() for c in ifname) or not ifname.isprintable()):
        raise PortError(f"bad interface name {ifname!r}: 1 to 15 characters, no '/', ':' or spaces")
    return ifname


class TapPort(Port):
    """Frames to and from a TAP interface `ifname`, optionally inside network namespace `netns`.

    The interface is created by `start()` and removed by `close()`. An
    existing persistent TAP of that name is attached to instead, and left in
    place on close. `vnet_hdr` (default on): frames carry a virtio_net_hdr;
    `offloads` (default: the same as vnet_hdr) turns the kernel's checksum
    and TCP segmentation offloads on over it (see the module doc).
    """

    kind = "tap"
    takes_bursts = True

    def __init__(self, name: str, ifname: str, *, netns: str | None = None, vnet_hdr: bool = True,
                 offloads: bool | None = None) -> None:
        super().__init__(name)
        self.ifname = check_ifname(ifname)
        self.netns = netns
        if netns is not None:
            check_netns_name(netns)
            self._require_netns()
        self.vnet_hdr = bool(vnet_hdr)
        self.offloads = self.vnet_hdr if offloads is None else bool(offloads)
        if self.offloads and not self.vnet_hdr:
            raise PortError(f"tap port {name!r}: offloads need vnet_hdr (the kernel says what to do in it)")
        if self.vnet_hdr:
            # The kernel takes NEEDS_CSUM and GSO frames over a vnet header
            # whatever TUNSETOFFLOAD says: that only governs what it gives us.
            self.accepts_csum_partial = True
            self.accepts_gso = _GSO_KINDS
        self._fd: int | None = None
        self._loop = None
        self._failed: str | None = None
        self._read_size = MAX_FRAME_LEN + _VLAN_TAG + (VNET_HDR_LEN if self.vnet_hdr else 0)
        self._reader = FdReader(self._read_size, _BURST)
        self._writer = FdWriter(_BURST)

    def _require_netns(self) -> None:
        if self.netns is not None and not netns_exists(self.netns):
            raise PortError(f"network namespace {self.netns!r} does not exist")

    @property
    def fileno(self) -> int | None:
        """The TAP file descriptor while the port runs."""
        return self._fd

    # -- setting up ---------------------------------------------------------
    def start(self, loop) -> None:
        self._require_netns()
        fd = self._open_tap()
        try:
            if self.netns is not None:
                move_link(self.ifname, self.netns)
            link_up(self.ifname, self.netns)
        except NetnsError as exc:
            os.close(fd)
            raise PortError(f"tap port {self.name!r}: {exc}") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._loop = loop
        self._failed = None
        loop.add_reader(fd, self._on_readable)
        log.info("tap port %s: %s up%s", self.name, self.ifname, f" in netns {self.netns}" if self.netns else "")

    def _open_tap(self) -> int:
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise PortError(f"tap port {self.name!r}: {TUN_PATH} is missing (modprobe tun)") from None
        except PermissionError:
            raise PortError(f"tap port {self.name!r}: no permission to open {TUN_PATH} (run as root)") from None
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if self.vnet_hdr else 0)
        try:
            answer = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(self.ifname.encode(), flags))
            if self.vnet_hdr:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                # 0 switches them off again on a persistent TAP that had them.
                fcntl.ioctl(fd, TUNSETOFFLOAD, _TAP_OFFLOADS if self.offloads else 0)
        except OSError as exc:
            os.close(fd)
            reason = {
                errno.EPERM: "creating TAP devices needs root (CAP_NET_ADMIN)",
                errno.EBUSY: "the interface exists and another program has it open",
                errno.EINVAL: "an interface of that name exists and is not a TAP device we can attach to",
            }.get(exc.errno, exc.strerror)
            raise PortError(f"tap port {self.name!r}: cannot create {self.ifname!r}: {reason}") from None
        # The kernel may have completed a name pattern such as "tap%d".
        self.ifname = _IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
        return fd

    # -- data path ----------------------------------------------------------
    def _on_readable(self) -> None:
        fd = self._fd
        frames, err = self._reader.read(fd)
        if self.wants_bursts:
            items = []
            for data in frames:
                item = self._received(data)
                if item is not None:
                    items.append(item)
            if items:
                self.deliver_burst(items)
        else:
            for data in frames:
                item = self._received(data)
                if item is not None:
                    self.deliver(*item)
                if self._fd != fd:          # closed by whoever handled the frame
                    return
        if err and self._fd == fd:
            self._fail(f"read failed: {os.strerror(err)}")

    def _received(self, data: bytes) -> tuple[bytes, FrameMeta | None] | None:
        """One read's frame and its metadata, or None (a counted drop)."""
        if not self.vnet_hdr:
            return data, None
        if len(data) < VNET_HDR_LEN:
            self.counters.rx_dropped += 1
            self.counters.count_error("short vnet header")
            return None
        if data[0] or data[1]:
            return self._offloaded(data)
        return data[VNET_HDR_LEN:], None

    def _offloaded(self, data: bytes) -> tuple[bytes, FrameMeta | None] | None:
        """A frame whose header asks for something: checked, with its metadata."""
        meta = FrameMeta.from_hdr(NetHdr.unpack(data, VNET_HDR_LEN))
        frame = data[VNET_HDR_LEN:]
        if meta is not None:
            try:
                meta = offload.check(frame, meta)
            except OffloadError as e:
                self.counters.rx_dropped += 1
                self.counters.count_error(e.reason)
                log.debug("tap port %s: dropped a frame from the kernel: %s", self.name, e)
                return None
        return frame, meta

    def transmit(self, frame: bytes, meta: FrameMeta | None = None) -> bool:
        fd = self._fd
        if fd is None:
            self.counters.tx_dropped += 1
            return False
        try:
            if not self.vnet_hdr:
                os.write(fd, frame)
            elif meta is None:
                os.write(fd, _VNET_ZERO + frame)
            else:
                os.writev(fd, (meta.to_hdr().pack(VNET_HDR_LEN), frame))
        except BlockingIOError:
            self.counters.tx_dropped += 1           # the kernel's queue is full
            return False
        except OSError as exc:
            self.counters.tx_dropped += 1
            self.counters.count_error("interface down" if exc.errno == errno.EIO else f"write failed: {exc.strerror}")
            return False
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(frame)
        return True

    def transmit_burst(self, items) -> int:
        """Frames to the kernel, one write() each, the writes in one C call
        (`nicdev.net.fd_burst`); counted as `transmit` counts them."""
        fd = self._fd
        if fd is None:
            self.counters.tx_dropped += len(items)
            return 0
        frames = [frame for frame, _ in items]
        heads = None
        if self.vnet_hdr:
            heads = [_VNET_ZERO if meta is None else meta.to_hdr().pack(VNET_HDR_LEN) for _, meta in items]
        errs = self._writer.write(fd, frames, heads)
        counters = self.counters
        if errs is None:
            counters.tx_frames += len(frames)
            counters.tx_bytes += sum(map(len, frames))
            return len(frames)
        sent = 0
        for frame, err in zip(frames, errs):
            if not err:
                sent += 1
                counters.tx_frames += 1
                counters.tx_bytes += len(frame)
                continue
            counters.tx_dropped += 1
            if err not in (errno.EAGAIN, errno.EWOULDBLOCK):    # EAGAIN: the kernel's queue is full
                counters.count_error("interface down" if err == errno.EIO else f"write failed: {os.strerror(err)}")
        return sent

    def set_link(self, up: bool) -> None:
        """The switch's side (Port.set_link), then the kernel's carrier. A
        failed port stays down (its interface is gone)."""
        if up and self._failed:
            raise PortError(f"tap port {self.name!r} failed ({self._failed}): its link cannot come up")
        super().set_link(up)
        if self._fd is not None:
            try:
                fcntl.ioctl(self._fd, TUNSETCARRIER, struct.pack("i", 1 if up else 0))
            except OSError as exc:      # an older kernel: the switch's side still holds
                log.warning("tap port %s: cannot set the carrier %s: %s", self.name, "on" if up else "off",
                            exc.strerror or exc)

    def _fail(self, reason: str) -> None:
        # E.g. the namespace was deleted and the interface with it: stop
        # polling a descriptor that will never work again.
        log.error("tap port %s (%s): %s; port stopped", self.name, self.ifname, reason)
        self.counters.count_error(reason)
        self._failed = reason
        self.link_up = False
        self._release()

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)

    def close(self) -> None:
        """Stop reading and close the descriptor, which removes the interface."""
        self._release()

    @property
    def status(self) -> str:
        where = f"{self.ifname} in netns {self.netns}" if self.netns else self.ifname
        if self._failed:
            return f"{where}: failed: {self._failed}"
        if self._fd is None:
            return f"{where}: closed" if self._loop else f"{where}: not started"
        return f"{where}: up" if self.link_up else f"{where}: link down"
