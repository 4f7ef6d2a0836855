"""The pcapng writer, read back by a small reader written here from the
format's description (not from the writer): block lengths at both ends,
32-bit padding of data and options, option encoding, the end-of-options
marker, and what the packets say (interface, direction, comment, time)."""
from __future__ import annotations

import errno
import os
import struct
import time
from pathlib import Path

import pytest

from nicdev.net.capture_time import CaptureClock
from nicdev.net.pcapng import PcapngWriter, direction_flags, enhanced_packet_block, option
from nicdev.virtio.trace import Tracer

from support.switch_ports import BCAST, A, B, frame


def read_options(body: bytes) -> list[tuple[int, bytes]]:
    opts, off = [], 0
    while off < len(body):
        code, length = struct.unpack_from("<HH", body, off)
        off += 4
        value = body[off:off + length]
        pad = body[off + length:off + length + (-length % 4)]
        assert pad == bytes(len(pad)), "option padding must be zero bytes"
        off += length + (-length % 4)
        if code == 0:
            assert length == 0 and off == len(body), "opt_endofopt ends the list, with length 0"
            return opts
        opts.append((code, value))
    assert not opts, "a non-empty option list ends with opt_endofopt"
    return opts


def read_pcapng(path) -> dict:
    data = Path(path).read_bytes()
    blocks, off = [], 0
    while off < len(data):
        btype, total = struct.unpack_from("<II", data, off)
        assert total % 4 == 0 and total >= 12, f"block length {total} at {off}"
        assert struct.unpack_from("<I", data, off + total - 4)[0] == total, "trailing length differs"
        blocks.append((btype, data[off + 8:off + total - 4]))
        off += total
    assert off == len(data), "the file ends inside a block"
    btype, shb = blocks[0]
    magic, major, minor, section_len = struct.unpack_from("<IHHq", shb)
    assert (btype, magic, major, minor, section_len) == (0x0A0D0D0A, 0x1A2B3C4D, 1, 0, -1)
    out = {"shb": read_options(shb[16:]), "interfaces": [], "packets": []}
    for btype, body in blocks[1:]:
        if btype == 1:
            linktype, reserved, snaplen = struct.unpack_from("<HHI", body)
            assert (linktype, reserved) == (1, 0)
            out["interfaces"].append(dict(read_options(body[8:])) | {"snaplen": snaplen})
        elif btype == 6:
            ifid, hi, lo, caplen, origlen = struct.unpack_from("<IIIII", body)
            assert ifid < len(out["interfaces"]), "a packet before its interface block"
            padded = caplen + (-caplen % 4)
            assert body[20 + caplen:20 + padded] == bytes(padded - caplen), "packet padding must be zero bytes"
            opts = dict(read_options(body[20 + padded:]))
            out["packets"].append({"if": ifid, "ts": (hi << 32) | lo, "data": body[20:20 + caplen],
                                   "origlen": origlen, "flags": struct.unpack("<I", opts[2])[0],
                                   "comment": opts[1].decode()})
        else:
            raise AssertionError(f"unexpected block type {btype:#x}")
    return out


def test_blocks_round_trip_through_an_independent_reader(tmp_path):
    path = tmp_path / "cap.pcapng"
    writer = PcapngWriter(str(path))
    assert writer.add_interface("a") == 0 and writer.add_interface("bb") == 1 and writer.add_interface("a") == 0
    t = time.monotonic()
    frames = [frame(BCAST, A), frame(A, B, b"y" * 47), frame(A, B, b"z" * 49)]     # 61/63 bytes: padding
    writer("a", t, 1, "tx", 17, frames[0])
    writer("bb", t + 0.5, 0, "rx", 3, frames[1])
    writer("a", t + 1.0, 0, "rx", 255, frames[2])
    writer.close()
    cap = read_pcapng(path)
    assert cap["shb"] == [(4, b"mnet")]
    assert [i[2] for i in cap["interfaces"]] == [b"a", b"bb"]
    assert all(i[9] == b"\x09" and i["snaplen"] == 0 for i in cap["interfaces"])
    assert [p["data"] for p in cap["packets"]] == frames
    assert [p["origlen"] for p in cap["packets"]] == [len(f) for f in frames]
    assert [p["if"] for p in cap["packets"]] == [0, 1, 0]
    assert [p["flags"] for p in cap["packets"]] == [1, 2, 2]    # tx: inbound to the switch; rx: outbound
    assert [p["comment"] for p in cap["packets"]] == [
        "port a queue 1 (tx) head 17", "port bb queue 0 (rx) head 3", "port a queue 0 (rx) head 255"]
    ts = [p["ts"] for p in cap["packets"]]
    assert ts[1] - ts[0] == 500_000_000 and ts[2] - ts[0] == 1_000_000_000   # nanoseconds, spacing kept
    assert abs(ts[0] / 1e9 - time.time()) < 60
    assert writer.packets == 3 and writer.lost == 0


def test_a_port_gets_its_interface_block_on_its_first_frame(tmp_path):
    path = tmp_path / "late.pcapng"
    writer = PcapngWriter(str(path))
    writer.add_interface("a")
    writer("late", time.monotonic(), 1, "tx", 0, frame(BCAST, B))
    writer.close()
    cap = read_pcapng(path)
    assert [i[2] for i in cap["interfaces"]] == [b"a", b"late"] and cap["packets"][0]["if"] == 1
    assert writer.interfaces == ["a", "late"]


def test_the_writer_is_a_frame_sink_of_a_tracer(tmp_path):
    path = tmp_path / "sink.pcapng"
    writer = PcapngWriter(str(path))
    tracer = Tracer("p1", "device")
    tracer.add_frame_sink(writer)
    tracer.frame(1, "tx", 42, frame(BCAST, A))
    tracer.remove_frame_sink(writer)
    tracer.frame(1, "tx", 43, frame(BCAST, A))       # not captured any more
    writer.close()
    cap = read_pcapng(path)
    assert [(p["comment"], p["flags"]) for p in cap["packets"]] == [("port p1 queue 1 (tx) head 42", 1)]


def test_option_encoding_pads_values_to_32_bits():
    assert option(1, b"abc") == struct.pack("<HH", 1, 3) + b"abc\0"
    assert option(1, b"abcd") == struct.pack("<HH", 1, 4) + b"abcd"
    assert option(0, b"") == bytes(4)
    with pytest.raises(ValueError):
        option(1, bytes(0x10000))
    block = enhanced_packet_block(0, 1, b"12345")
    assert len(block) == 8 + 20 + 8 + 4 and len(block) % 4 == 0    # no options: no end marker


def test_recent_packets_are_flushed_for_a_reader_of_a_running_capture(tmp_path):
    path = tmp_path / "live.pcapng"
    now = [100.0]
    writer = PcapngWriter(str(path), flush_interval=1.0, clock=lambda: now[0])
    size = path.stat().st_size
    writer("a", now[0], 1, "tx", 0, frame(BCAST, A))
    assert path.stat().st_size == size, "flushed before the interval"
    now[0] += 1.0
    writer("a", now[0], 1, "tx", 1, frame(BCAST, A))
    assert len(read_pcapng(path)["packets"]) == 2
    writer("a", now[0], 1, "tx", 2, frame(BCAST, A))
    writer.flush()
    assert len(read_pcapng(path)["packets"]) == 3
    writer.close()


def test_bad_direction_is_refused():
    with pytest.raises(ValueError, match="rx or tx"):
        direction_flags("up")


def test_unwritable_path_is_a_clear_one_line_error(tmp_path):
    with pytest.raises(OSError) as info:
        PcapngWriter(str(tmp_path / "no" / "such" / "dir.pcapng"))
    assert info.value.errno == errno.ENOENT
    assert "cannot write pcapng file" in str(info.value) and "\n" not in str(info.value)


def test_a_full_disk_at_the_start_is_an_error(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(OSError, match="cannot write pcapng file /dev/full"):
        PcapngWriter("/dev/full")


class FullDisk:
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    flush = write

    def close(self):
        pass


def test_a_disk_filling_up_later_stops_the_capture_without_raising(tmp_path):
    writer = PcapngWriter(str(tmp_path / "full.pcapng"))
    writer._file.close()
    writer._file = FullDisk()
    writer("a", time.monotonic(), 1, "tx", 0, frame(BCAST, A))     # the data path never sees the error
    writer("a", time.monotonic(), 1, "tx", 1, frame(BCAST, A))
    assert writer.failed == "No space left on device"
    assert writer.lost == 2 and writer.packets == 0 and "stopped" in writer.status
    writer.flush()
    writer.close()


def test_capture_clock_maps_monotonic_to_wall_nanoseconds():
    clock = CaptureClock(monotonic=lambda: 10.0, wall_ns=lambda: 1_000_000_000_000)
    assert clock.wall_ns(10.0) == 1_000_000_000_000
    assert clock.wall_ns(11.25) == 1_001_250_000_000
    assert clock.now_ns() == 1_000_000_000_000
