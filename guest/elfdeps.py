"""Find the shared libraries a host program needs, the way ld.so would.

For each program: its PT_INTERP (the dynamic loader) and its DT_NEEDED
libraries, searched in DT_RPATH (only when there is no DT_RUNPATH), then
DT_RUNPATH, then the directories of /etc/ld.so.conf, then the loader's
built-in system directories; then the same for every library found, until
nothing new is needed. A candidate of the wrong ELF class or machine is
skipped, as ld.so does. Libraries loaded with dlopen() at run time are not
visible here.

All paths are paths on the host as the loader sees them (symlinks not
resolved): the image builder recreates those symlinks, so the guest's loader
finds each library under the same name.
"""

from __future__ import annotations

import glob
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from guest.errors import GuestBuildError

DEFAULT_PROGRAMS = ("iperf3", "socat")

#: Where glibc's loader looks when nothing else says where (Debian multiarch first).
SYSTEM_LIBRARY_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)

#: Where programs named without a directory are looked for.
PROGRAM_DIRS = (
    "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
)


@dataclass(frozen=True)
class ElfInfo:
    """What matters about one ELF file for finding its dependencies."""

    path: str
    elfclass: int
    machine: str
    interpreter: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]


@dataclass
class Closure:
    """Everything to copy so the programs run: host paths, as ld.so names them."""

    programs: list[str] = field(default_factory=list)
    interpreters: list[str] = field(default_factory=list)
    libraries: dict[str, str] = field(default_factory=dict)  # soname -> path

    def paths(self) -> list[str]:
        """Every file, programs first, without duplicates."""
        seen: dict[str, None] = {}
        for path in [*self.programs, *self.interpreters, *self.libraries.values()]:
            seen.setdefault(path)
        return list(seen)

    def library_dirs(self) -> list[str]:
        """The directories the libraries were found in, in first-use order."""
        dirs: dict[str, None] = {}
        for path in self.libraries.values():
            dirs.setdefault(posixpath.dirname(path))
        return list(dirs)


def _host(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def read_elf_info(path: str, root: str | Path = "/") -> ElfInfo:
    """Read class, machine, interpreter, DT_NEEDED, DT_RPATH and DT_RUNPATH."""
    host = _host(Path(root), path)
    try:
        with open(host, "rb") as stream:
            elf = ELFFile(stream)
            interpreter = None
            for segment in elf.iter_segments():
                if segment.header.p_type == "PT_INTERP":
                    interpreter = segment.get_interp_name()
            dynamic = next((s for s in elf.iter_sections() if isinstance(s, DynamicSection)), None)
            if dynamic is None:
                dynamic = next((s for s in elf.iter_segments() if s.header.p_type == "PT_DYNAMIC"), None)
            needed: list[str] = []
            rpath: list[str] = []
            runpath: list[str] = []
            if dynamic is not None:
                for tag in dynamic.iter_tags():
                    kind = tag.entry.d_tag
                    if kind == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif kind == "DT_RPATH":
                        rpath.extend(p for p in tag.rpath.split(":") if p)
                    elif kind == "DT_RUNPATH":
                        runpath.extend(p for p in tag.runpath.split(":") if p)
            return ElfInfo(path, elf.elfclass, elf["e_machine"], interpreter,
                           tuple(needed), tuple(rpath), tuple(runpath))
    except FileNotFoundError as exc:
        raise GuestBuildError(f"{path}: no such file") from exc
    except (ELFError, OSError) as exc:
        raise GuestBuildError(f"{path}: not a readable ELF file: {exc}") from exc
    except Exception as exc:  # pyelftools raises assorted errors on truncated files
        raise GuestBuildError(f"{path}: cannot parse ELF: {exc!r}") from exc


def find_program(name: str, root: str | Path = "/") -> str:
    """Host path of a program given by name ("socat") or path ("/usr/bin/socat")."""
    root = Path(root)
    if "/" in name:
        candidates = [posixpath.normpath(name if name.startswith("/") else os.path.abspath(name))]
    else:
        dirs = [d for d in os.environ.get("PATH", "").split(":") if d.startswith("/")] if root == Path("/") else []
        candidates = [posixpath.join(d, name) for d in dict.fromkeys([*dirs, *PROGRAM_DIRS])]
    for candidate in candidates:
        host = _host(root, candidate)
        if host.is_file() and os.access(host, os.X_OK):
            return candidate
    where = candidates[0] if "/" in name else "PATH and " + ":".join(PROGRAM_DIRS)
    raise GuestBuildError(f"program {name!r} not found (looked in {where}); install it on the host first")


def ld_so_conf_dirs(root: str | Path = "/", conf: str = "/etc/ld.so.conf") -> list[str]:
    """Library directories listed in ld.so.conf, following `include` globs."""
    root = Path(root)
    dirs: list[str] = []
    seen_files: set[str] = set()

    def read(path: str) -> None:
        if path in seen_files:
            return
        seen_files.add(path)
        try:
            text = _host(root, path).read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("include"):
                for pattern in line.split()[1:]:
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(path), pattern)
                    for match in sorted(glob.glob(str(_host(root, pattern)))):
                        read("/" + str(Path(match).relative_to(root)).lstrip("/"))
            elif line.startswith("hwcap"):
                continue
            elif line.startswith("/"):
                dirs.append(posixpath.normpath(line))
    read(conf)
    return list(dict.fromkeys(dirs))


def _expand(entry: str, origin_dir: str) -> str | None:
    """Expand $ORIGIN in an RPATH/RUNPATH entry; None for tokens we cannot know."""
    expanded = entry.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", origin_dir)
    if "$" in expanded:
        return None
    if not expanded.startswith("/"):
        return None  # relative entries depend on the current directory: ld.so's guess, not ours
    return posixpath.normpath(expanded)


def _compatible(candidate: str, want: ElfInfo, root: Path) -> bool:
    try:
        info = read_elf_info(candidate, root)
    except GuestBuildError:
        return False
    return info.elfclass == want.elfclass and info.machine == want.machine


def resolve_closure(programs: tuple[str, ...] | list[str] = DEFAULT_PROGRAMS,
                    extra_programs: tuple[str, ...] | list[str] = (),
                    root: str | Path = "/") -> Closure:
    """Programs, their loaders and every shared library they need, recursively.

    Raises GuestBuildError for a program not found, a file that is not ELF,
    or a library that is in none of the search directories.
    """
    root = Path(root)
    closure = Closure()
    conf_dirs = ld_so_conf_dirs(root)
    infos: dict[str, ElfInfo] = {}
    queue: list[tuple[ElfInfo, ElfInfo]] = []  # (object, the executable that loads it)

    for name in [*programs, *extra_programs]:
        path = find_program(name, root)
        if path in infos:
            continue
        info = read_elf_info(path, root)
        infos[path] = info
        closure.programs.append(path)
        if info.interpreter:
            if info.interpreter not in closure.interpreters:
                closure.interpreters.append(info.interpreter)
            if not _host(root, info.interpreter).exists():
                raise GuestBuildError(f"{path}: its loader {info.interpreter} does not exist")
        queue.append((info, info))

    while queue:
        obj, executable = queue.pop(0)
        for soname in obj.needed:
            if soname in closure.libraries:
                continue
            found = _search(soname, obj, executable, conf_dirs, root)
            if found is None:
                raise GuestBuildError(
                    f"library {soname} needed by {obj.path} not found (searched RPATH/RUNPATH, "
                    f"ld.so.conf and {':'.join(SYSTEM_LIBRARY_DIRS)})")
            closure.libraries[soname] = found
            if found not in infos:
                infos[found] = read_elf_info(found, root)
                queue.append((infos[found], executable))
    return closure


def _search(soname: str, obj: ElfInfo, executable: ElfInfo, conf_dirs: list[str], root: Path) -> str | None:
    if "/" in soname:
        return soname if _host(root, soname).is_file() else None
    dirs: list[str] = []
    if not obj.runpath:
        # DT_RPATH of the object, then of the executable, unless DT_RUNPATH is present.
        for holder in (obj, executable):
            if not holder.runpath:
                dirs += [d for d in (_expand(e, posixpath.dirname(holder.path)) for e in holder.rpath) if d]
    dirs += [d for d in (_expand(e, posixpath.dirname(obj.path)) for e in obj.runpath) if d]
    dirs += conf_dirs
    dirs += SYSTEM_LIBRARY_DIRS
    for directory in dict.fromkeys(dirs):
        candidate = posixpath.join(directory, soname)
        if _host(root, candidate).is_file() and _compatible(candidate, obj, root):
            return candidate
    return None
