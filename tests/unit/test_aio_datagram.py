"""asyncio datagram endpoints on the stack (stack.aio.create_datagram_endpoint) between two
stacks on a LoopbackNicPair: echo both ways, connected endpoints, ICMP errors, closing."""
from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

import stack
import stack.aio
from stack import LoopbackNicPair, Stack
from stack.arp_cache import ArpCache

BOUND = 60.0  # seconds: a bound on each test's asyncio program, not a measurement


@pytest.fixture
def stacks():
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24", arp_cache=ArpCache(retry_interval=0.05)).start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    yield a, b
    a.stop()
    b.stop()
    pair.close()


@pytest.fixture
def no_leaks(stacks):
    """Fails the test if a stack socket is left open or a ResourceWarning is raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, [str(w.message) for w in leaked]
    for st in stacks:
        still_open = [s for s in st._sockets if not s.closed]  # (the stack's registry of open sockets)
        assert not still_open, still_open


def run(coro):
    async def bounded():
        try:
            return await asyncio.wait_for(coro, BOUND)
        except TimeoutError:
            pytest.fail(f"the asyncio program did not finish in {BOUND:.0f} s")
    return asyncio.run(bounded())


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


class Client(asyncio.DatagramProtocol):
    """Collects what arrives; ``lost`` is set by connection_lost."""

    def __init__(self):
        self.received: asyncio.Queue = asyncio.Queue()
        self.errors: asyncio.Queue = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_echo_between_a_connected_client_and_a_server_endpoint(stacks, no_leaks):
    a, b = stacks

    async def main():
        server, _ = await stack.aio.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 5353), stack=b)
        client, proto = await stack.aio.create_datagram_endpoint(Client, remote_addr=("10.0.0.2", 5353), stack=a)
        assert isinstance(client, asyncio.DatagramTransport)
        assert client.get_extra_info("peername") == ("10.0.0.2", 5353)
        host, port = client.get_extra_info("sockname")
        assert host == "10.0.0.1" and port > 0
        assert server.get_extra_info("sockname") == ("0.0.0.0", 5353) and server.get_extra_info("peername") is None
        assert client.get_extra_info("socket").type == socket.SOCK_DGRAM
        for i in range(50):
            client.sendto(f"query {i}".encode())
            assert await proto.received.get() == (f"QUERY {i}".encode(), ("10.0.0.2", 5353))
        with pytest.raises(ValueError):
            client.sendto(b"elsewhere", ("10.0.0.2", 9))
        assert client.get_write_buffer_size() == 0
        client.close()
        assert client.is_closing()
        assert await proto.lost is None
        server.close()

    run(main())


def test_an_unconnected_endpoint_sends_to_and_hears_from_anyone(stacks, no_leaks):
    a, b = stacks

    async def main():
        server, _ = await stack.aio.create_datagram_endpoint(Echo, local_addr=("10.0.0.2", 7), stack=b)
        client, proto = await stack.aio.create_datagram_endpoint(Client, local_addr=("0.0.0.0", 4000), stack=a)
        client.sendto(b"first", ("10.0.0.2", 7))  # (ARP resolves on the first: UDP waiting for it may drop)
        assert await proto.received.get() == (b"FIRST", ("10.0.0.2", 7))
        burst = [f"datagram {i}".encode() for i in range(50)]
        for data in burst:
            client.sendto(data, ("10.0.0.2", 7))
        echoed = [await proto.received.get() for _ in burst]
        assert echoed == [(data.upper(), ("10.0.0.2", 7)) for data in burst]
        client.close()
        server.close()
        await proto.lost

    run(main())


def test_a_closed_port_comes_back_to_error_received_as_connection_refused(stacks, no_leaks):
    a, _ = stacks

    async def main():
        client, proto = await stack.aio.create_datagram_endpoint(Client, remote_addr=("10.0.0.2", 9), stack=a)
        client.sendto(b"anyone?")
        exc = await proto.errors.get()  # ICMP port unreachable, on a connected endpoint
        assert isinstance(exc, ConnectionRefusedError)
        client.close()
        await proto.lost

    run(main())


def test_a_bad_local_address_fails_the_call_and_leaves_nothing_open(stacks, no_leaks):
    a, b = stacks

    async def main():
        server, _ = await stack.aio.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 53), stack=b)
        with pytest.raises(OSError) as exc:
            await stack.aio.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 53), stack=b)
        assert exc.value.errno == 98  # EADDRINUSE
        with pytest.raises(TypeError):
            await stack.aio.create_datagram_endpoint(Echo, local_addr="0.0.0.0:53", stack=a)
        server.close()
        await asyncio.sleep(0)

    run(main())
