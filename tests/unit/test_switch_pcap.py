"""The capture port on the switch: it gets every forwarded or flooded frame, in pcap format."""
from __future__ import annotations

import errno
import struct
import time
from pathlib import Path

import pytest

from nicdev.net.errors import PortError
from nicdev.net.loop import EventLoop
from nicdev.net.pcap_port import LINKTYPE_ETHERNET, PCAP_MAGIC, PcapPort
from nicdev.net.switch import Switch

from support.switch_ports import BCAST, A, B, FakePort, frame


def read_pcap(path):
    data = Path(path).read_bytes()
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack_from("=IHHiIII", data)
    assert (magic, major, minor, linktype) == (PCAP_MAGIC, 2, 4, LINKTYPE_ETHERNET)
    records, off = [], 24
    while off < len(data):
        sec, usec, caplen, origlen = struct.unpack_from("=IIII", data, off)
        off += 16
        records.append((sec + usec / 1e6, data[off:off + caplen], origlen))
        off += caplen
    assert off == len(data), "trailing garbage after the last record"
    return snaplen, records


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def test_capture_port_gets_forwarded_and_flooded_frames_only(loop, tmp_path):
    path = tmp_path / "cap.pcap"
    sw = Switch(loop)
    p1, p2, p3 = (sw.add_port(FakePort(n)) for n in ("p1", "p2", "p3"))
    cap = sw.add_port(PcapPort("cap", str(path)))
    before = time.time()
    flooded = frame(BCAST, A)
    p1.deliver(flooded)                       # flood (A learned on p1)
    answer = frame(A, B, b"reply".ljust(46, b"\0"))
    p2.deliver(answer)                        # forwarded to p1 only
    p2.deliver(frame(B, A))                   # B behind p2 already: filtered, not captured
    p3.deliver(b"short")                      # malformed, not captured
    sw.close()                                # flushes and closes the file
    assert p1.sent == [answer] and p3.sent == [flooded]
    assert cap.counters.tx_frames == 2
    snaplen, records = read_pcap(path)
    assert snaplen == 65535
    assert [r[1] for r in records] == [flooded, answer]
    assert all(before - 1 <= r[0] <= time.time() + 1 for r in records)
    assert [r[2] for r in records] == [len(flooded), len(answer)]


def test_frames_longer_than_snaplen_are_truncated_with_original_length(loop, tmp_path):
    path = tmp_path / "snap.pcap"
    cap = PcapPort("cap", str(path), snaplen=20)
    cap.start(loop)
    cap.transmit(frame(BCAST, A, b"y" * 100))
    cap.close()
    snaplen, records = read_pcap(path)
    assert snaplen == 20 and records[0][1] == frame(BCAST, A, b"y" * 100)[:20] and records[0][2] == 114


def test_periodic_flush_makes_frames_visible_while_running(loop, tmp_path):
    path = tmp_path / "live.pcap"
    cap = PcapPort("cap", str(path))
    cap.start(loop)
    cap.transmit(frame(BCAST, A))
    loop.run(until=lambda: path.stat().st_size > 24, timeout=5)
    assert path.stat().st_size == 24 + 16 + 60, "frame not flushed within 5 s"
    cap.close()


def test_unwritable_path_is_a_port_error(loop, tmp_path):
    cap = PcapPort("cap", str(tmp_path / "no" / "such" / "dir.pcap"))
    with pytest.raises(PortError, match=r"pcap port 'cap': cannot write .*dir.pcap: No such file"):
        cap.start(loop)
    assert cap.status == "not started"


def test_full_disk_stops_the_capture_but_not_the_switch(loop, tmp_path):
    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    sw = Switch(loop)
    p1, p2 = sw.add_port(FakePort("p1")), sw.add_port(FakePort("p2"))
    cap = sw.add_port(PcapPort("cap", str(tmp_path / "c.pcap")))
    cap._file.close()
    cap._file = FullDisk()                    # the disk fills up while capturing
    p1.deliver(frame(BCAST, A))
    p1.deliver(frame(BCAST, A))
    assert len(p2.sent) == 2
    assert cap.counters.errors == {"write failed": 1} and cap.counters.tx_dropped == 2
    assert cap.status == "stopped: No space left on device"
    sw.close()


@pytest.mark.parametrize("kw, msg", [({"path": ""}, "empty file name"),
                                     ({"path": "x.pcap", "snaplen": 4}, "snaplen")])
def test_bad_arguments(kw, msg):
    with pytest.raises(PortError, match=msg):
        PcapPort("cap", **kw)
