"""The socket layer's structure: one factory, only the stack's public interface (the import
loop it once had is test_import_layers's to catch)."""
import ast
import pathlib

import pytest

import stack
from stack import DatagramSocket, LoopbackNicPair, Socket, SocketType, Stack, StreamSocket

STACK_DIR = pathlib.Path(stack.__file__).parent
SOCKET_MODULES = ("socket_api", "datagram_socket", "stream_socket", "socket_host")


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module a file imports, lazy (inside functions) and TYPE_CHECKING ones included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_socket_modules_do_not_import_the_runtime():
    for name in SOCKET_MODULES:
        imported = imports_of(STACK_DIR / f"{name}.py")
        assert not {m for m in imported if m == "stack.runtime" or m.startswith("stack.runtime.")}, name


def test_sockets_use_only_the_stacks_public_interface():
    """No socket module reads a private attribute of its stack (``self._stack._x``,
    ``st._x``) or reaches the TCP engine as ``iface.tcp``."""
    for name in SOCKET_MODULES:
        for node in ast.walk(ast.parse((STACK_DIR / f"{name}.py").read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if owner_name in ("_stack", "st", "stack", "host"):
                assert not node.attr.startswith("_"), f"{name}: {owner_name}.{node.attr}"
            if owner_name == "iface":
                assert node.attr != "tcp", f"{name}: iface.tcp"


@pytest.fixture
def counting_stack():
    class CountingStack(Stack):
        made = 0

        def socket(self, type=None, protocol=None):
            CountingStack.made += 1
            return super().socket(type, protocol)

    nics = LoopbackNicPair()
    st = CountingStack(nics.a, "10.0.0.1/24").start()
    yield st
    st.stop()
    nics.close()


def test_socket_is_made_by_the_stacks_factory(counting_stack):
    st = counting_stack
    stream = Socket(SocketType.STREAM, stack=st)
    datagram = Socket(stack=st)
    raw_refused = None
    try:
        Socket(SocketType.RAW, stack=st)
    except PermissionError as exc:
        raw_refused = exc
    assert type(stream) is StreamSocket and type(datagram) is DatagramSocket
    assert isinstance(stream, Socket) and isinstance(datagram, Socket)
    assert raw_refused is not None, "the factory's checks apply to Socket(...) too"
    assert type(st).made == 3
    stack.set_default_stack(st)
    try:
        with Socket(SocketType.STREAM) as default:
            assert type(default) is StreamSocket and type(st).made == 4
    finally:
        stack.set_default_stack(None)
    stream.close()
    datagram.close()
    with pytest.raises(TypeError):
        Socket("stream", stack=st)
