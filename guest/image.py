"""Build (or find in the cache) a bootable guest: Debian kernel + busybox initramfs.

    image = build_image()                      # ~20 s the first time, instant after
    cmdline = kernel_cmdline(ip="10.0.0.1/24", hostname="vm0")
    # qemu ... -kernel image.kernel -initrd image.initrd -append cmdline

The initramfs holds busybox, the requested host programs (iperf3 and socat by
default) with their shared libraries and loader, the virtio modules with
their dependencies, and the boot scripts of guest.init. Images are cached
under $XDG_CACHE_HOME/multios-net/guest/images/<kernel version>-<recipe hash>;
the recipe hash covers the programs (path, size, mtime), the wanted modules,
the boot scripts and this builder's format version.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from guest import init as guest_init
from guest.cpio import CpioWriter, gzip_compress
from guest.debs import KERNEL_METAPACKAGE, Apt, kernel_version_of
from guest.elfdeps import DEFAULT_PROGRAMS, SYSTEM_LIBRARY_DIRS, find_program, resolve_closure
from guest.errors import GuestBuildError
from guest.modinfo import read_module_bytes, resolve_modules
from guest.tree import ImageTree

#: Leaf modules the guest needs; their dependencies come from .modinfo.
DEFAULT_MODULES = ("virtio_pci", "virtio_net")
#: What `tc qdisc ... netem` needs in the guest, both ways: netem itself, and for
#: the receive side an ingress qdisc whose matchall filter redirects to ifb0.
NETEM_MODULES = ("sch_netem", "sch_ingress", "cls_matchall", "act_mirred", "ifb")
#: ethtool turns GSO/GRO off, so netem sees (and drops) single packets, not 64 KB aggregates.
NETEM_PROGRAMS = ("tc", "ethtool")
BUSYBOX = "/bin/busybox"
#: Bump when the image layout changes in a way the recipe hash cannot see.
FORMAT_VERSION = 1

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GuestImage:
    """A built guest: pass kernel and initrd to QEMU's -kernel / -initrd."""

    kernel: Path
    initrd: Path
    kernel_version: str


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/multios-net/guest, or ~/.cache/multios-net/guest."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path.home() / ".cache"
    return base / "multios-net" / "guest"


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def kernel_cmdline(ip: str | None = None, gateway: str | None = None,
                   hostname: str | None = None, extra: Iterable[str] = ()) -> str:
    """The -append string: serial console, quiet boot, panic=-1, mnet.* settings.

    ip is "ADDR/PREFIX" (IPv4 or IPv6) for eth0, gateway a bare address (needs
    ip), hostname an RFC 1123 label, extra more kernel parameters. ValueError
    for anything malformed.
    """
    # panic=-1: a dying init reboots at once, and -no-reboot turns that into QEMU exiting.
    # quiet loglevel=3: fewer kernel lines on a slow TCG serial; our markers go to
    # /dev/console directly and are not affected.
    parts = ["console=ttyS0", "panic=-1", "quiet", "loglevel=3"]
    if ip is not None:
        text = str(ip)
        if "/" not in text:
            raise ValueError(f"guest ip {text!r} needs a prefix length, e.g. 10.0.0.1/24")
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError as exc:
            raise ValueError(f"bad guest ip {text!r}: {exc}") from exc
        parts.append(f"mnet.ip={iface.with_prefixlen}")
    if gateway is not None:
        if ip is None:
            raise ValueError("a gateway needs an ip for eth0")
        try:
            gw = ipaddress.ip_address(str(gateway))
        except ValueError as exc:
            raise ValueError(f"bad gateway {gateway!r}: {exc}") from exc
        if gw.version != iface.version:
            raise ValueError(f"gateway {gw} and ip {iface} are of different IP versions")
        parts.append(f"mnet.gw={gw}")
    if hostname is not None:
        if not _HOSTNAME.match(hostname):
            raise ValueError(f"bad hostname {hostname!r}: use letters, digits and '-' (max 63)")
        parts.append(f"mnet.hostname={hostname}")
    for item in extra:
        if not item or any(c.isspace() for c in item):
            raise ValueError(f"bad extra kernel parameter {item!r}")
        parts.append(item)
    return " ".join(parts)


def _file_stamp(path: str) -> list:
    st = os.stat(path)
    return [path, st.st_size, int(st.st_mtime)]


def recipe_hash(programs: list[str], modules: Iterable[str]) -> str:
    """Hash of everything that goes into an image except the kernel itself."""
    recipe = {
        "format": FORMAT_VERSION,
        "busybox": _file_stamp(BUSYBOX),
        "programs": [_file_stamp(p) for p in programs],
        "modules": list(modules),
        "scripts": [guest_init.INIT_SCRIPT, guest_init.INITTAB, guest_init.CONSOLE_SCRIPT,
                    guest_init.CHANNEL_SCRIPT, guest_init.profile(["x"])],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _find_cached(images: Path, key: str | None, digest: str) -> Path | None:
    candidates = [images / key] if key else sorted(images.glob(f"*-{digest}"), key=lambda p: p.stat().st_mtime)
    for directory in reversed(candidates):
        if (directory / "image.json").is_file():
            return directory
    return None


def _load(directory: Path) -> GuestImage:
    meta = json.loads((directory / "image.json").read_text())
    return GuestImage(directory / meta["kernel"], directory / meta["initrd"], meta["kernel_version"])


def build_image(cache_dir: str | Path | None = None, extra_programs: Iterable[str] = (),
                force: bool = False, progress: Progress = print,
                modules: Iterable[str] = DEFAULT_MODULES, apt: Apt | None = None) -> GuestImage:
    """Return a bootable guest image, building it only if the cache has none.

    extra_programs: more host programs (names or paths) to copy with their
    libraries, beside iperf3 and socat. force: rebuild even if cached.
    Raises GuestBuildError with a clear message when a step fails.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    images = cache / "images"
    modules = tuple(modules)
    apt = apt or Apt(progress=progress)
    programs = [find_program(p) for p in dict.fromkeys([*DEFAULT_PROGRAMS, *extra_programs])]
    if not Path(BUSYBOX).is_file():
        raise GuestBuildError(f"{BUSYBOX} not found: install busybox-static")
    digest = recipe_hash(programs, modules)

    try:
        package = apt.kernel_package(KERNEL_METAPACKAGE)
    except GuestBuildError as exc:
        cached = None if force else _find_cached(images, None, digest)
        if cached is None:
            raise
        progress(f"guest: cannot ask apt for the kernel ({exc}); using cached {cached.name}")
        return _load(cached)
    kernel_version = kernel_version_of(package)
    key = f"{kernel_version}-{digest}"
    if not force:
        cached = _find_cached(images, key, digest)
        if cached is not None:
            return _load(cached)

    started = time.monotonic()
    images.mkdir(parents=True, exist_ok=True)
    deb = apt.download(package, cache / "debs")
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        apt.unpack(deb, work / "root")
        out = work / "image"
        out.mkdir()
        _assemble(work / "root", out, kernel_version, programs, modules, progress)
        (out / "image.json").write_text(json.dumps({
            "kernel": f"vmlinuz-{kernel_version}", "initrd": "initrd.gz",
            "kernel_version": kernel_version, "package": package,
            "programs": programs, "modules": list(modules),
        }, indent=1) + "\n")
        final = images / key
        if final.exists():
            if not force:
                return _load(final)  # a concurrent build finished first
            shutil.rmtree(final)
        os.rename(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"guest: image {key} ready in {time.monotonic() - started:.1f}s")
    return _load(final)


def _assemble(root: Path, out: Path, kernel_version: str, programs: list[str],
              modules: tuple[str, ...], progress: Progress) -> None:
    vmlinuz = root / "boot" / f"vmlinuz-{kernel_version}"
    modules_dir = root / "lib" / "modules" / kernel_version
    if not vmlinuz.is_file():
        raise GuestBuildError(f"the kernel package has no boot/vmlinuz-{kernel_version}")
    shutil.copyfile(vmlinuz, out / vmlinuz.name)

    tree = ImageTree()
    # Host files first: they bring the host's /lib -> usr/lib style symlinks,
    # which later additions under /lib then follow.
    tree.add_host_path(BUSYBOX)
    closure = resolve_closure(programs)
    progress(f"guest: {len(closure.programs)} programs, {len(closure.libraries)} libraries")
    for path in closure.paths():
        tree.add_host_path(path)
    for directory in ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/etc", "/proc", "/sys",
                      "/dev", "/run", "/root", "/tmp"):
        tree.add_dir(directory, 0o1777 if directory == "/tmp" else 0o755)
    # The kernel opens /dev/console for /init before anything is mounted.
    tree.add_device("/dev/console", "c", 5, 1, 0o600)
    tree.add_device("/dev/null", "c", 1, 3, 0o666)

    resolved = resolve_modules(modules_dir, modules, kernel_version)
    progress(f"guest: modules {' '.join(m.name for m in resolved)}")
    module_paths = []
    for module in resolved:
        relative = module.path.relative_to(modules_dir)
        name = relative.name.split(".ko")[0] + ".ko"  # stored decompressed: busybox insmod wants plain ELF
        image_path = f"/lib/modules/{kernel_version}/{relative.parent.as_posix()}/{name}"
        module_paths.append(tree.add_file(image_path, data=read_module_bytes(module.path), mode=0o644))

    extra_dirs = [d for d in closure.library_dirs() if d not in SYSTEM_LIBRARY_DIRS]
    for path, (text, mode) in guest_init.guest_files(module_paths, extra_dirs).items():
        tree.add_file(path, data=text.encode(), mode=mode)

    progress("guest: writing initramfs")
    raw = io.BytesIO()
    with CpioWriter(raw) as writer:
        tree.write_cpio(writer)
    (out / "initrd.gz").write_bytes(gzip_compress(raw.getvalue()))
