"""guest.modinfo: .modinfo parsing and module load order from depends=."""

import gzip
import lzma
import os
import stat

import pytest

from guest import modinfo as modinfo_module
from guest.errors import GuestBuildError
from guest.modinfo import module_name, parse_modinfo, read_builtin, read_modinfo, resolve_modules
from support.elf_writer import module_elf

VERMAGIC = "6.1.0-99-amd64 SMP preempt mod_unload modversions "


def test_parse_modinfo_fixed_bytes():
    section = (b"license=GPL\0description=Virtio network driver\0alias=virtio:d00000001v*\0"
               b"depends=virtio_ring,virtio,net_failover\0retpoline=Y\0intree=Y\0"
               b"name=virtio_net\0vermagic=" + VERMAGIC.encode() + b"\0\0\0")
    info = parse_modinfo(section)
    assert info["name"] == "virtio_net"
    assert info["vermagic"] == VERMAGIC
    assert info["depends"] == ["virtio_ring", "virtio", "net_failover"]
    assert info["alias"] == ["virtio:d00000001v*"]
    assert info["fields"]["license"] == ["GPL"]


def test_parse_modinfo_empty_depends_and_repeated_keys():
    info = parse_modinfo(b"depends=\0alias=a\0alias=b\0parm=x:int\0parm=y:bool\0")
    assert info["depends"] == [] and info["alias"] == ["a", "b"]
    assert info["fields"]["parm"] == ["x:int", "y:bool"]
    assert info["name"] == "" and info["vermagic"] == ""


@pytest.mark.parametrize("section", [b"novalue\0", b"=value\0"])
def test_parse_modinfo_malformed_entry(section):
    with pytest.raises(GuestBuildError, match="malformed .modinfo"):
        parse_modinfo(section)


def test_module_name():
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko") == "virtio_rng"
    assert module_name("x/virtio_net.ko.xz") == "virtio_net"
    assert module_name("x/virtio_net.ko.zst") == "virtio_net"
    with pytest.raises(GuestBuildError, match="not a kernel module"):
        module_name("x/virtio_net.o")


def test_read_modinfo_plain_xz_and_gz(tmp_path):
    elf = module_elf({"name": "demo", "depends": "dep", "vermagic": VERMAGIC})
    (tmp_path / "demo.ko").write_bytes(elf)
    (tmp_path / "demo.ko.xz").write_bytes(lzma.compress(elf, format=lzma.FORMAT_XZ))
    (tmp_path / "demo.ko.gz").write_bytes(gzip.compress(elf))
    for name in ("demo.ko", "demo.ko.xz", "demo.ko.gz"):
        info = read_modinfo(tmp_path / name)
        assert (info["name"], info["depends"], info["vermagic"]) == ("demo", ["dep"], VERMAGIC)


def test_read_modinfo_name_falls_back_to_file_name(tmp_path):
    (tmp_path / "my-mod.ko").write_bytes(module_elf({"depends": ""}))
    assert read_modinfo(tmp_path / "my-mod.ko")["name"] == "my_mod"


def test_zst_module_through_zstd_program(tmp_path, monkeypatch):
    # No zstandard package here: the zstd program is used. A stand-in that
    # copies stdin checks the plumbing without depending on zstd being installed.
    fake = tmp_path / "zstd"
    fake.write_text("#!/bin/sh\nexec cat\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)
    monkeypatch.setattr(modinfo_module.shutil, "which", lambda name: str(fake) if name == "zstd" else None)
    (tmp_path / "z.ko.zst").write_bytes(module_elf({"name": "z"}))
    assert read_modinfo(tmp_path / "z.ko.zst")["name"] == "z"


def test_zst_module_without_any_decompressor(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)
    monkeypatch.setattr(modinfo_module.shutil, "which", lambda name: None)
    (tmp_path / "z.ko.zst").write_bytes(b"whatever")
    with pytest.raises(GuestBuildError, match="zstandard package nor a zstd program"):
        read_modinfo(tmp_path / "z.ko.zst")


def test_read_modinfo_rejects_bad_files(tmp_path):
    (tmp_path / "text.ko").write_bytes(b"not an elf at all")
    with pytest.raises(GuestBuildError, match="not a valid ELF"):
        read_modinfo(tmp_path / "text.ko")
    (tmp_path / "broken.ko.xz").write_bytes(b"not xz")
    with pytest.raises(GuestBuildError, match="cannot decompress"):
        read_modinfo(tmp_path / "broken.ko.xz")
    from support.elf_writer import dynamic_elf
    (tmp_path / "plain.ko").write_bytes(dynamic_elf())
    with pytest.raises(GuestBuildError, match="no .modinfo"):
        read_modinfo(tmp_path / "plain.ko")


def make_tree(root, modules, builtin=()):
    """modules: {relative path: depends string}; vermagic from VERMAGIC unless given as tuple."""
    for rel, spec in modules.items():
        depends, vermagic = spec if isinstance(spec, tuple) else (spec, VERMAGIC)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = module_elf({"depends": depends, "name": module_name(rel), "vermagic": vermagic})
        path.write_bytes(lzma.compress(data) if rel.endswith(".xz") else data)
    (root / "modules.builtin").write_text("".join(f"{b}\n" for b in builtin))
    return root


VIRTIO_TREE = {
    "kernel/drivers/virtio/virtio_ring.ko": "",
    "kernel/drivers/virtio/virtio.ko": "virtio_ring",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko": "",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko": "",
    "kernel/drivers/virtio/virtio_pci.ko": "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
    "kernel/net/core/failover.ko": "",
    "kernel/drivers/net/net_failover.ko.xz": "failover",
    "kernel/drivers/net/virtio_net.ko": "virtio_ring,virtio,net_failover",
    "kernel/drivers/char/virtio_console.ko": "virtio,virtio_ring",
}


def test_resolve_virtio_load_order(tmp_path):
    root = make_tree(tmp_path, VIRTIO_TREE)
    order = resolve_modules(root, ["virtio_pci", "virtio_net"], "6.1.0-99-amd64")
    names = [m.name for m in order]
    assert names == ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio",
                     "virtio_pci", "failover", "net_failover", "virtio_net"]
    for index, module in enumerate(order):  # every dependency comes earlier
        assert set(module.depends) <= set(names[:index])
    assert order[6].path == root / "kernel/drivers/net/net_failover.ko.xz"


def test_builtin_modules_are_skipped(tmp_path):
    root = make_tree(tmp_path, VIRTIO_TREE, builtin=["kernel/drivers/virtio/virtio_ring.ko",
                                                      "kernel/drivers/virtio/virtio.ko"])
    assert read_builtin(root) == {"virtio_ring", "virtio"}
    names = [m.name for m in resolve_modules(root, ["virtio_net"])]
    assert names == ["failover", "net_failover", "virtio_net"]
    assert resolve_modules(root, ["virtio"]) == []


def test_wanted_name_with_dash_and_updates_override(tmp_path):
    root = make_tree(tmp_path, {"kernel/drivers/char/virtio-rng.ko": "",
                                "kernel/x/dup.ko": "", "updates/dup.ko": ""})
    assert [m.name for m in resolve_modules(root, ["virtio-rng"])] == ["virtio_rng"]
    assert resolve_modules(root, ["dup"])[0].path == root / "updates/dup.ko"


def test_missing_module_names_its_user(tmp_path):
    root = make_tree(tmp_path, {"kernel/a.ko": "ghost"})
    with pytest.raises(GuestBuildError, match="ghost .needed by a. not found"):
        resolve_modules(root, ["a"])
    with pytest.raises(GuestBuildError, match="kernel module nope not found"):
        resolve_modules(root, ["nope"])


def test_dependency_cycle_is_reported(tmp_path):
    root = make_tree(tmp_path, {"kernel/a.ko": "b", "kernel/b.ko": "c", "kernel/c.ko": "a"})
    with pytest.raises(GuestBuildError, match="cycle: a -> b -> c -> a"):
        resolve_modules(root, ["a"])


def test_vermagic_mismatch(tmp_path):
    root = make_tree(tmp_path, {"kernel/a.ko": "b", "kernel/b.ko": ("", "5.10.0-1-amd64 SMP ")})
    with pytest.raises(GuestBuildError, match="different kernels"):
        resolve_modules(root, ["a"])
    with pytest.raises(GuestBuildError, match="not 6.1.0-1-amd64"):
        resolve_modules(root, ["b"], "6.1.0-1-amd64")


def test_missing_modules_dir(tmp_path):
    with pytest.raises(GuestBuildError, match="does not exist"):
        resolve_modules(tmp_path / "nothing", ["a"])
    assert not os.path.exists(tmp_path / "nothing")
