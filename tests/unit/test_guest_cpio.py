"""guest.cpio: newc archives, checked byte for byte and by the system's cpio."""

import gzip
import io
import subprocess

import pytest

from guest.cpio import CpioWriter, gzip_compress


def header(ino, mode, nlink, filesize, namesize, rdev=(0, 0), mtime=0):
    fields = [ino, mode, 0, 0, nlink, mtime, filesize, 0, 0, rdev[0], rdev[1], namesize, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def archive(build, mtime=0) -> bytes:
    out = io.BytesIO()
    with CpioWriter(out, mtime=mtime) as writer:
        build(writer)
    return out.getvalue()


def test_directory_member_fixed_bytes():
    data = archive(lambda w: w.add_dir("/dev"))
    expected_dir = (b"070701" b"00000001" b"000041ED" b"00000000" b"00000000" b"00000002"
                    b"00000000" b"00000000" b"00000000" b"00000000" b"00000000" b"00000000"
                    b"00000004" b"00000000" b"dev\0" b"\0\0")
    expected_trailer = (b"070701" b"00000000" b"00000000" b"00000000" b"00000000" b"00000001"
                        b"00000000" b"00000000" b"00000000" b"00000000" b"00000000" b"00000000"
                        b"0000000B" b"00000000" b"TRAILER!!!\0" b"\0\0\0")
    assert data == expected_dir + expected_trailer
    assert len(expected_dir) % 4 == 0 and len(data) % 4 == 0


def test_file_symlink_and_device_fixed_bytes():
    def build(w):
        w.add_file("init", b"hi\n", 0o755)
        w.add_symlink("bin", "usr/bin")
        w.add_device("dev/console", "c", 5, 1, 0o600)

    data = archive(build)
    # 110-byte header + "init\0" = 115 -> 1 pad byte; data 3 -> 1 pad byte.
    file_member = header(1, 0o100755, 1, 3, 5) + b"init\0" + b"\0" + b"hi\n" + b"\0"
    # 110 + "bin\0" = 114 -> 2 pad bytes; target 7 bytes -> 1 pad byte.
    link_member = header(2, 0o120777, 1, 7, 4) + b"bin\0" + b"\0\0" + b"usr/bin" + b"\0"
    # 110 + 12 = 122 -> 2 pad bytes; no data.
    dev_member = header(3, 0o020600, 1, 0, 12, rdev=(5, 1)) + b"dev/console\0" + b"\0\0"
    # 110 + 11 = 121 -> 3 pad bytes.
    trailer = header(0, 0, 1, 0, 11) + b"TRAILER!!!\0" + b"\0\0\0"
    assert data == file_member + link_member + dev_member + trailer


def test_mtime_is_written_and_trailer_keeps_zero():
    data = archive(lambda w: w.add_file("f", b"", 0o644), mtime=0x5F5E100)
    assert data.startswith(header(1, 0o100644, 1, 0, 2, mtime=0x5F5E100))
    assert data.endswith(header(0, 0, 1, 0, 11) + b"TRAILER!!!\0\0\0\0")


def test_system_cpio_lists_and_extracts_what_we_wrote(tmp_path):
    payload = bytes(range(256)) * 5 + b"tail"

    def build(w):
        w.add_dir("etc")
        w.add_file("etc/hello", b"hello world\n", 0o640)
        w.add_dir("usr")
        w.add_dir("usr/bin")
        w.add_file("usr/bin/blob", payload, 0o755)
        w.add_symlink("bin", "usr/bin")
        w.add_dir("dev")
        w.add_device("dev/console", "c", 5, 1)
        w.add_device("dev/null", "c", 1, 3, 0o666)

    compressed = tmp_path / "initrd.gz"
    compressed.write_bytes(gzip_compress(archive(build)))
    raw = gzip.decompress(compressed.read_bytes())

    listing = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True)
    assert listing.stdout.decode().split() == [
        "etc", "etc/hello", "usr", "usr/bin", "usr/bin/blob", "bin", "dev", "dev/console", "dev/null"]

    verbose = subprocess.run(["cpio", "-tv", "--quiet"], input=raw, capture_output=True, check=True)
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in verbose.stdout.decode().splitlines()}
    assert lines["etc/hello"].startswith("-rw-r-----")
    assert lines["dev/null"].startswith("crw-rw-rw-") and "1,   3" in lines["dev/null"]
    assert lines["bin"].startswith("lrwxrwxrwx") and lines["bin"].endswith("bin -> usr/bin")

    out = tmp_path / "x"
    out.mkdir()
    # Extract the regular files and the symlink (device nodes need no checking twice).
    subprocess.run(["cpio", "-i", "--quiet", "-d", "etc/hello", "usr/bin/blob", "bin", "usr/bin", "usr", "etc"],
                   input=raw, cwd=out, check=True)
    assert (out / "etc/hello").read_bytes() == b"hello world\n"
    assert (out / "usr/bin/blob").read_bytes() == payload
    assert (out / "bin").is_symlink() and (out / "bin/blob").read_bytes() == payload


def test_gzip_is_deterministic():
    data = archive(lambda w: w.add_file("a", b"x" * 1000))
    assert gzip_compress(data) == gzip_compress(data)
    assert gzip.decompress(gzip_compress(data)) == data


@pytest.mark.parametrize("action, message", [
    (lambda w: w.add_file("", b""), "empty"),
    (lambda w: w.add_file("a\0b", b""), "NUL"),
    (lambda w: w.add_symlink("l", ""), "symlink target"),
    (lambda w: w.add_device("d", "x", 1, 1), "'c' or 'b'"),
    (lambda w: w.add_device("d", "c", 1 << 32, 0), "32 bits"),
    (lambda w: w.add_file("TRAILER!!!", b""), "reserved"),
    (lambda w: (w.add_file("a", b""), w.add_file("/a", b"")), "duplicate"),
])
def test_bad_members_are_refused(action, message):
    writer = CpioWriter(io.BytesIO())
    with pytest.raises(ValueError, match=message):
        action(writer)


def test_no_members_after_close():
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.close()
    writer.close()  # idempotent: still one trailer
    assert out.getvalue().count(b"TRAILER!!!") == 1
    with pytest.raises(ValueError, match="closed"):
        writer.add_dir("late")
