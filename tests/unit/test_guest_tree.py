"""guest.tree: the in-memory image tree, its symlink handling and host copies."""

import io
import os
import subprocess

import pytest

from guest.cpio import CpioWriter
from guest.errors import GuestBuildError
from guest.tree import Device, Dir, File, ImageTree, Symlink


def test_parents_are_created_and_listed_first():
    tree = ImageTree()
    tree.add_file("/usr/lib/x/libz.so.1", data=b"z")
    tree.add_dir("/etc")
    assert tree.paths() == ["/etc", "/usr", "/usr/lib", "/usr/lib/x", "/usr/lib/x/libz.so.1"]
    assert tree.get("/usr/lib") == Dir()
    assert tree.get("/usr/lib/x/libz.so.1") == File(mode=0o644, data=b"z")


def test_symlinked_parent_is_followed():
    tree = ImageTree()
    tree.add_dir("/usr/lib")
    tree.add_symlink("/lib", "usr/lib")
    where = tree.add_file("/lib/modules/6.1/a.ko", data=b"elf")
    assert where == "/usr/lib/modules/6.1/a.ko"
    assert "/lib/modules" not in tree
    assert tree.resolve("/lib/modules/6.1/a.ko") == "/usr/lib/modules/6.1/a.ko"
    # A directory wanted where a symlink to a directory is: accepted, followed.
    assert tree.add_dir("/lib") == "/usr/lib"


def test_absolute_symlink_and_dotdot_are_followed():
    tree = ImageTree()
    tree.add_symlink("/a", "/b/c")
    tree.add_symlink("/d", "b/../e")
    assert tree.add_file("/a/f", data=b"") == "/b/c/f"
    assert tree.add_file("/d/g", data=b"") == "/e/g"


def test_same_entry_twice_is_fine_but_conflicts_are_errors():
    tree = ImageTree()
    tree.add_symlink("/bin", "usr/bin")
    tree.add_symlink("/bin", "usr/bin")
    with pytest.raises(GuestBuildError, match="already holds"):
        tree.add_symlink("/bin", "other")
    tree.add_file("/f", data=b"1")
    with pytest.raises(GuestBuildError, match="already holds"):
        tree.add_file("/f", data=b"2")
    with pytest.raises(GuestBuildError, match="cannot make directory"):
        tree.add_dir("/f")
    with pytest.raises(GuestBuildError, match="not a directory"):
        tree.add_file("/f/x", data=b"")


def test_bad_requests():
    tree = ImageTree()
    with pytest.raises(GuestBuildError, match="absolute"):
        tree.add_dir("relative")
    with pytest.raises(GuestBuildError, match="either data or source"):
        tree.add_file("/x")
    with pytest.raises(GuestBuildError, match="not a regular file"):
        tree.add_file("/x", source="/nonexistent/file")
    with pytest.raises(GuestBuildError, match="device kind"):
        tree.add_device("/dev/x", "z", 1, 1)
    with pytest.raises(GuestBuildError, match="empty symlink"):
        tree.add_symlink("/l", "")
    with pytest.raises(GuestBuildError, match="root"):
        tree.add_file("/", data=b"")


def test_symlink_loop_in_image_is_an_error():
    tree = ImageTree()
    tree.add_symlink("/a", "b")
    tree.add_symlink("/b", "a")
    with pytest.raises(GuestBuildError, match="too many"):
        tree.add_file("/a/x", data=b"")


@pytest.fixture
def fake_root(tmp_path):
    """A merged-/usr style host: /lib -> usr/lib, versioned library symlinks."""
    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/lib64").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    lib = root / "usr/lib/x86_64-linux-gnu"
    (lib / "libz.so.1.2.13").write_bytes(b"real z")
    os.chmod(lib / "libz.so.1.2.13", 0o755)
    os.symlink("libz.so.1.2.13", lib / "libz.so.1")
    (lib / "ld-linux-x86-64.so.2").write_bytes(b"loader")
    # Absolute symlink, as Debian's /lib64/ld-linux-x86-64.so.2 is.
    os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root / "usr/lib64/ld-linux-x86-64.so.2")
    return root


def test_host_path_symlink_chain_is_recreated(fake_root):
    tree = ImageTree()
    assert tree.add_host_path("/lib/x86_64-linux-gnu/libz.so.1", fake_root) == "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
    assert tree.get("/lib") == Symlink("usr/lib")
    assert tree.get("/usr/lib/x86_64-linux-gnu/libz.so.1") == Symlink("libz.so.1.2.13")
    real = tree.get("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
    assert isinstance(real, File) and real.mode == 0o755 and real.read() == b"real z"

    loader = tree.add_host_path("/lib64/ld-linux-x86-64.so.2", fake_root)
    assert loader == "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert tree.get("/lib64") == Symlink("usr/lib64")
    assert tree.get("/usr/lib64/ld-linux-x86-64.so.2") == Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")


def test_host_path_errors(fake_root):
    tree = ImageTree()
    with pytest.raises(GuestBuildError, match="does not exist"):
        tree.add_host_path("/usr/lib/missing.so", fake_root)
    with pytest.raises(GuestBuildError, match="not a regular file"):
        tree.add_host_path("/usr/lib", fake_root)
    (fake_root / "usr/file").write_bytes(b"")
    with pytest.raises(GuestBuildError, match="not a directory"):
        tree.add_host_path("/usr/file/below", fake_root)
    os.symlink("loop2", fake_root / "loop1")
    os.symlink("loop1", fake_root / "loop2")
    with pytest.raises(GuestBuildError, match="too many levels"):
        ImageTree().add_host_path("/loop1/x", fake_root)


def test_write_cpio_lists_every_entry(fake_root):
    tree = ImageTree()
    tree.add_host_path("/lib/x86_64-linux-gnu/libz.so.1", fake_root)
    tree.add_device("/dev/null", "c", 1, 3, 0o666)
    tree.add_file("/init", data=b"#!/bin/sh\n", mode=0o755)
    out = io.BytesIO()
    with CpioWriter(out) as writer:
        tree.write_cpio(writer)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=out.getvalue(), capture_output=True, check=True)
    assert listing.stdout.decode().split() == [
        "dev", "dev/null", "init", "lib", "usr", "usr/lib", "usr/lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu/libz.so.1", "usr/lib/x86_64-linux-gnu/libz.so.1.2.13"]
    assert tree.get("/dev/null") == Device("c", 1, 3, 0o666)
