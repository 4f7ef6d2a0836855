"""guest.debs: apt output parsing, apt-get update on demand, real dpkg-deb."""

import subprocess

import pytest

from guest.debs import (Apt, kernel_version_of, parse_apt_cache_depends, parse_depends_field,
                        pick_kernel_package)
from guest.errors import GuestBuildError

APT_CACHE_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
 |Depends: linux-image-6.1.0-55-amd64
  Depends: <virtual-thing>
  Recommends: firmware-linux-free
"""


def test_parse_apt_cache_depends():
    assert parse_apt_cache_depends(APT_CACHE_DEPENDS) == ["linux-image-6.1.0-56-amd64", "linux-image-6.1.0-55-amd64"]
    assert parse_apt_cache_depends("E: No packages found\n") == []


def test_parse_depends_field():
    field = "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, libc6:amd64"
    assert parse_depends_field(field) == ["kmod", "linux-base", "initramfs-tools", "linux-initramfs-tool", "libc6"]


def test_pick_kernel_package_and_version():
    assert pick_kernel_package(["kmod", "linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.1.0-56-amd64"]) \
        == "linux-image-6.1.0-56-amd64"
    assert kernel_version_of("linux-image-6.1.0-56-amd64") == "6.1.0-56-amd64"
    assert kernel_version_of("linux-image-6.1.0-56-cloud-amd64") == "6.1.0-56-cloud-amd64"
    with pytest.raises(GuestBuildError, match="no versioned linux-image"):
        pick_kernel_package(["linux-image-amd64", "kmod"])
    with pytest.raises(GuestBuildError, match="not a versioned"):
        kernel_version_of("linux-image-amd64")


class FakeRunner:
    """Scripted answers keyed by the command's first words; records every call."""

    def __init__(self, answers):
        self.answers = answers  # key -> list of (returncode, stdout, stderr) or callable(cwd)
        self.calls = []

    def __call__(self, argv, cwd):
        self.calls.append(list(argv))
        key = " ".join(argv[:2])
        answer = self.answers[key].pop(0)
        if callable(answer):
            answer = answer(cwd)
        return subprocess.CompletedProcess(argv, answer[0], answer[1], answer[2])


def quiet(_msg):
    pass


def test_depends_runs_update_once_when_lists_are_missing():
    runner = FakeRunner({
        "apt-cache depends": [(0, "linux-image-amd64\n", "W: no lists"), (0, APT_CACHE_DEPENDS, "")],
        "apt-get update": [(0, "", "")],
    })
    messages = []
    apt = Apt(runner, messages.append)
    assert apt.kernel_package() == "linux-image-6.1.0-56-amd64"
    assert [c[:2] for c in runner.calls] == [["apt-cache", "depends"], ["apt-get", "update"], ["apt-cache", "depends"]]
    assert any("apt-get update" in m for m in messages)


def test_depends_gives_up_after_one_update():
    runner = FakeRunner({
        "apt-cache depends": [(100, "", "E: Unable to locate package"), (100, "", "E: Unable to locate package")],
        "apt-get update": [(0, "", "")],
    })
    with pytest.raises(GuestBuildError, match="Unable to locate package"):
        Apt(runner, quiet).depends("nonexistent")


def test_failed_update_is_reported():
    runner = FakeRunner({"apt-cache depends": [(0, "", "")],
                         "apt-get update": [(100, "", "E: Could not resolve 'deb.debian.org'")]})
    with pytest.raises(GuestBuildError, match="apt-get update failed:\nE: Could not resolve"):
        Apt(runner, quiet).depends("x")


def test_download_retries_after_update_and_reuses_cache(tmp_path):
    def fetched(cwd):
        (cwd / "pkg_1.0_amd64.deb").write_bytes(b"deb")
        return (0, "", "")

    runner = FakeRunner({"apt-get download": [(100, "", "E: Can't find a source"), fetched],
                         "apt-get update": [(0, "", "")]})
    apt = Apt(runner, quiet)
    assert apt.download("pkg", tmp_path) == tmp_path / "pkg_1.0_amd64.deb"
    assert len(runner.calls) == 3
    assert apt.download("pkg", tmp_path) == tmp_path / "pkg_1.0_amd64.deb"
    assert len(runner.calls) == 3  # already there: apt not asked again


def test_download_failure_after_update(tmp_path):
    runner = FakeRunner({"apt-get download": [(100, "", "E: nope"), (100, "", "E: still nope")],
                         "apt-get update": [(0, "", "")]})
    with pytest.raises(GuestBuildError, match="apt-get download pkg failed:\nE: still nope"):
        Apt(runner, quiet).download("pkg", tmp_path)


@pytest.fixture
def tiny_deb(tmp_path):
    root = tmp_path / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: mnet-tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\n"
        "Depends: kmod, linux-base (>= 4.3~)\nDescription: test\n")
    (root / "boot").mkdir()
    (root / "boot/hello").write_text("hi\n")
    deb = tmp_path / "mnet-tiny_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_real_unpack_and_field(tiny_deb, tmp_path):
    apt = Apt(progress=quiet)
    out = apt.unpack(tiny_deb, tmp_path / "out")
    assert (out / "boot/hello").read_text() == "hi\n"
    assert parse_depends_field(apt.field(tiny_deb, "Depends")) == ["kmod", "linux-base"]
    assert apt.field(tiny_deb, "Recommends") == ""


def test_unpack_of_a_broken_deb(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(GuestBuildError, match="dpkg-deb -x .* failed"):
        Apt(progress=quiet).unpack(bad, tmp_path / "out")
    with pytest.raises(GuestBuildError, match="dpkg-deb -f .* failed"):
        Apt(progress=quiet).field(bad, "Depends")
