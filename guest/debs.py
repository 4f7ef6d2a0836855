"""Fetch Debian packages without installing them, and unpack them.

`apt-get download` puts the .deb in a directory of ours; `dpkg-deb -x` unpacks
it anywhere. Both work offline once the package lists and the .deb are
there; when the lists are missing (a fresh container), `apt-get update` is
run once and the step retried.

The kernel comes from the metapackage linux-image-amd64, which contains
nothing but a dependency on the current versioned package
(linux-image-6.1.0-NN-amd64); that dependency is read with apt-cache.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from guest.errors import GuestBuildError

KERNEL_METAPACKAGE = "linux-image-amd64"

Runner = Callable[[Sequence[str], Path | None], subprocess.CompletedProcess]

_VERSIONED_KERNEL = re.compile(r"^linux-image-(\d+\.\d+\.\d+-\d+-[a-z0-9-]+?)(-unsigned)?$")


def _run_subprocess(argv: Sequence[str], cwd: Path | None) -> subprocess.CompletedProcess:
    env_lang = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=env_lang, check=False)
    except FileNotFoundError as exc:
        raise GuestBuildError(f"{argv[0]} is not installed: {exc}") from exc


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def parse_apt_cache_depends(text: str) -> list[str]:
    """Package names on the "Depends:" lines of `apt-cache depends` output.

    Alternatives ("|Depends:") are included in order; virtual packages
    ("<name>") are dropped.
    """
    names = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key.lstrip("|") == "Depends":
            value = value.strip()
            if value and not value.startswith("<"):
                names.append(value.split()[0])
    return names


def parse_depends_field(field: str) -> list[str]:
    """Package names in a Debian Depends field ("a (>= 1), b | c" -> [a, b, c])."""
    names = []
    for clause in field.split(","):
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ")[0].split("(")[0].split(":")[0]
            if name:
                names.append(name)
    return names


def pick_kernel_package(depends: Sequence[str]) -> str:
    """The versioned linux-image-X.Y.Z-N-FLAVOUR package among a metapackage's deps."""
    for name in depends:
        match = _VERSIONED_KERNEL.match(name)
        if match and not match.group(2):
            return name
    raise GuestBuildError(f"no versioned linux-image package among dependencies {list(depends)}")


def kernel_version_of(package: str) -> str:
    """'linux-image-6.1.0-56-amd64' -> '6.1.0-56-amd64' (the uname -r and modules dir)."""
    match = _VERSIONED_KERNEL.match(package)
    if not match:
        raise GuestBuildError(f"{package!r} is not a versioned linux-image package name")
    return match.group(1)


class Apt:
    """apt-get / apt-cache / dpkg-deb, with `apt-get update` on demand (once)."""

    def __init__(self, runner: Runner = _run_subprocess, progress: Callable[[str], None] = print) -> None:
        self._run = runner
        self._progress = progress
        self._updated = False

    def _update_once(self, why: str) -> bool:
        if self._updated:
            return False
        self._updated = True
        self._progress(f"guest: {why}; running apt-get update")
        done = self._run(["apt-get", "update", "-q"], None)
        if done.returncode != 0:
            raise GuestBuildError(f"apt-get update failed:\n{_tail(done.stderr or done.stdout)}")
        return True

    def depends(self, package: str) -> list[str]:
        """Direct dependencies of a package, from the package lists."""
        while True:
            done = self._run(["apt-cache", "depends", package], None)
            names = parse_apt_cache_depends(done.stdout) if done.returncode == 0 else []
            if names:
                return names
            if not self._update_once(f"apt-cache knows no dependencies of {package}"):
                detail = _tail(done.stderr or done.stdout) or "no Depends lines"
                raise GuestBuildError(f"cannot read the dependencies of {package}: {detail}")

    def kernel_package(self, metapackage: str = KERNEL_METAPACKAGE) -> str:
        """The versioned kernel package the metapackage currently points to."""
        return pick_kernel_package(self.depends(metapackage))

    def download(self, package: str, dest_dir: Path) -> Path:
        """The .deb of `package` in dest_dir, downloaded unless already there."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(dest_dir.glob(f"{package}_*.deb"))
        if existing:
            return existing[-1]
        self._progress(f"guest: downloading {package}")
        while True:
            done = self._run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], dest_dir)
            found = sorted(dest_dir.glob(f"{package}_*.deb"))
            if done.returncode == 0 and found:
                return found[-1]
            if not self._update_once(f"apt-get download {package} failed"):
                raise GuestBuildError(f"apt-get download {package} failed:\n{_tail(done.stderr or done.stdout)}")

    def field(self, deb: Path, name: str) -> str:
        """One control field of a .deb (e.g. Depends), "" if absent."""
        done = self._run(["dpkg-deb", "-f", str(deb), name], None)
        if done.returncode != 0:
            raise GuestBuildError(f"dpkg-deb -f {deb} failed:\n{_tail(done.stderr)}")
        return done.stdout.strip()

    def unpack(self, deb: Path, dest_dir: Path) -> Path:
        """Extract the package's files under dest_dir (nothing is installed)."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        self._progress(f"guest: unpacking {Path(deb).name}")
        done = self._run(["dpkg-deb", "-x", str(deb), str(dest_dir)], None)
        if done.returncode != 0:
            raise GuestBuildError(f"dpkg-deb -x {deb} failed:\n{_tail(done.stderr)}")
        return dest_dir
