"""guest.elfdeps: DT_NEEDED closure, search order, loader, errors."""

import os

import pytest

from guest.elfdeps import ld_so_conf_dirs, find_program, read_elf_info, resolve_closure
from guest.errors import GuestBuildError
from support.elf_writer import EM_386, dynamic_elf

LOADER = "/lib64/ld-linux-x86-64.so.2"


def put(root, path, data, mode=0o755):
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)
    return target


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    put(r, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", dynamic_elf())
    (r / "lib64").mkdir()
    os.symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", r / "lib64/ld-linux-x86-64.so.2")
    put(r, "/lib/x86_64-linux-gnu/libc.so.6", dynamic_elf(["ld-linux-x86-64.so.2"]))
    put(r, "/etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n")
    return r


def test_closure_follows_needed_recursively(root):
    put(root, "/usr/lib/x86_64-linux-gnu/libssl.so.3", dynamic_elf(["libcrypto.so.3", "libc.so.6"]))
    put(root, "/usr/lib/x86_64-linux-gnu/libcrypto.so.3", dynamic_elf(["libc.so.6"]))
    put(root, "/usr/bin/tool", dynamic_elf(["libssl.so.3", "libc.so.6"], interp=LOADER))
    closure = resolve_closure(["tool"], root=root)
    assert closure.programs == ["/usr/bin/tool"]
    assert closure.interpreters == [LOADER]
    assert closure.libraries == {
        "libssl.so.3": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
        "libcrypto.so.3": "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    }
    assert closure.paths()[:2] == ["/usr/bin/tool", LOADER]
    assert closure.library_dirs() == ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"]


def test_runpath_with_origin_and_extra_programs(root):
    put(root, "/opt/app/lib/libapp.so.1", dynamic_elf(["libc.so.6"]))
    put(root, "/opt/app/bin/app", dynamic_elf(["libapp.so.1"], runpath="$ORIGIN/../lib", interp=LOADER))
    put(root, "/usr/bin/other", dynamic_elf(["libc.so.6"], interp=LOADER))
    closure = resolve_closure(["other"], extra_programs=["/opt/app/bin/app"], root=root)
    assert closure.programs == ["/usr/bin/other", "/opt/app/bin/app"]
    assert closure.libraries["libapp.so.1"] == "/opt/app/lib/libapp.so.1"


def test_rpath_is_ignored_when_runpath_exists(root):
    put(root, "/rp/libx.so", dynamic_elf())
    put(root, "/run/libx.so", dynamic_elf())
    put(root, "/usr/bin/both", dynamic_elf(["libx.so"], rpath="/rp", runpath="/run"))
    put(root, "/usr/bin/rponly", dynamic_elf(["libx.so"], rpath="/rp"))
    assert resolve_closure(["both"], root=root).libraries["libx.so"] == "/run/libx.so"
    assert resolve_closure(["rponly"], root=root).libraries["libx.so"] == "/rp/libx.so"


def test_executable_rpath_applies_to_its_libraries(root):
    put(root, "/app/lib/libdeep.so", dynamic_elf())
    put(root, "/usr/lib/libmid.so", dynamic_elf(["libdeep.so"]))
    put(root, "/usr/bin/exe", dynamic_elf(["libmid.so"], rpath="/app/lib"))
    assert resolve_closure(["exe"], root=root).libraries["libdeep.so"] == "/app/lib/libdeep.so"


def test_ld_so_conf_dirs_and_wrong_class_is_skipped(root):
    put(root, "/etc/ld.so.conf.d/a.conf", b"# comment\n/first/lib  # trailing\n\n/second/lib\n")
    put(root, "/etc/ld.so.conf.d/b.conf", b"/first/lib\n")
    assert ld_so_conf_dirs(root) == ["/first/lib", "/second/lib"]
    put(root, "/first/lib/libq.so.1", dynamic_elf(elfclass=32, machine=EM_386))
    put(root, "/second/lib/libq.so.1", dynamic_elf())
    put(root, "/usr/bin/q", dynamic_elf(["libq.so.1"]))
    assert resolve_closure(["q"], root=root).libraries["libq.so.1"] == "/second/lib/libq.so.1"


def test_missing_library_names_who_needs_it(root):
    put(root, "/usr/bin/needy", dynamic_elf(["libmissing.so.9"], interp=LOADER))
    with pytest.raises(GuestBuildError, match="libmissing.so.9 needed by /usr/bin/needy not found"):
        resolve_closure(["needy"], root=root)


def test_missing_program_and_loader(root):
    with pytest.raises(GuestBuildError, match="program 'nosuchprog' not found"):
        resolve_closure(["nosuchprog"], root=root)
    with pytest.raises(GuestBuildError, match="not found"):
        find_program("/usr/bin/absent", root)
    put(root, "/usr/bin/noloader", dynamic_elf(interp="/lib/ld-gone.so"))
    with pytest.raises(GuestBuildError, match="loader /lib/ld-gone.so does not exist"):
        resolve_closure(["noloader"], root=root)


def test_non_elf_program_and_unexecutable(root):
    put(root, "/usr/bin/script", b"#!/bin/sh\necho hi\n")
    with pytest.raises(GuestBuildError, match="ELF"):
        resolve_closure(["script"], root=root)
    put(root, "/usr/bin/plain", dynamic_elf(), mode=0o644)
    with pytest.raises(GuestBuildError, match="not found"):
        find_program("plain", root)


def test_static_program_needs_nothing(root):
    put(root, "/usr/bin/static", dynamic_elf())
    closure = resolve_closure(["static"], root=root)
    assert closure.libraries == {} and closure.interpreters == []
    assert read_elf_info("/usr/bin/static", root).needed == ()


def test_host_iperf3_and_socat():
    """The real default programs on this host (installed by the Makefile)."""
    closure = resolve_closure()
    assert [os.path.basename(p) for p in closure.programs] == ["iperf3", "socat"]
    assert closure.interpreters == [LOADER]
    for soname in ("libc.so.6", "libiperf.so.0", "libssl.so.3", "libcrypto.so.3"):
        assert soname in closure.libraries
        assert os.path.exists(closure.libraries[soname])
