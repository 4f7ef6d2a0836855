"""guest.image: kernel command line, cache, and a full build from a fake kernel package."""

import gzip
import shutil
import subprocess

import pytest

from guest import image as image_module
from guest.debs import Apt
from guest.errors import GuestBuildError
from guest.image import build_image, default_cache_dir, kernel_cmdline
from support.elf_writer import module_elf

KVER = "6.1.0-99-amd64"


def test_cmdline_defaults():
    assert kernel_cmdline() == "console=ttyS0 panic=-1 quiet loglevel=3"


def test_cmdline_all_settings():
    line = kernel_cmdline(ip="10.0.0.1/24", gateway="10.0.0.254", hostname="vm-0", extra=["pci=nomsi"])
    assert line == ("console=ttyS0 panic=-1 quiet loglevel=3 mnet.ip=10.0.0.1/24 mnet.gw=10.0.0.254 "
                    "mnet.hostname=vm-0 pci=nomsi")
    assert "mnet.ip=fd00::2/64" in kernel_cmdline(ip="fd00::2/64", gateway="fd00::1")


@pytest.mark.parametrize("kwargs, message", [
    ({"ip": "10.0.0.1"}, "needs a prefix"),
    ({"ip": "10.0.0.300/24"}, "bad guest ip"),
    ({"gateway": "10.0.0.1"}, "needs an ip"),
    ({"ip": "10.0.0.1/24", "gateway": "nope"}, "bad gateway"),
    ({"ip": "10.0.0.1/24", "gateway": "fd00::1"}, "different IP versions"),
    ({"hostname": "bad_name"}, "bad hostname"),
    ({"hostname": "-x"}, "bad hostname"),
    ({"extra": ["two words"]}, "bad extra"),
    ({"extra": [""]}, "bad extra"),
])
def test_cmdline_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernel_cmdline(**kwargs)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "multios-net" / "guest"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "multios-net" / "guest"


MODULES = {
    "kernel/drivers/virtio/virtio_ring.ko": "",
    "kernel/drivers/virtio/virtio.ko": "virtio_ring",
    "kernel/drivers/virtio/virtio_pci.ko": "virtio_ring,virtio",
    "kernel/net/core/failover.ko": "",
    "kernel/drivers/net/net_failover.ko": "failover",
    "kernel/drivers/net/virtio_net.ko": "virtio_ring,virtio,net_failover",
    "kernel/drivers/char/virtio_console.ko": "virtio",
}


@pytest.fixture(scope="module")
def kernel_deb(tmp_path_factory):
    """A package shaped like linux-image-X-amd64: a vmlinuz and a modules tree."""
    root = tmp_path_factory.mktemp("kpkg") / "root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: linux-image-{KVER}\nVersion: 6.1.999-1\nArchitecture: amd64\n"
        "Maintainer: t <t@example.invalid>\nDescription: fake kernel\n")
    (root / "boot").mkdir()
    (root / f"boot/vmlinuz-{KVER}").write_bytes(b"fake bzImage " * 100)
    mods = root / "lib/modules" / KVER
    for rel, depends in MODULES.items():
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        name = rel.rsplit("/", 1)[1][:-3]
        (mods / rel).write_bytes(module_elf({"depends": depends, "name": name,
                                              "vermagic": f"{KVER} SMP preempt mod_unload "}))
    (mods / "modules.builtin").write_text("kernel/drivers/tty/serial/8250/8250.ko\n")
    deb = root.parent / f"linux-image-{KVER}_6.1.999-1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


class FakeApt:
    """Runner for guest.debs.Apt: apt answers are faked, dpkg-deb is real."""

    def __init__(self, deb, fail_apt_cache=False):
        self.deb = deb
        self.fail_apt_cache = fail_apt_cache
        self.calls = []

    def __call__(self, argv, cwd):
        self.calls.append(" ".join(argv[:2]))
        if argv[0] == "apt-cache":
            if self.fail_apt_cache:
                return subprocess.CompletedProcess(argv, 100, "", "E: no lists")
            return subprocess.CompletedProcess(argv, 0, f"linux-image-amd64\n  Depends: linux-image-{KVER}\n", "")
        if argv[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(argv, 100, "", "E: offline")
        if argv[:2] == ["apt-get", "download"]:
            shutil.copy(self.deb, cwd)
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True)


def cpio_listing(initrd):
    raw = gzip.decompress(initrd.read_bytes())
    return subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True).stdout.decode().split()


def cpio_file(initrd, member, tmp_path):
    raw = gzip.decompress(initrd.read_bytes())
    out = tmp_path / "extract"
    out.mkdir(exist_ok=True)
    subprocess.run(["cpio", "-i", "--quiet", "-d", member], input=raw, cwd=out, check=True)
    return (out / member).read_text()


def test_build_then_cache_then_force(kernel_deb, tmp_path):
    fake = FakeApt(kernel_deb)
    messages = []
    image = build_image(cache_dir=tmp_path, progress=messages.append, apt=Apt(fake, messages.append))
    assert image.kernel_version == KVER
    assert image.kernel.read_bytes() == b"fake bzImage " * 100
    assert image.initrd.parent.parent == tmp_path / "images"
    text = "\n".join(messages)
    for step in ("downloading", "unpacking", "modules", "initramfs"):
        assert step in text

    listing = cpio_listing(image.initrd)
    for member in ("init", "etc/inittab", "etc/mnet/channel", "etc/mnet/console", "etc/mnet/modules",
                   "etc/profile", "dev/console", "dev/null", "usr/bin/busybox", "usr/bin/iperf3",
                   "usr/bin/socat", "bin", "lib64", "usr/lib/x86_64-linux-gnu/libc.so.6",
                   f"usr/lib/modules/{KVER}/kernel/drivers/net/virtio_net.ko"):
        assert member in listing, member
    assert not any("virtio_console" in m for m in listing)  # not wanted, not a dependency
    modules = cpio_file(image.initrd, "etc/mnet/modules", tmp_path).split()
    assert [m.rsplit("/", 1)[1] for m in modules] == [
        "virtio_ring.ko", "virtio.ko", "virtio_pci.ko", "failover.ko", "net_failover.ko", "virtio_net.ko"]
    assert not list(tmp_path.glob("build-*"))  # the unpacked package is gone

    calls_before = len(fake.calls)
    mtime = image.initrd.stat().st_mtime_ns
    again_messages = []
    again = build_image(cache_dir=tmp_path, progress=again_messages.append, apt=Apt(fake, again_messages.append))
    messages.extend(again_messages)
    assert again == image
    # The cache hit is fast because it builds nothing: no step reported, the image untouched.
    assert not [m for m in again_messages for step in ("downloading", "unpacking", "libraries", "modules",
                                                         "initramfs", "ready in") if step in m], again_messages
    assert image.initrd.stat().st_mtime_ns == mtime
    assert fake.calls[calls_before:] == ["apt-cache depends"]  # only the version check

    mtime = image.initrd.stat().st_mtime_ns
    forced = build_image(cache_dir=tmp_path, force=True, progress=messages.append, apt=Apt(fake, messages.append))
    assert forced == image and image.initrd.stat().st_mtime_ns != mtime
    assert "apt-get download" not in fake.calls[calls_before + 1:]  # the .deb came from the cache

    # Without apt (no package lists, no network) the cached image is still found.
    offline = build_image(cache_dir=tmp_path, progress=messages.append,
                          apt=Apt(FakeApt(kernel_deb, fail_apt_cache=True), messages.append))
    assert offline == image
    assert "using cached" in messages[-1]


def test_extra_program_changes_the_key(kernel_deb, tmp_path):
    fake = FakeApt(kernel_deb)
    plain = build_image(cache_dir=tmp_path, progress=lambda m: None, apt=Apt(fake, lambda m: None))
    extra = build_image(cache_dir=tmp_path, extra_programs=["busybox"], progress=lambda m: None, apt=Apt(fake, lambda m: None))
    assert plain.initrd != extra.initrd


def test_build_errors(kernel_deb, tmp_path):
    with pytest.raises(GuestBuildError, match="program 'no-such-program' not found"):
        build_image(cache_dir=tmp_path, extra_programs=["no-such-program"], apt=Apt(FakeApt(kernel_deb), lambda m: None))
    with pytest.raises(GuestBuildError, match="apt-get update failed"):
        build_image(cache_dir=tmp_path, progress=lambda m: None,
                    apt=Apt(FakeApt(kernel_deb, fail_apt_cache=True), lambda m: None))
    with pytest.raises(GuestBuildError, match="kernel module virtio_nope not found"):
        build_image(cache_dir=tmp_path, modules=["virtio_nope"], progress=lambda m: None,
                    apt=Apt(FakeApt(kernel_deb), lambda m: None))
    assert not list(tmp_path.glob("build-*"))
    assert not list((tmp_path / "images").iterdir())


def test_missing_busybox_is_reported(kernel_deb, tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "BUSYBOX", str(tmp_path / "no-busybox"))
    with pytest.raises(GuestBuildError, match="install busybox-static"):
        build_image(cache_dir=tmp_path, apt=Apt(FakeApt(kernel_deb), lambda m: None))
