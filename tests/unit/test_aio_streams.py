"""asyncio streams and servers on the stack (stack.aio) between two stacks on a LoopbackNicPair:
echo, many clients, backpressure, half-close, refused and reset connections, cancellation, servers."""
from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import socket
import warnings

import pytest

import stack
import stack.aio
from stack import Impairment, LoopbackNicPair, SocketOption, Stack
from stack.arp_cache import ArpCache
from stack.tcp import TcpConfig
from support.tcp_sockets import tcp_of

FAST = TcpConfig(initial_rto=0.2, syn_retries=2, time_wait=1.0)  # short timers for failure cases
BOUND = 60.0  # seconds: a bound on each test's asyncio program, not a measurement


@pytest.fixture
def stacks():
    pair = LoopbackNicPair()
    a = Stack(pair.a, "10.0.0.1/24", tcp_config=FAST, arp_cache=ArpCache(retry_interval=0.05)).start()
    b = Stack(pair.b, "10.0.0.2/24", tcp_config=FAST).start()
    yield a, b, pair
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
    for st in stacks[:2]:
        still_open = [s for s in st._sockets if not s.closed]  # (the stack's registry of open sockets)
        assert not still_open, still_open


def run(coro):
    """Run an asyncio program to its end, bounded: a hang fails the test with a clear message."""
    async def bounded():
        try:
            return await asyncio.wait_for(coro, BOUND)
        except TimeoutError:
            pytest.fail(f"the asyncio program did not finish in {BOUND:.0f} s")
    return asyncio.run(bounded())


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


# -- streams -------------------------------------------------------------------------------------

def test_echo_through_streams_with_asyncio_names_and_addresses(stacks, no_leaks):
    a, b, _ = stacks

    async def main():
        server = await stack.aio.start_server(echo, "10.0.0.2", 7, stack=b)
        async with server:
            assert server.is_serving() and server.get_loop() is asyncio.get_running_loop()
            assert server.sockets[0].getsockname() == ("10.0.0.2", 7)
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            assert isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter)
            assert writer.get_extra_info("peername") == ("10.0.0.2", 7)
            host, port = writer.get_extra_info("sockname")
            assert host == "10.0.0.1" and 32768 <= port <= 60999
            view = writer.get_extra_info("socket")
            assert view.getpeername() == ("10.0.0.2", 7) and view.family == socket.AF_INET
            assert view.type == socket.SOCK_STREAM and view.stack_socket.tcp_info().state.name == "ESTABLISHED"
            assert view.stack_socket.get_option(SocketOption.TCP_NO_DELAY) is True, "no Nagle, as asyncio"
            writer.write(b"hello, asyncio\n")
            await writer.drain()
            assert await reader.readline() == b"hello, asyncio\n"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_a_hundred_clients_at_once(stacks, no_leaks):
    a, b, _ = stacks
    peers = set()

    async def handle(reader, writer):
        peers.add(writer.get_extra_info("peername"))
        await echo(reader, writer)

    async def client(i: int) -> bool:
        message = f"client {i} ".encode() * (50 + i)
        reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
        writer.write(message)
        writer.write_eof()
        back = await reader.read()
        writer.close()
        await writer.wait_closed()
        return back == message

    async def main():
        async with await stack.aio.start_server(handle, None, 7, stack=b, backlog=128):
            results = await asyncio.gather(*(client(i) for i in range(100)))
        assert all(results) and len(results) == 100
        assert len(peers) == 100

    run(main())


def test_drain_waits_while_the_peer_does_not_read_and_a_large_transfer_arrives_whole(stacks, no_leaks):
    a, b, _ = stacks
    payload = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB
    reading = asyncio.Event
    digests = []

    async def main():
        may_read = reading()

        async def slow_reader(reader, writer):
            await may_read.wait()
            h, n = hashlib.sha256(), 0
            while data := await reader.read(100_000):
                h.update(data)
                n += len(data)
            digests.append((n, h.hexdigest()))
            writer.close()
            await writer.wait_closed()

        async with await stack.aio.start_server(slow_reader, None, 9, stack=b, limit=4096):
            reader, writer = await stack.aio.open_connection("10.0.0.2", 9, stack=a)
            writer.write(payload)
            low, high = writer.transport.get_write_buffer_limits()
            assert writer.transport.get_write_buffer_size() > high, "the stack cannot take 8 MiB at once"
            drain = asyncio.create_task(writer.drain())
            for _ in range(20):
                await asyncio.sleep(0)
            assert not drain.done(), "drain() must wait: the peer reads nothing, so the buffer cannot empty"
            may_read.set()
            await drain
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run(main())
    assert digests == [(len(payload), hashlib.sha256(payload).hexdigest())]


def test_write_eof_half_closes_and_the_peer_can_still_answer(stacks, no_leaks):
    a, b, _ = stacks

    async def count_then_answer(reader, writer):
        data = await reader.read()  # until the client's FIN
        assert reader.at_eof()
        writer.write(f"got {len(data)} bytes".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await stack.aio.start_server(count_then_answer, None, 7, stack=b):
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            assert writer.can_write_eof()
            writer.write(b"x" * 100_000)
            writer.write_eof()
            with pytest.raises(RuntimeError):
                writer.write(b"after eof")
            assert await reader.read() == b"got 100000 bytes"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_a_buffered_protocol_gets_the_bytes_through_its_buffers(stacks, no_leaks):
    a, b, _ = stacks

    class Collect(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)  # smaller than what arrives at once: several get_buffer calls
            self.got = bytearray()
            self.done = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def eof_received(self):
            self.done.set_result(bytes(self.got))

    async def send_and_close(reader, writer):
        writer.write(bytes(range(256)) * 100)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        async with await stack.aio.start_server(send_and_close, None, 7, stack=b):
            transport, protocol = await stack.aio.create_connection(Collect, "10.0.0.2", 7, stack=a)
            assert await protocol.done == bytes(range(256)) * 100
            transport.close()

    run(main())


# -- errors --------------------------------------------------------------------------------------

def test_nobody_listening_is_connection_refused_and_nobody_there_is_host_unreachable(stacks, no_leaks):
    a, _, _ = stacks

    async def main():
        with pytest.raises(ConnectionRefusedError, match=r"Connect call failed \('10.0.0.2', 7\)"):
            await stack.aio.open_connection("10.0.0.2", 7, stack=a)
        with pytest.raises(OSError) as exc:  # nobody has that address: ARP gets no answer
            await stack.aio.open_connection("10.0.0.77", 7, stack=a)
        assert exc.value.errno == errno.EHOSTUNREACH

    run(main())


def test_a_name_is_refused_as_asyncio_refuses_what_it_cannot_resolve(stacks, no_leaks):
    a, _, _ = stacks

    async def main():
        with pytest.raises(socket.gaierror, match="not an IPv4 address"):
            await stack.aio.open_connection("example.org", 80, stack=a)

    run(main())


def test_a_reset_reaches_the_reader_as_connection_reset_error(stacks, no_leaks):
    a, b, _ = stacks

    async def reset_at_once(reader, writer):
        writer.get_extra_info("socket").stack_socket.set_option(SocketOption.LINGER, 0)
        writer.transport.abort()  # LINGER 0: the close is a RST

    async def main():
        async with await stack.aio.start_server(reset_at_once, None, 7, stack=b):
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            with pytest.raises(ConnectionResetError):
                await reader.read(100)
            writer.close()
            with pytest.raises(ConnectionResetError):
                await writer.wait_closed()

    run(main())


def test_wait_for_and_cancel_end_a_connect_that_gets_no_answer_without_leaking(stacks, no_leaks):
    a, b, pair = stacks
    syns = []

    def black_hole(frame: bytes) -> bool:
        parsed = tcp_of(frame)
        if parsed is not None:
            syns.append(parsed[1])
        return parsed is not None

    pair.a.impairment = Impairment(loss=black_hole)  # ARP works, TCP is dropped

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stack.aio.open_connection("10.0.0.2", 7, stack=a), 0.1)
        task = asyncio.create_task(stack.aio.open_connection("10.0.0.2", 7, stack=a))
        while len(syns) < 2:  # the second attempt's SYN is out: it is waiting on the loop
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


# -- servers -------------------------------------------------------------------------------------

def test_serve_forever_until_cancelled_then_the_port_is_closed(stacks, no_leaks):
    a, b, _ = stacks

    async def main():
        server = await stack.aio.start_server(echo, None, 7, stack=b, start_serving=False)
        assert not server.is_serving()
        serving = asyncio.create_task(server.serve_forever())
        reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
        assert server.is_serving()
        writer.write(b"accepted?")  # (an answer: the server took the connection from its queue)
        assert await reader.readexactly(9) == b"accepted?"
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert not server.is_serving() and server.sockets == ()
        writer.write(b"still connected")  # close() leaves accepted connections alone
        assert await reader.readexactly(15) == b"still connected"
        writer.close()
        await writer.wait_closed()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await stack.aio.open_connection("10.0.0.2", 7, stack=a)

    run(main())


def test_wait_closed_waits_for_the_connections_and_close_clients_ends_them(stacks, no_leaks):
    a, b, _ = stacks

    async def main():
        server = await stack.aio.start_server(echo, None, 7, stack=b)
        reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        server.close()
        closed = asyncio.create_task(server.wait_closed())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not closed.done(), "a connection is still open"
        server.close_clients()
        await closed
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    run(main())


def test_the_default_stack_serves_when_no_stack_is_named(stacks, no_leaks):
    a, b, _ = stacks

    async def main():
        stack.set_default_stack(b)
        try:
            server = await stack.aio.start_server(echo, None, 7)
        finally:
            stack.set_default_stack(None)
        async with server:
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            writer.write(b"via the default stack")
            writer.write_eof()
            assert await reader.read() == b"via the default stack"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_without_a_default_stack_the_error_says_so():
    async def main():
        with pytest.raises(OSError, match="no default MultiOS stack"):
            await stack.aio.open_connection("10.0.0.2", 7)

    run(main())


def test_a_dead_stack_reaches_connections_servers_and_endpoints_as_enetdown():
    pair = LoopbackNicPair()

    class BrokenNic(type(pair.a)):
        broken = False

        def receive(self, max=64):
            if self.broken:
                raise RuntimeError("device fell off the bus")
            return super().receive(max)

    broken = BrokenNic(pair.a.mac)
    pair.b.peer, broken.peer = broken, pair.b
    a = Stack(broken, "10.0.0.1/24").start()
    b = Stack(pair.b, "10.0.0.2/24").start()
    reported: list[dict] = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        connection_ended = loop.create_future()
        endpoint_error = loop.create_future()

        async def handle(reader, writer):
            writer.write(await reader.readexactly(5))
            try:
                await reader.read()
            except OSError as exc:
                connection_ended.set_result(exc)
            writer.close()

        class Endpoint(asyncio.DatagramProtocol):
            def error_received(self, exc):
                endpoint_error.set_result(exc)

        server = await stack.aio.start_server(handle, None, 7, stack=a)
        endpoint, _ = await stack.aio.create_datagram_endpoint(Endpoint, local_addr=("0.0.0.0", 53), stack=a)
        reader, writer = await stack.aio.open_connection("10.0.0.1", 7, stack=b)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"  # (accepted and served)
        broken.broken = True
        knock, _ = await stack.aio.create_datagram_endpoint(asyncio.DatagramProtocol, stack=b)
        knock.sendto(b"wake up", ("10.0.0.1", 53))  # a's thread reads its NIC, which raises
        assert (await connection_ended).errno == errno.ENETDOWN
        assert (await endpoint_error).errno == errno.ENETDOWN
        while not reported:
            await asyncio.sleep(0.01)  # (bounded by run())
        assert reported[0]["message"] == "accept() failed on a stack listener"
        assert reported[0]["exception"].errno == errno.ENETDOWN and server.is_serving()
        for transport in (knock, endpoint, writer):
            transport.close()
        server.close()
        server.abort_clients()
        await server.wait_closed()

    try:
        run(main())
        assert isinstance(a.failure, RuntimeError)
        assert len(reported) == 1, reported
    finally:
        a.stop()
        b.stop()
        broken.close()
        pair.close()


def test_out_of_descriptors_drops_that_connection_and_accepting_rests_then_goes_on(stacks, no_leaks, monkeypatch):
    import stack.aio.server as server_module

    a, b, _ = stacks
    real = server_module.StackStreamTransport
    calls = []

    def transport_once_out_of_descriptors(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "StackStreamTransport", transport_once_out_of_descriptors)
    monkeypatch.setattr(server_module, "ACCEPT_RETRY_DELAY", 0.05)
    reported = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        async with await stack.aio.start_server(echo, None, 7, stack=b) as server:
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            writer.write(b"first")
            try:
                assert await reader.read() == b""  # the server closed it at once
            except ConnectionResetError:
                pass  # (or reset it: the data arrived before the close)
            writer.close()
            assert reported[0]["exception"].errno == errno.EMFILE and server.is_serving()
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            writer.write(b"second")
            assert await reader.readexactly(6) == b"second"
            writer.close()
            await writer.wait_closed()

    run(main())
    assert len(calls) == 2 and len(reported) == 1


def test_a_reset_while_the_write_buffer_is_full_fails_drain_with_connection_reset(stacks, no_leaks):
    a, b, _ = stacks
    reported = []

    async def reset_without_reading(reader, writer):
        await reader.readexactly(1)  # (the client's data is arriving)
        writer.get_extra_info("socket").stack_socket.set_option(SocketOption.LINGER, 0)
        writer.transport.abort()

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        async with await stack.aio.start_server(reset_without_reading, None, 7, stack=b):
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            writer.transport.pause_reading()  # so the RST is met by a send, with the buffer full
            writer.write(bytes(8 * 1024 * 1024))
            assert writer.transport.get_write_buffer_size() > 0
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await writer.drain()
                await reader.read()  # (if the buffer had emptied before the RST came)
            writer.close()
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await writer.wait_closed()

    run(main())
    assert reported == []


def test_write_buffer_limits_follow_asyncio_rules(stacks, no_leaks):
    a, b, _ = stacks

    async def main():
        async with await stack.aio.start_server(echo, None, 7, stack=b):
            reader, writer = await stack.aio.open_connection("10.0.0.2", 7, stack=a)
            transport = writer.transport
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)  # asyncio's defaults
            transport.set_write_buffer_limits(high=1000)
            assert transport.get_write_buffer_limits() == (250, 1000)
            transport.set_write_buffer_limits(low=100)
            assert transport.get_write_buffer_limits() == (100, 400)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=10, low=20)
            with pytest.raises(TypeError):
                writer.write("text")
            writer.close()
            await writer.wait_closed()

    run(main())
