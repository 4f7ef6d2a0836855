"""The endpoints of tcp_bulk.py: one role (recv, send, echo, rr) on one kind
of TCP, the kernel's sockets or a MultiOS stack on a VirtioNetNic.

A role runs as a subprocess (`tcp_bulk.py --endpoint ...`, the kernel's in a
namespace) or on a thread of tcp_bulk.py; listeners print "ready" when they
listen, and every role prints one JSON line with its result.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

CHUNK = 1 << 20
RR_SIZE = 64
OFFLOAD_BITS = ("CSUM", "GUEST_CSUM", "HOST_TSO4", "GUEST_TSO4", "HOST_TSO6", "GUEST_TSO6")


class KernelNet:
    """The kernel's sockets (the process runs inside a namespace)."""

    def __init__(self) -> None:
        import socket

        self.socket = socket

    def listen(self, port: int):
        s = self.socket.socket()
        s.setsockopt(self.socket.SOL_SOCKET, self.socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(4)
        return s

    def connect(self, ip: str, port: int, timeout: float):
        return self.socket.create_connection((ip, port), timeout=timeout)

    def settimeout(self, s, timeout: float) -> None:
        s.settimeout(timeout)

    def nodelay(self, s) -> None:
        s.setsockopt(self.socket.IPPROTO_TCP, self.socket.TCP_NODELAY, 1)

    def shut_write(self, s) -> None:
        s.shutdown(self.socket.SHUT_WR)

    def info(self) -> dict:
        return {"tcp": "linux"}

    def close(self) -> None:
        pass


class StackNet:
    """A MultiOS stack on a VirtioNetNic connected to `path`."""

    def __init__(self, path: str, ip: str, mac: str, offloads: bool) -> None:
        from nicdev.virtio.features import (VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
                                            VIRTIO_NET_F_HOST_TSO4, mask)
        from stack import Stack
        from stack.drivers import VirtioNetNic
        from stack.drivers.virtio_driver import DEFAULT_FEATURES

        features = DEFAULT_FEATURES
        if not offloads:
            features &= ~mask(VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4,
                              VIRTIO_NET_F_GUEST_TSO4)
        self.nic = VirtioNetNic(path, mac=mac, features=features, timeout=10.0)
        self.stack = Stack(self.nic, ip).start()

    def listen(self, port: int):
        from stack import IpAddress, SocketOption, SocketType

        s = self.stack.socket(SocketType.STREAM)
        s.set_option(SocketOption.REUSE_ADDR, True)
        s.bind(IpAddress.any(port))
        s.listen(4)
        return s

    def connect(self, ip: str, port: int, timeout: float):
        from stack import IpAddress, SocketType

        s = self.stack.socket(SocketType.STREAM)
        s.set_timeout(timeout)
        s.connect(IpAddress(ip, port))
        return s

    def settimeout(self, s, timeout: float) -> None:
        s.set_timeout(timeout)

    def nodelay(self, s) -> None:
        from stack import SocketOption

        s.set_option(SocketOption.TCP_NO_DELAY, True)

    def shut_write(self, s) -> None:
        from stack import Shutdown

        s.shutdown(Shutdown.WRITE)

    def info(self) -> dict:
        from nicdev.virtio.features import describe

        c = self.nic.counters
        names = describe(self.nic.features)
        return {"tcp": "multios", "nic_offloads": [n for n in names if n in OFFLOAD_BITS],
                "nic_tx_frames": c["tx_frames"], "nic_rx_frames": c["rx_frames"], "nic_rx_gso": c["rx_gso"],
                "nic_avg_tx_frame": round(c["tx_bytes"] / c["tx_frames"]) if c["tx_frames"] else None,
                "nic_avg_rx_frame": round(c["rx_bytes"] / c["rx_frames"]) if c["rx_frames"] else None,
                "nic_drops": self.nic.drops, "tcp_counters": {k: v for k, v in self.stack.counters().get("tcp", {}).items()
                                                              if k.startswith("drop") or k in ("rx", "tx")}}

    def close(self) -> None:
        self.stack.stop()
        self.nic.close()


def role_recv(net, port: int, timeout: float, verify: bool, emit) -> dict:
    lst = net.listen(port)
    net.settimeout(lst, timeout)
    emit("ready")
    s, _ = lst.accept()
    net.settimeout(s, timeout)
    h = hashlib.sha256() if verify else None
    n = 0
    t0 = None
    while True:
        data = s.recv(CHUNK)
        if not data:
            break
        if t0 is None:
            t0 = time.monotonic()
        n += len(data)
        if h is not None:
            h.update(data)
    seconds = time.monotonic() - (t0 or time.monotonic())
    s.close()
    lst.close()
    return {"bytes": n, "seconds": seconds, "sha256": h.hexdigest() if h else None}


def role_send(net, ip: str, port: int, total: int, timeout: float, verify: bool) -> dict:
    block = bytearray(os.urandom(CHUNK))
    h = hashlib.sha256() if verify else None
    t0 = time.monotonic()
    s = net.connect(ip, port, timeout)
    net.settimeout(s, timeout)
    sent, i = 0, 0
    while sent < total:
        block[:8] = i.to_bytes(8, "big")     # each chunk differs, so a misplaced one changes the hash
        chunk = block if total - sent >= CHUNK else block[:total - sent]
        s.sendall(chunk)
        if h is not None:
            h.update(chunk)
        sent += len(chunk)
        i += 1
    net.shut_write(s)
    while s.recv(65536):                      # the receiver closes once it has everything
        pass
    seconds = time.monotonic() - t0
    s.close()
    return {"bytes": sent, "seconds": seconds, "sha256": h.hexdigest() if h else None}


def role_echo(net, port: int, timeout: float, emit) -> dict:
    lst = net.listen(port)
    net.settimeout(lst, timeout)
    emit("ready")
    s, _ = lst.accept()
    net.settimeout(s, timeout)
    net.nodelay(s)
    n = 0
    while data := s.recv(65536):
        s.sendall(data)
        n += len(data)
    s.close()
    lst.close()
    return {"echoed": n}


def role_rr(net, ip: str, port: int, seconds: float, timeout: float) -> dict:
    s = net.connect(ip, port, timeout)
    net.settimeout(s, timeout)
    net.nodelay(s)
    msg = bytes(RR_SIZE)

    def one() -> None:
        s.sendall(msg)
        got = 0
        while got < RR_SIZE:
            data = s.recv(RR_SIZE - got)
            if not data:
                raise RuntimeError("echo server closed early")
            got += len(data)

    for _ in range(100):                       # warm-up (ARP, windows)
        one()
    clock = time.perf_counter
    rtts = []
    start = clock()
    end = start + seconds
    while (t := clock()) < end:
        one()
        rtts.append(clock() - t)
    elapsed = clock() - start
    net.shut_write(s)
    while s.recv(65536):
        pass
    s.close()
    rtts.sort()
    return {"count": len(rtts), "elapsed": elapsed, "rr_per_s": len(rtts) / elapsed,
            "p50_us": rtts[len(rtts) // 2] * 1e6, "p99_us": rtts[int(len(rtts) * 0.99)] * 1e6}


def run_role(net, role: str, args: list, verify: bool, emit) -> None:
    """Play `role` on `net`; `emit(line)` gets "ready" (listeners) and the JSON result. Closes `net`."""
    try:
        if role == "recv":
            result = role_recv(net, int(args[0]), float(args[1]), verify, emit)
        elif role == "send":
            result = role_send(net, args[0], int(args[1]), int(args[2]), float(args[3]), verify)
        elif role == "echo":
            result = role_echo(net, int(args[0]), float(args[1]), emit)
        else:
            result = role_rr(net, args[0], int(args[1]), float(args[2]), float(args[3]))
        result["net"] = net.info()
    finally:
        net.close()
    emit(json.dumps(result))


def endpoint_main(argv: list[str]) -> int:
    """`--endpoint KIND [--offloads on|off] [--verify] ROLE ARGS...`; KIND is `kernel` or `stack:PATH,IP/PREFIX,MAC`."""
    p = argparse.ArgumentParser(prog="tcp_bulk.py --endpoint")
    p.add_argument("kind")
    p.add_argument("--offloads", default="on", choices=("on", "off"))
    p.add_argument("--verify", action="store_true")
    p.add_argument("role", choices=("recv", "send", "echo", "rr"))
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    if a.kind == "kernel":
        net = KernelNet()
    else:
        path, ip, mac = a.kind.removeprefix("stack:").split(",")
        net = StackNet(path, ip, mac, a.offloads == "on")
    run_role(net, a.role, a.args, a.verify, lambda line: print(line, flush=True))
    return 0
