"""The stack driver's ring work alone, on both data paths: no device, no socket.

The driver's data path (`stack.drivers.virtio_link.VirtioLink`) runs over a
fake front-end (memory in a bytearray, eventfds for kicks); a "device" in
this process completes every TX buffer, or fills RX buffers with frames,
between calls, outside the timed part. So the figures are what the driver
itself costs per frame: transmitting bursts through each interface
(`tx`: `transmit` of (frame, None) pairs; `tx-frames`: `transmit_frames` of
a list of frames; `tx-prepared`: `transmit_frames` of one `TxFrames`, joined
once and sent again and again; every frame is copied into its slot each
time) and `poll_rx` (`rx`: mergeable buffers, one per frame). Each data path runs in a child
process with its MNET_DATAPATH; the Python reference of the same run is the
anchor.

    .venv/bin/python scripts/bench/driver_rings.py [--seconds 2] [--batch 64] [--sizes 64,1500]

Prints one JSON line per case: direction, frame size, data path, pps, ns per
frame, and the ratio to the Python path.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import struct
import subprocess
import sys
import time
from types import SimpleNamespace

from machine import cpu_model

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nicdev.virtio.driver_queue import DriverQueue  # noqa: E402
from nicdev.virtio.features import VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, mask  # noqa: E402
from nicdev.virtio.memory import GuestMemory, MemoryRegion  # noqa: E402
from nicdev.virtio.ring import SplitRingLayout  # noqa: E402
from stack.drivers import TxFrames  # noqa: E402
from stack.drivers.virtio_link import VirtioLink  # noqa: E402

DIRECTIONS = ("tx", "tx-frames", "tx-prepared", "rx")

QUEUE_SIZE = 256
RING_STRIDE = 0x10000
MEMORY = 8 << 20


class Rig:
    """A `VirtioLink` over a fake front-end, and the device's side of both rings."""

    def __init__(self) -> None:
        self.buf = bytearray(MEMORY)
        mem = GuestMemory([MemoryRegion(0, MEMORY, self.buf)])
        self.layouts = [SplitRingLayout(QUEUE_SIZE, i * RING_STRIDE) for i in range(2)]
        rings = []
        for layout in self.layouts:
            queue = DriverQueue.from_layout(layout, event_idx=True)
            queue.init(mem)
            rings.append(SimpleNamespace(queue=queue, kick_fd=os.eventfd(0, os.EFD_NONBLOCK),
                                         call_fd=os.eventfd(0), err_fd=os.eventfd(0)))
        pool = 2 * RING_STRIDE
        frontend = SimpleNamespace(mem=mem, features=mask(VIRTIO_F_VERSION_1, VIRTIO_F_RING_EVENT_IDX,
                                                          VIRTIO_NET_F_MRG_RXBUF),
                                   rings=rings, connection_fileno=lambda: -1, queue_size=QUEUE_SIZE,
                                   pool_size=MEMORY - pool, pool_gpa=pool, pool=memoryview(self.buf)[pool:])
        self.link = VirtioLink(frontend, 1500, collections.Counter(), 0)
        self.last_avail = [0, 0]
        self.used_idx = [0, 0]

    def device(self, ring: int, limit: int, payload: bytes | None = None) -> None:
        """Use up to `limit` published buffers of `ring` (writing `payload` into RX ones)."""
        layout, buf = self.layouts[ring], self.buf
        avail_idx = struct.unpack_from("<H", buf, layout.avail + 2)[0]
        done = 0
        while self.last_avail[ring] != avail_idx and done < limit:
            head = struct.unpack_from("<H", buf, layout.avail + 4 + 2 * (self.last_avail[ring] % QUEUE_SIZE))[0]
            written = 0
            if payload is not None:
                addr = struct.unpack_from("<Q", buf, layout.desc + 16 * head)[0]
                buf[addr:addr + len(payload)] = payload
                written = len(payload)
            struct.pack_into("<II", buf, layout.used + 4 + 8 * (self.used_idx[ring] % QUEUE_SIZE), head, written)
            self.used_idx[ring] = (self.used_idx[ring] + 1) & 0xFFFF
            self.last_avail[ring] = (self.last_avail[ring] + 1) & 0xFFFF
            done += 1
        struct.pack_into("<H", buf, layout.used + 2, self.used_idx[ring])


def measure(direction: str, size: int, batch: int, seconds: float) -> dict:
    rig = Rig()
    link = rig.link
    frames = spent = 0.0
    end = time.perf_counter() + seconds
    if direction.startswith("tx"):
        if direction == "tx":
            send, burst = link.transmit, [(bytes(size), None)] * batch
        else:
            send, burst = link.transmit_frames, [bytes(size)] * batch
            if direction == "tx-prepared":
                burst = TxFrames(burst)
        while time.perf_counter() < end:
            start = time.perf_counter()
            taken, _ = send(burst)
            spent += time.perf_counter() - start
            frames += taken
            rig.device(1, QUEUE_SIZE)
    else:
        payload = struct.pack("<10xH", 1) + bytes(size)      # a header with num_buffers 1, then the frame
        out = collections.deque()
        while time.perf_counter() < end:
            rig.device(0, batch, payload)
            start = time.perf_counter()
            link.poll_rx(out)
            spent += time.perf_counter() - start
            frames += len(out)
            out.clear()
    return {"frames": int(frames), "seconds": spent, "pps": frames / spent, "ns_per_frame": spent / frames * 1e9}


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        direction, size, batch, seconds = sys.argv[2:6]
        print(json.dumps(measure(direction, int(size), int(batch), float(seconds))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per case")
    parser.add_argument("--batch", type=int, default=64, help="frames per transmit() call / per device fill")
    parser.add_argument("--sizes", default="64,1500", help="frame sizes, comma-separated")
    args = parser.parse_args()
    cpu = cpu_model()
    for direction in DIRECTIONS:
        for size in (int(s) for s in args.sizes.split(",")):
            results = {}
            for datapath in ("python", "c"):
                child = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--child", direction, str(size), str(args.batch),
                     str(args.seconds)],
                    env={**os.environ, "MNET_DATAPATH": datapath}, capture_output=True, text=True, check=True)
                results[datapath] = json.loads(child.stdout.splitlines()[-1])
            anchor = results["python"]["pps"]
            for datapath, result in results.items():
                print(json.dumps({"case": f"driver {direction} ring work", "datapath": datapath, "frame_bytes": size,
                                  "batch": args.batch, "pps": round(result["pps"]),
                                  "ns_per_frame": round(result["ns_per_frame"]), "anchor": "python path, same run",
                                  "anchor_pps": round(anchor), "ratio_to_anchor": round(result["pps"] / anchor, 2),
                                  "frames": result["frames"], "cpu": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
