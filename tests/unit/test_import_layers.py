"""The house, floor by floor: every module's imports against the table of
allowed directions that docs/architecture.md shows.

Imports are read with ast, so lazy imports inside functions and imports under
``if TYPE_CHECKING:`` count too (an annotation from a floor above is still an
arrow running the wrong way), and relative imports are resolved. The small
cases at the bottom show that each shape of violation the layering issue
found would fail this test.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("nicdev", "stack", "guest", "qemu", "mnet", "scripts", "examples")

# The stack's protocol floor: sans-IO machines and their small helpers; they
# read and write wire formats and know nothing of NICs, threads or sockets.
PROTOCOLS = ("stack.wire", "stack.tcp", "stack.arp_cache", "stack.ip_fragments", "stack.udp",
             "stack.raw", "stack.routes", "stack.counters", "stack.ratelimit", "stack.sockstate", "stack.dns")
# Sockets sit on the interface (and its protocol machines) and a clock; the
# runtime, which owns the thread and the factory `Stack.socket()`, sits on them.
SOCKETS = ("stack.socket_api", "stack.socket_host", "stack.datagram_socket", "stack.stream_socket",
           "stack.readyfd")
BELOW_SOCKETS = PROTOCOLS + ("stack.iface", "stack.clock")

# module prefix -> the prefixes it may import (the longest matching prefix wins).
RULES: dict[str, tuple[str, ...]] = {
    "nicdev": ("nicdev",),
    "nicdev.virtio": ("nicdev.virtio",),
    "nicdev.vhost_user": ("nicdev.virtio", "nicdev.vhost_user"),
    "nicdev.net": ("nicdev.virtio", "nicdev.vhost_user", "nicdev.net"),
    # The one Internet checksum lives on the ground floor; the wire formats
    # use it (the device floor cannot import the stack, so it cannot be the
    # other way round).
    "stack.wire": ("stack.wire", "nicdev.virtio.checksum"),
    **{p: PROTOCOLS for p in PROTOCOLS if p != "stack.wire"},
    "stack.drivers": ("stack.drivers", "stack.wire", "nicdev.virtio", "nicdev.vhost_user"),
    "stack.iface": PROTOCOLS + ("stack.drivers", "stack.iface"),
    "stack.clock": ("stack.clock",),
    **{p: BELOW_SOCKETS + SOCKETS for p in SOCKETS},
    # TLS wraps STREAM sockets: it sees only the socket API, never the runtime.
    "stack.tls": ("stack.tls",) + SOCKETS,
    # asyncio's transports over the stack's sockets: the socket API only, never the runtime.
    "stack.aio": ("stack.aio",) + SOCKETS,
    # The DNS client runs the resolver's sans-IO machine over the stack's sockets.
    "stack.dns.client": BELOW_SOCKETS + SOCKETS,
    # The connection pool opens and checks STREAM sockets; it sees the socket API and TCP's states.
    "stack.pool": ("stack.pool", "stack.tcp") + SOCKETS,
    "stack.caller_drive": ("stack.caller_drive",),  # descriptors and a condition: no project imports
    # A monitor's view of an interface: read only, plain data out.
    "stack.snapshot": BELOW_SOCKETS,
    "stack.runtime": BELOW_SOCKETS + SOCKETS + ("stack.drivers", "stack.caller_drive", "stack.snapshot",
                                                "stack.runtime"),
    "stack": ("stack",),            # the package facade and stack.testing: the whole stack
    "guest": ("guest",),
    "qemu": ("qemu", "guest"),
    "mnet": ("nicdev", "stack", "guest", "qemu", "mnet"),
    "scripts": ("nicdev", "stack", "guest", "qemu", "scripts"),
    # The socket guide's example programs: the stack's public API only (its NIC drivers included).
    "examples": ("stack",),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_sources(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    """module name -> (source, is_package) for every module of the project."""
    found = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else ():
            found[module_name(path, root)] = (path.read_text(), path.name == "__init__.py")
    return found


def imports_of(name: str, source: str, is_package: bool, modules: set[str]) -> list[tuple[str, int]]:
    """(imported project module, line) for one module."""
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _project_module(target, modules)
            if resolved:
                found.add((resolved, node.lineno))
    return sorted(found)


def _project_module(target: str, modules: set[str]) -> str | None:
    """The project module an import names, or None for anything else (the
    stdlib, PyPI packages, and qemu.qmp, which shares our namespace package)."""
    probe = target
    while probe:
        if probe in modules:
            return probe
        probe = probe.rpartition(".")[0]
    return None


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_for(name: str) -> tuple[str, tuple[str, ...]] | None:
    matches = [p for p in RULES if _within(name, p)]
    if not matches:
        return None
    best = max(matches, key=len)
    return best, RULES[best]


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    modules = set(sources)
    found = []
    for name, (source, is_package) in sorted(sources.items()):
        rule = rule_for(name)
        if rule is None:
            found.append(f"{name}: no rule in the table")
            continue
        floor, allowed = rule
        for target, line in imports_of(name, source, is_package, modules):
            if not any(_within(target, a) for a in allowed):
                found.append(f"{name}:{line} imports {target} (floor {floor})")
    return found


def cycles(sources: dict[str, tuple[str, bool]]) -> list[list[str]]:
    """Strongly connected groups of modules that import each other (Tarjan)."""
    modules = set(sources)
    graph = {n: sorted({t for t, _ in imports_of(n, s, p, modules) if t != n})
             for n, (s, p) in sources.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


# -- the project itself ------------------------------------------------------

def test_every_import_runs_down_the_house():
    sources = project_sources()
    assert "nicdev.virtio.ring" in sources and "stack.wire" in sources and "mnet" in sources
    assert violations(sources) == []


def test_no_import_cycles():
    assert cycles(project_sources()) == []


def test_nothing_but_tests_imports_the_application():
    sources = project_sources()
    importers = sorted(n for n, (s, p) in sources.items() if not _within(n, "mnet")
                       for t, _ in imports_of(n, s, p, set(sources)) if _within(t, "mnet"))
    assert importers == []


def test_qemu_qmp_imports_beside_our_qemu_modules():
    # Our qemu/ is a PEP 420 namespace package shared with the installed
    # qemu.qmp: an __init__.py would hide qemu.qmp. A fresh interpreter, so no
    # earlier import of this test session helps.
    import subprocess
    import sys
    assert not (ROOT / "qemu" / "__init__.py").exists()
    code = ("import qemu.qmp, qemu.cmdline, qemu.launcher, qemu.control, qemu.errors;"
            "from qemu.qmp import QMPClient; print(len(qemu.__path__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 2      # site-packages/qemu and our qemu/


def test_docs_show_the_same_table():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for floor in RULES:
        assert f"`{floor}`" in text, f"docs/architecture.md does not name the floor {floor}"


# -- each shape of violation the layering issue found fails ------------------

def _tree(**modules: str) -> dict[str, tuple[str, bool]]:
    """Module sources by dotted name; a name ending in __init__ is a package."""
    tree = {}
    for key, source in modules.items():
        name = key.replace("__", ".").removesuffix(".init")
        tree[name] = (source, key.endswith("__init"))
    for name in list(tree):
        parent = name.rpartition(".")[0]
        while parent and parent not in tree:
            tree[parent] = ("", True)
            parent = parent.rpartition(".")[0]
    return tree


def test_device_library_importing_the_stack_or_qemu_fails():
    tree = _tree(nicdev__cli__main="import stack.runtime\n",
                 nicdev__testing__pytest_plugin="from qemu.vm import VirtualMachine\n",
                 stack__runtime="", qemu__vm="")
    assert [v.split(" (")[0] for v in violations(tree)] == [
        "nicdev.cli.main:1 imports stack.runtime",
        "nicdev.testing.pytest_plugin:1 imports qemu.vm",
    ]


def test_stack_reaching_the_device_floor_above_the_driver_fails():
    tree = _tree(stack__nic="from nicdev.net.offload import FrameMeta\n",
                 stack__drivers__virtio_net="from nicdev.net import offload\n",
                 stack__drivers__virtio_ok="from nicdev.virtio.ring import Ring\n",
                 nicdev__net__offload="", nicdev__virtio__ring="")
    assert [v.split(" (")[0] for v in violations(tree)] == [
        "stack.drivers.virtio_net:1 imports nicdev.net.offload",
        "stack.nic:1 imports nicdev.net.offload",
    ]


def test_protocol_machine_importing_the_nic_layer_fails():
    tree = _tree(stack__tcp__glue="def f():\n    from stack.nic import TxMeta\n",
                 stack__nic="", stack__wire__init="")
    assert [v.split(" (")[0] for v in violations(tree)] == ["stack.tcp.glue:2 imports stack.nic"]


def test_wire_formats_import_only_themselves_and_the_checksum():
    tree = _tree(stack__wire__ipv4="from .checksum import x\nfrom nicdev.virtio.checksum import y\n",
                 stack__wire__checksum="", stack__wire__bad="from stack.iface import Interface\n",
                 stack__iface="", nicdev__virtio__checksum="")
    assert [v.split(" (")[0] for v in violations(tree)] == ["stack.wire.bad:1 imports stack.iface"]


def test_relative_and_lazy_imports_are_resolved():
    tree = _tree(nicdev__virtio__ring="def f():\n    from ..net import switch\n", nicdev__net__switch="")
    assert [v.split(" (")[0] for v in violations(tree)] == ["nicdev.virtio.ring:2 imports nicdev.net.switch"]


def test_guest_qemu_and_the_application():
    tree = _tree(guest__image="import qemu.cmdline\n", qemu__cmdline="import qemu.qmp\nfrom guest import image\n",
                 stack__iface="import mnet.cli\n", mnet__cli="import nicdev, stack, guest, qemu\n", nicdev__init="")
    assert [v.split(" (")[0] for v in violations(tree)] == [
        "guest.image:1 imports qemu.cmdline",
        "stack.iface:1 imports mnet.cli",
    ]


def test_the_socket_runtime_import_loop_is_a_cycle():
    tree = _tree(stack__runtime="from stack.socket_api import Socket\n",
                 stack__socket_api="def f():\n    from stack.stream_socket import StreamSocket\n",
                 stack__stream_socket="from stack import runtime\n",
                 stack__udp="import stack.wire\n", stack__wire__init="")
    assert cycles(tree) == [["stack.runtime", "stack.socket_api", "stack.stream_socket"]]
    tree["stack.socket_api"] = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import stack.stream_socket\n", False)
    assert cycles(tree) == [["stack.runtime", "stack.socket_api", "stack.stream_socket"]], "an annotation loop is a loop"


def test_a_module_outside_the_table_is_reported():
    assert violations(_tree(stack2__x="")) == ["stack2: no rule in the table", "stack2.x: no rule in the table"]


def test_the_examples_are_checked_and_see_only_the_stack():
    assert "examples.echo_client" in project_sources()
    tree = _tree(examples__ok="from stack.drivers import VirtioNetNic\n", stack__drivers__init="",
                 examples__bad="from nicdev.net.switch import Switch\nimport mnet.cli\n",
                 nicdev__net__switch="", mnet__cli="")
    assert sorted(v.split(" (")[0] for v in violations(tree) if v.startswith("examples")) == [
        "examples.bad:1 imports nicdev.net.switch", "examples.bad:2 imports mnet.cli"]
