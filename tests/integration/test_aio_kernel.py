"""asyncio on the stack (stack.aio) against asyncio on the Linux kernel, both ways, TCP and UDP.

One lab for the module (support.tcplab.StackLab): a switch on a thread of this
process with the MultiOS stack on a vhost-user port (10.0.0.9) and a TAP port
into a namespace this module creates (the kernel at 10.0.0.254). The kernel's
side is plain asyncio in a python run in the namespace; the stack's side is
the same program with its streams from stack.aio, on this process's loop,
which also runs the kernel's program (asyncio's subprocesses), so both sides
make progress together.
"""
from __future__ import annotations

import asyncio
import hashlib
import sys

import pytest

from support.tcplab import HOST_IP, STACK_IP, StackLab, assert_stack_healthy

pytestmark = pytest.mark.integration

BOUND = 90.0  # seconds: a bound on each test's asyncio program, not a measurement
CLIENTS = 10
PER_CLIENT = 256 * 1024  # bytes each client sends and gets back


def payload(i: int, size: int) -> bytes:
    return hashlib.sha256(b"client %d" % i).digest() * (size // 32)


# The kernel's programs: plain asyncio. Each prints one line when ready (servers) and one at the end.
KERNEL_ECHO_CLIENTS = """
import asyncio, hashlib, sys
ip, port, clients, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def one(i):
    data = hashlib.sha256(b"client %d" % i).digest() * (size // 32)
    reader, writer = await asyncio.open_connection(ip, port)
    async def send():
        writer.write(data); await writer.drain(); writer.write_eof()
    sending = asyncio.create_task(send())
    back = await reader.read()
    await sending
    writer.close(); await writer.wait_closed()
    return back == data
async def main():
    ok = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(clients))), 60)
    print(sum(ok), "of", clients, "echoed whole", flush=True)
asyncio.run(main())
"""

KERNEL_ECHO_SERVER = """
import asyncio, sys
ip, port, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    done, echoed = asyncio.Event(), []
    async def echo(reader, writer):
        n = 0
        while data := await reader.read(65536):
            writer.write(data); await writer.drain(); n += len(data)
        writer.close(); await writer.wait_closed()
        echoed.append(n)
        if len(echoed) == connections:
            done.set()
    async with await asyncio.start_server(echo, ip, port):
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 60)
    print(sum(echoed), "bytes echoed on", len(echoed), "connections", flush=True)
asyncio.run(main())
"""

KERNEL_UDP_ECHO = """
import asyncio, sys
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class Echo(asyncio.DatagramProtocol):
    def __init__(self): self.seen = set(); self.done = asyncio.get_running_loop().create_future()
    def connection_made(self, transport): self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr); self.seen.add(data)
        if len(self.seen) == count and not self.done.done(): self.done.set_result(None)
async def main():
    transport, echo = await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=(ip, port))
    print("ready", flush=True)
    await asyncio.wait_for(echo.done, 60)
    await asyncio.sleep(1)  # (answers to retries of the last datagrams)
    transport.close()
    print(len(echo.seen), "datagrams echoed", flush=True)
asyncio.run(main())
"""

KERNEL_UDP_ASK = """
import asyncio, sys
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class Ask(asyncio.DatagramProtocol):
    def __init__(self): self.answers = asyncio.Queue()
    def datagram_received(self, data, addr): self.answers.put_nowait((data, addr))
async def ask(transport, proto, data):
    for attempt in range(5):  # UDP: a lost datagram is asked again
        transport.sendto(data)
        try:
            while True:
                got, addr = await asyncio.wait_for(proto.answers.get(), 1.0)
                if got == data.upper():
                    return addr
        except TimeoutError:
            continue
    raise SystemExit(f"no answer to {data!r}")
async def main():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Ask, remote_addr=(ip, port))
    addrs = {await ask(transport, proto, b"datagram %d" % i) for i in range(count)}
    transport.close()
    print(count, "answered from", *addrs, flush=True)
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from nicdev.net.netns import temporary_netns

    with temporary_netns("mnet-aio") as netns:
        lab = StackLab(tmp_path_factory.mktemp("aio"), netns)
        try:
            yield lab
        finally:
            lab.close()


def run(coro):
    async def bounded():
        try:
            return await asyncio.wait_for(coro, BOUND)
        except TimeoutError:
            pytest.fail(f"the asyncio program did not finish in {BOUND:.0f} s")
    return asyncio.run(bounded())


class Kernel:
    """A python program in the namespace, run from the loop as an asyncio subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, netns: str, code: str, *args) -> "Kernel":
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, sys.executable, "-c", code, *map(str, args),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def line(self) -> str:
        text = (await self.proc.stdout.readline()).decode().strip()
        if not text:
            await self.proc.wait()
            pytest.fail(f"the kernel's program ended without its line: {(await self.proc.stderr.read()).decode()}")
        return text

    async def finish(self) -> str:
        """Its last line, once it ended well."""
        text = await self.line()
        err = (await self.proc.stderr.read()).decode()
        assert await self.proc.wait() == 0, err
        return text

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def stack_echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_kernel_asyncio_clients_against_a_stack_aio_echo_server(lab):
    import stack.aio

    peers = set()

    async def handle(reader, writer):
        peers.add(writer.get_extra_info("peername")[0])
        await stack_echo(reader, writer)

    async def main():
        async with await stack.aio.start_server(handle, STACK_IP, 7007, stack=lab.stack):
            kernel = await Kernel.start(lab.netns, KERNEL_ECHO_CLIENTS, STACK_IP, 7007, CLIENTS, PER_CLIENT)
            try:
                return await kernel.finish()
            finally:
                kernel.kill()

    assert run(main()) == f"{CLIENTS} of {CLIENTS} echoed whole"
    assert peers == {HOST_IP}
    assert_stack_healthy(lab.stack)


def test_stack_aio_clients_against_a_kernel_asyncio_echo_server(lab):
    import stack.aio

    async def client(i: int) -> bool:
        data = payload(i, PER_CLIENT)
        reader, writer = await stack.aio.open_connection(HOST_IP, 7008, stack=lab.stack)
        assert writer.get_extra_info("peername") == (HOST_IP, 7008)

        async def send():
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        sending = asyncio.create_task(send())
        back = await reader.read()
        await sending
        writer.close()
        await writer.wait_closed()
        return back == data

    async def main():
        kernel = await Kernel.start(lab.netns, KERNEL_ECHO_SERVER, HOST_IP, 7008, CLIENTS)
        try:
            assert await kernel.line() == "ready"
            assert all(await asyncio.gather(*(client(i) for i in range(CLIENTS))))
            return await kernel.finish()
        finally:
            kernel.kill()

    assert run(main()) == f"{CLIENTS * PER_CLIENT} bytes echoed on {CLIENTS} connections"
    assert_stack_healthy(lab.stack)


def test_stack_aio_refused_by_the_kernel_is_connection_refused(lab):
    import stack.aio

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await stack.aio.open_connection(HOST_IP, 7009, stack=lab.stack)

    run(main())


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


def test_udp_kernel_asyncio_asks_a_stack_aio_datagram_endpoint(lab):
    import stack.aio

    async def main():
        transport, _ = await stack.aio.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 5300),
                                                                stack=lab.stack)
        try:
            kernel = await Kernel.start(lab.netns, KERNEL_UDP_ASK, STACK_IP, 5300, 100)
            try:
                return await kernel.finish()
            finally:
                kernel.kill()
        finally:
            transport.close()

    assert run(main()) == f"100 answered from {(STACK_IP, 5300)}"
    assert_stack_healthy(lab.stack)


def test_udp_stack_aio_asks_a_kernel_asyncio_datagram_endpoint(lab):
    import stack.aio

    class Ask(asyncio.DatagramProtocol):
        def __init__(self):
            self.answers: asyncio.Queue = asyncio.Queue()

        def datagram_received(self, data, addr):
            self.answers.put_nowait((data, addr))

    async def ask(transport, proto, data: bytes) -> tuple[str, int]:
        for _ in range(5):  # UDP: a lost datagram is asked again
            transport.sendto(data)
            try:
                while True:
                    got, addr = await asyncio.wait_for(proto.answers.get(), 1.0)
                    if got == data.upper():
                        return addr
            except TimeoutError:
                continue
        pytest.fail(f"the kernel never answered {data!r}")

    async def main():
        kernel = await Kernel.start(lab.netns, KERNEL_UDP_ECHO, HOST_IP, 5301, 100)
        try:
            assert await kernel.line() == "ready"
            transport, proto = await stack.aio.create_datagram_endpoint(Ask, remote_addr=(HOST_IP, 5301),
                                                                        stack=lab.stack)
            try:
                addrs = {await ask(transport, proto, b"datagram %d" % i) for i in range(100)}
            finally:
                transport.close()
            assert addrs == {(HOST_IP, 5301)}
            return await kernel.finish()
        finally:
            kernel.kill()

    assert run(main()) == "100 datagrams echoed"
    assert_stack_healthy(lab.stack)
